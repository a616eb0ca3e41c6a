"""The logic of the command-line tools; ``tools/*.py`` are thin entry points."""
