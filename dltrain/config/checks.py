"""The checks of a composed config that need neither its data nor torch's big imports: its keys, types and
ranges (by dltrain.config.schema) and the pairs of keys that must agree, run before any data is loaded or model built.

Hydra already refuses unknown groups and options; a key +added at the top is checked here against the config
folders.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.errors import ConfigError, one_line
from dltrain.paths import config_dir
from dltrain.config.schema import (PRESET_KEYS, AutoModel, DataLoading, Scheduling, TrainConfig, check_section,
                                   check_target, check_tune)


# logger class -> (modules any one of which it can write with, the dltrain extra that installs one)
LOGGER_PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "MLFlowLogger": (("mlflow",), "mlflow"),
    "WandbLogger": (("wandb",), "wandb"),
    "CometLogger": (("comet_ml",), "comet"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported here (found without importing it)."""
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
    if modules and not any(installed(m) for m in modules):
        raise ConfigError(f"logger={extra} needs the {modules[0]} package, which is not installed: "
                          f'pip install "dltrain[{extra}]" (or choose logger=null)')


@functools.cache
def top_level_keys(root: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(the keys a config folder gives a composed config's top, its config groups): its primary configs' own
    keys and the groups that fill a key of their name (not the _global_ ones: experiment, hparams_search, debug)."""
    groups = frozenset(path.name for path in root.iterdir() if path.is_dir() and path.name != "hydra")
    own = {str(key) for primary in root.glob("*.yaml") for key in (OmegaConf.load(primary) or {})
           if key not in ("defaults", "hydra")}
    filling = {group for group in groups if not any(
        preset.read_text().lstrip().startswith("# @package _global_") for preset in (root / group).glob("*.yaml"))}
    return frozenset(own | filling), groups


def collected(*checks: Callable[[], None]) -> list[ConfigError]:
    """The ConfigError of each check that raises one: the checks run one after the other, each whatever the
    others found, so that a config's mistakes are all reported together (raise_together)."""
    errors = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            errors.append(exc)
    return errors


def raise_together(errors: list[ConfigError]) -> None:
    """Raise the mistakes found, in one line: a single one as it is, several numbered in the order found."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigError(f"{len(errors)} mistakes in the config: "
                          + "; ".join(f"({number}) {one_line(error)}" for number, error in enumerate(errors, 1)))


def unknown_key_errors(cfg: DictConfig, config_dirs: tuple[Path, ...] = ()) -> list[ConfigError]:
    """A top-level key that neither the shipped config folder nor the user's own (`config_dirs`) defines
    (+foo=1, or +optimiser=sgd for a misspelt group) would be ignored: refused, with the closest name, one
    error per key."""
    known, groups = frozenset(), frozenset()
    for root in {config_dir(), *config_dirs}:
        if root.is_dir():
            keys, names = top_level_keys(root)
            known, groups = known | keys, groups | names
    errors = []
    for key in cfg:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known | groups), n=1)
        hint = (f"did you mean {close[0]}=... (a config group: no + in front)?" if close and close[0] in groups
                else f"did you mean {close[0]}?" if close else "dltrain --help lists the groups and keys")
        errors.append(ConfigError(f"{key} is not a key of dltrain's config, so it would be ignored: {hint}"))
    return errors


def _check_finite(cfg: DictConfig) -> None:
    """inf or nan as a hyper-parameter (optimizer.lr=inf) passes every range check and trains nonsense."""
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{where}={node} is not a finite number: give a finite value")

    walk(OmegaConf.to_container(cfg, resolve=False), "")


# The direction in which each metric improves (the part of the name after train_/val_/test_).
LOWER_IS_BETTER, HIGHER_IS_BETTER = ("loss", "mse", "mae"), ("acc", "f1", "auroc", "r2")


def _check_monitor_direction(cfg: DictConfig) -> None:
    """mode=max with monitor=val_loss keeps the worst epoch and tests it: a pair that contradicts itself."""
    pairs = [("monitor", "mode", cfg.get("monitor"), cfg.get("mode"))]
    for name, callback in (cfg.get("callbacks") or {}).items():
        if isinstance(callback, DictConfig) and callback.get("monitor") and callback.get("mode"):
            pairs.append((f"callbacks.{name}.monitor", f"callbacks.{name}.mode", callback.monitor, callback.mode))
    for monitor_key, mode_key, monitor, mode in pairs:
        metric = str(monitor).split("_", 1)[-1]
        right = "min" if metric in LOWER_IS_BETTER else "max" if metric in HIGHER_IS_BETTER else None
        if right and mode != right:
            raise ConfigError(f"{mode_key}={mode} with {monitor_key}={monitor} keeps the worst epoch: "
                              f"{'lower' if right == 'min' else 'higher'} {monitor} is better, so use {mode_key}={right}")


def _check_batches(cfg: DictConfig) -> None:
    """Settings that leave a run nothing to train on, or nothing to follow."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("limit_train_batches") in (0, 0.0):
        raise ConfigError("trainer.limit_train_batches=0 trains on nothing: give a share in (0, 1] or a count >= 1")
    monitor = str(cfg.get("monitor") or "")
    if monitor.startswith("val_") and trainer.get("limit_val_batches") in (0, 0.0):
        raise ConfigError(f"trainer.limit_val_batches=0 turns validation off, so monitor={monitor} is never "
                          "logged: monitor a training metric (monitor=train_loss) or keep some validation batches")


def check_monitor_logged(monitor_keys: dict[str, str], logged: list[str]) -> None:
    """Each monitored metric (key -> name) is one the run logs, checked once the task is known, before training
    (Lightning would stop at the first epoch's end)."""
    for key, name in monitor_keys.items():
        if name not in logged:
            close = difflib.get_close_matches(name, logged, n=1)
            raise ConfigError(f"{key}={name} is not a metric this run logs"
                              + (f": did you mean {close[0]}?" if close else "")
                              + f" (it logs {', '.join(logged)})")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the keys that are missing, unknown, have the wrong type or lie out of range
    (dltrain.config.schema), or pairs of keys that contradict each other (config_errors, together)."""
    raise_together(config_errors(cfg))


def config_errors(cfg: DictConfig) -> list[ConfigError]:
    """check_config's refusals, all of each stage: section_errors, then (once those hold) component_errors."""
    return section_errors(cfg) or component_errors(cfg)


def section_errors(cfg: DictConfig) -> list[ConfigError]:
    """Missing values first, then values that are not finite, then each of dltrain's own sections' keys, types
    and ranges (the schema's pydantic models): nothing here imports torch, so these mistakes cost no more than
    composing the config. A stage runs once the ones before it have found nothing (its checks would repeat
    their mistakes, or read values they refused)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        return [ConfigError(f"{key} is required here: add {key}=<value> to the command") for key in missing]
    finite = collected(lambda: _check_finite(cfg))
    if finite:
        return finite
    auto = OmegaConf.select(cfg, "model.name", default=None) == "auto"
    return collected(
        lambda: check_section(cfg, TrainConfig),
        lambda: check_section(cfg.data, DataLoading, "data"),
        lambda: not auto or check_section(cfg.model, AutoModel, "model"),
        lambda: cfg.get("scheduler") is None or check_section(cfg.scheduler, Scheduling, "scheduler"),
        lambda: cfg.get("tune") is None or check_tune(cfg.tune))


def component_errors(cfg: DictConfig) -> list[ConfigError]:
    """The data source's, model's and loss's keys against their callables' signatures (which imports them),
    then (once those hold) the pairs of keys that must agree, which read the values the sections check."""
    auto = OmegaConf.select(cfg, "model.name", default=None) == "auto"
    errors = collected(
        lambda: check_target(cfg.data, "data", ignore=DataLoading.model_fields),
        lambda: auto or check_target(cfg.model, "model", ignore=PRESET_KEYS),
        lambda: check_target(cfg.get("loss"), "loss", ignore=("name",)))
    return errors or collected(lambda: _check_cv(cfg), lambda: _check_prepared_streams(cfg),
                               lambda: _check_monitor_direction(cfg),
                               lambda: _check_batches(cfg), lambda: _check_logger(cfg))


def _check_prepared_streams(cfg: DictConfig) -> None:
    """data=streaming is read by LitData while training, never held in memory: data.stream=false is refused."""
    if OmegaConf.select(cfg, "data._target_", default=None) == "dltrain.data.litdata_source.prepared" \
            and OmegaConf.select(cfg, "data.stream", default="auto") is False:
        raise ConfigError("data.stream=false: data=streaming is always streamed (LitData reads the prepared folder "
                          "while training); leave data.stream out, or set it to auto or true")


def _check_cv(cfg: DictConfig) -> None:
    """cv.all_data comes with folds; folds come with data read in memory (data=streaming's split is fixed)."""
    folds = OmegaConf.select(cfg, "cv.folds", default=0)
    if OmegaConf.select(cfg, "cv.all_data", default=False) and not folds:
        raise ConfigError("cv.all_data=true needs cross-validation: set cv.folds to 2 or more")
    if folds and OmegaConf.select(cfg, "data._target_", default=None) == "dltrain.data.litdata_source.prepared":
        raise ConfigError(f"cv.folds={folds}: data=streaming's split was fixed by dltrain-prepare; cross-validation "
                          "needs the source itself (data=csv, data=image_folder, ...)")
