"""Compose the training config in Python, as the `dltrain` command would (for tests and notebooks)."""

from __future__ import annotations

import weakref

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dltrain.paths import config_dir
from dltrain.config.resume import register_resolvers


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The composed config for these command-line overrides, e.g. ["model=mlp", "optimizer.lr=0.01"]."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    _GIVEN[id(cfg)] = list(overrides or [])
    weakref.finalize(cfg, _GIVEN.pop, id(cfg), None)
    return cfg


# The overrides each config of load_config was composed with, by the config's identity while it lives: what the
# command line is to a run of the command (model=auto composes them again with the model it chooses).
_GIVEN: dict[int, list[str]] = {}


def given_overrides(cfg: DictConfig) -> list[str] | None:
    """The overrides load_config composed `cfg` with (None: not a config of load_config)."""
    return _GIVEN.get(id(cfg))
