"""Step 4: read what the harness wrote — records, runs on disk, tidy frames, the verdict rule."""
