"""Step 5: tell it — the end-of-run summary, the HTML report, compare and history."""
