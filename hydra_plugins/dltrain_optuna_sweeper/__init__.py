"""dltrain's Optuna sweeper, a Hydra plugin (Hydra loads sweepers only from the hydra_plugins package)."""
