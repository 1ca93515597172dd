"""The matrix the container tests run: current TF on the locally built Debian base image.

A plain module (not a pytest plugin) so tests can import it. The image fixture takes its
environment from the planner with this matrix, so `matrix run` with it finds the very image the
fixture built (same content, same tag) and builds nothing.
"""

BASE_IMAGE = "tf-load-matrix/base:bookworm"

MATRIX_YAML = f"""
tf: ["2.21"]
python: ["3.11"]
base_images:
  "3.11": {BASE_IMAGE}
  "3.8": python:3.8-slim
"""
