"""One training run: the Lightning module and its parts, the trainer, the checks before a run, the run itself."""
