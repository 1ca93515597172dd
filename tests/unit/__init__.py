"""Fast tests: no Docker, no TensorFlow, no environment builds (seconds in all)."""
