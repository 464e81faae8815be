"""dltrain: config-driven training of deep-learning models with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
