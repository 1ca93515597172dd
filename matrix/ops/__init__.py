"""Keeping it going: nightly schedules, pruning old runs, checking what a host can do."""
