"""Sweeps: the summary of a multirun's jobs, and Optuna hyperparameter search."""
