"""Type and range checks of the composed config, run before any data is loaded or model built.

Hydra already refuses unknown groups, options and keys; OmegaConf has no ranges, so they are checked here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.errors import ConfigError
from dltrain.models import ACTIVATION_NAMES

_MISSING = object()


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _integer(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _sizes(x: Any) -> bool:
    return isinstance(x, list) and all(_integer(v) and v > 0 for v in x)


PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true", "32", "16", "bf16", "64")

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# key -> (test, what a right value looks like)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "mode": (lambda v: v in ("min", "max"), "min or max"),
    "compile.enabled": (lambda v: isinstance(v, bool), "true or false"),
    "compile.backend": (lambda v: isinstance(v, str) and v != "", "a torch.compile backend, e.g. inductor"),
    "compile.mode": (lambda v: v in COMPILE_MODES, "null | " + " | ".join(COMPILE_MODES[1:])),
    "regularization.l1": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "optimizer.momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "model.dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "model.activation": (lambda v: v in ACTIVATION_NAMES, " | ".join(ACTIVATION_NAMES)),
    "model.hidden_sizes": (_sizes, "a list of positive integers, e.g. [128,64] (or [] for none)"),
    "model.head_sizes": (_sizes, "a list of positive integers, e.g. [32] (or [] for none)"),
    "model.channels": (lambda v: _sizes(v) and len(v) > 0, "a non-empty list of positive integers, e.g. [32,64]"),
    "model.kernel_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "model.pool_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "model.padding": (lambda v: v in ("same", "valid"), "same or valid"),
    "model.hidden_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "model.num_layers": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "data.batch_size": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "data.val_fraction": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.test_fraction": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.num_workers": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "data.pin_memory": (lambda v: isinstance(v, bool) or v == "auto", "auto, true or false"),
    "data.augment.crop_padding": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "data.augment.rotation": (lambda v: _number(v) and 0 <= v <= 180, "degrees in [0, 180]"),
    "data.augment.noise": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "trainer.max_epochs": (lambda v: _integer(v) and (v > 0 or v == -1),
                           "an integer > 0, or -1 (no limit: with max_steps or max_time)"),
    "trainer.gradient_clip_val": (lambda v: v is None or (_number(v) and v >= 0), "a number >= 0 or null"),
    "trainer.num_nodes": (lambda v: _integer(v) and v > 0, "an integer > 0"),
    "trainer.precision": (lambda v: str(v) in PRECISIONS, " | ".join(PRECISIONS)),
    "trainer.deterministic": (lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"),
    "cv.folds": (lambda v: _integer(v) and (v == 0 or v >= 2), "0 (off) or an integer >= 2"),
    "cv.all_data": (lambda v: isinstance(v, bool), "true or false"),
    "loss.label_smoothing": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "loss.smoothing": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "loss.delta": (lambda v: _number(v) and v > 0, "a number > 0"),
    "data.class_weights": (lambda v: v is None or v == "balanced" or (isinstance(v, list) and len(v) >= 2
                           and all(_number(w) and w > 0 for w in v)), "balanced, or a list of positive numbers, one per class"),
    "callbacks.early_stopping.patience": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "callbacks.early_stopping.min_delta": (lambda v: _number(v) and v >= 0, "a number >= 0"),
}

# logger class -> (modules any one of which it can write with, the dltrain extra that installs one)
LOGGER_PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "MLFlowLogger": (("mlflow",), "mlflow"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_logger(cfg: DictConfig) -> None:
    """A chosen logger whose package is missing is named before training, not at its first write."""
    target = OmegaConf.select(cfg, "logger._target_", default=None)
    if not target:
        return
    modules, extra = LOGGER_PACKAGES.get(target.rsplit(".", 1)[-1], ((), ""))
    if modules and not any(_installed(m) for m in modules):
        raise ConfigError(f"logger={extra} needs the {modules[0]} package, which is not installed: "
                          f'pip install "dltrain[{extra}]" (or choose logger=null)')


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key that is missing, has the wrong type or lies out of range."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required here: add {missing[0]}=<value> to the command")
    for key, (test, expected) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is not valid: expected {expected}")
    fractions = cfg.data.val_fraction + cfg.data.test_fraction
    if fractions >= 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {fractions:g} leaves no training rows: keep their sum below 1"
        )
    if OmegaConf.select(cfg, "cv.all_data", default=False) and not OmegaConf.select(cfg, "cv.folds", default=0):
        raise ConfigError("cv.all_data=true needs cross-validation: set cv.folds to 2 or more")
    _check_logger(cfg)
