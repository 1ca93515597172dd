"""In-environment measurement code of tf-load-matrix.

It is copied into every image, so it needs nothing but the standard library, numpy and
TensorFlow/Keras, and importing this package imports none of those: a trial process must be able
to start its clock before TensorFlow is imported.
"""

__version__ = "0.1.0"

# The oldest Python the harness runs on: it uses the walrus operator, positional-only parameters,
# `subprocess.run(capture_output=...)` and dataclasses. The planner skips cells below it, and
# tests/unit/test_compat.py parses every module here with this grammar.
REQUIRES_PYTHON = "3.8"
