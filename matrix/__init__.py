"""tf-load-matrix orchestrator: plan a matrix, run the harness, read its records, summarize.

Kept empty on purpose: `matrix --help` must start fast, so nothing heavy (pandas, TensorFlow)
is imported until a command needs it.
"""
