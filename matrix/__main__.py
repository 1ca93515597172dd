"""`python -m matrix` does what the `matrix` console script does."""

from matrix.cli import main

main()
