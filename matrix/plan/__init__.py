"""Step 1 of a run: what to measure — the matrix file, compatibility rules, environments."""
