"""Step 2: make each environment exist — its Dockerfile and image, or its virtual environment."""

TAIL_LINES = 3  # output lines of a failed build or install step quoted in its reason
