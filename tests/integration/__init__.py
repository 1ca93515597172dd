"""End-to-end tests on real parts: TensorFlow, the Docker engine, venvs, Chromium."""
