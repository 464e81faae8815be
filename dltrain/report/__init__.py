"""What a run shows: the terminal, the progress bar, plots, and tables of predictions."""
