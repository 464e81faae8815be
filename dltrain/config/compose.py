"""Compose the training config in Python, as the `dltrain` command would (for tests and notebooks)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dltrain.paths import config_dir
from dltrain.config.resume import register_resolvers


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The composed config for these command-line overrides, e.g. ["model=mlp", "optimizer.lr=0.01"]."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))
