"""Step 3: run the harness in each environment on a backend, one writer per results folder."""
