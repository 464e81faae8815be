"""The checks of a run before it starts, in one place: `validate(cfg)`, the one check of a composed config
before anything runs (its keys, types and ranges by the schema, the arguments of the callables it names
against their signatures, the devices it asks for, and for `dltrain validate` the data files it reads), then
`check_before_training`, the one check of the built parts (the monitored metrics and the first validation
against the data and module). Each mistake is one line, not a failure later.

validate runs once per run by the entry that starts it - the dltrain command, or train() and cross_validate()
called in-process - and on its own by `dltrain validate`, which trains and writes nothing.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from dltrain.config.checks import (check_monitor_logged, collected, component_errors, raise_together, section_errors,
                                   unknown_key_errors)
from dltrain.errors import ConfigError, DataError
from dltrain.config.schema import check_target
from dltrain.data.fingerprint import DATA_FILE_KEYS

if TYPE_CHECKING:
    from dltrain.data.datamodule import ArrayDataModule
    from dltrain.training.module import TrainingModule


@dataclass(frozen=True)
class ValidatedConfig:
    """A composed config that validate() has passed: what train() and cross_validate() take to train without
    checking it again (given a plain DictConfig, they validate it first)."""

    cfg: DictConfig


def validate(cfg: DictConfig, config_dirs: tuple[Path, ...] = ()) -> ValidatedConfig:
    """Refuse, in one line naming every mistake found, a config that cannot train as asked: its top-level keys,
    then its keys, types and ranges by the schema (dltrain.config.schema, through dltrain.config.checks), then
    the devices and the trainer's and components' callables (before_data_errors below). Each stage runs once the
    ones before it found nothing: a later one reads what an earlier one checks."""
    errors = (unknown_key_errors(cfg, config_dirs) or section_errors(cfg) or collected(lambda: data_files(cfg))
              or component_errors(cfg) or before_data_errors(cfg))
    raise_together(errors)
    return ValidatedConfig(cfg)


def check_data_files(cfg: DictConfig) -> list[Path]:
    """data_files, and a table's column keys against its file's header (`dltrain validate`; a run meets them as
    its table loads)."""
    found = data_files(cfg)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data.get("_target_") == "dltrain.data.tables.table" and data.get("path") and data.get("target"):
        _check_table_columns(data)
    return found


def data_files(cfg: DictConfig) -> list[Path]:
    """The files and folders the data config reads, each refused where it does not exist; a torchvision set's
    files under data.root where the config does not download them. Returns them. Checked before torch, numpy
    or pandas is imported: a mistyped path is answered at once."""
    from dltrain.data.vision_sets import VISION_SETS, files_not_found

    data = OmegaConf.to_container(cfg.data, resolve=True)
    found = []
    for key in DATA_FILE_KEYS:
        if data.get(key) and "://" not in str(data[key]):  # a URL (data=streaming's s3://) is its reader's to reach
            path = Path(str(data[key])).expanduser()
            if not path.exists():
                raise DataError(f"data.{key}: no such file or folder {path}")
            found.append(path)
    name = data.get("name")
    if name in VISION_SETS and data.get("root") and not data.get("download"):
        base = Path(str(data["root"])).expanduser()
        if not (base / VISION_SETS[name][1]).is_dir():
            raise DataError(files_not_found(name, base))
        found.append(base / VISION_SETS[name][1])
    return found


def _check_table_columns(data: dict) -> None:
    """The column keys of a table config against the file's header (no data rows read), refused in the words
    training would use (dltrain.data.tables.check_columns)."""
    from dltrain.data.tables import check_columns, read_header

    path = Path(str(data["path"])).expanduser()
    if not path.is_file():
        return
    check_columns(read_header(path, str(data.get("encoding") or "utf-8")), path, target=data["target"],
                  features=data.get("features"), exclude=data.get("exclude"), categorical=data.get("categorical"),
                  split_column=data.get("split_column"), text_column=data.get("text_column"))


def before_data_errors(cfg: DictConfig) -> list[ConfigError]:
    """The devices asked for, and the arguments of the trainer and each component against their callables'
    signatures: every refusal, each component checked whatever the others' mistakes."""
    return collected(lambda: check_gpus(cfg.trainer), lambda: check_trainer_keys_dltrain_sets(cfg.trainer),
                     *component_argument_checks(cfg))


def check_before_training(cfg: DictConfig, datamodule: ArrayDataModule, module: TrainingModule) -> None:
    """The monitored metrics are ones this task's module logs, and a validation comes before they are needed."""
    config = OmegaConf.to_container(cfg.callbacks or {}, resolve=True)
    monitors = {"monitor": cfg.monitor} | {f"callbacks.{name}.monitor": callback["monitor"] for name, callback in
                                          config.items() if isinstance(callback, dict) and callback.get("monitor")}
    check_monitor_logged(monitors, module.epoch_columns())
    _check_first_validation(cfg, config, datamodule)
    from dltrain.training.calibration import calibration_method

    calibration_method(cfg.get("calibration", "auto"), datamodule.spec)  # temperature on a regression: refused
    if cfg.get("explain"):
        from dltrain.report.explanations import check_explainable

        check_explainable(datamodule.spec)
    check_forward(cfg, datamodule, module)


def check_forward(cfg: DictConfig, datamodule: ArrayDataModule, module: TrainingModule) -> None:
    """A dry forward pass of two training rows through a copy of the model in train mode (its weights and
    BatchNorm statistics untouched): a network that cannot take the data's input size (torchvision's
    inception_v3 on 8x8 images) is refused in one line naming the size that would work, not a traceback."""
    import copy

    import torch

    from dltrain.training.metrics import shape_outputs

    x, _ = datamodule.train_set.labelled_head(2)
    if len(x) == 0:
        return
    network = copy.deepcopy(module.model).train()
    try:  # its own random stream: dropout here leaves the run's seeded draws (and so its metrics) as they were
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            shape_outputs(module.spec, network(x))
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        model = cfg.model
        name = f"model={model.get('name') or 'the model'}" + (f" model.arch={model.arch}" if model.get("arch") else "")
        shape = tuple(module.spec.input_shape)
        raise ConfigError(f"{name} cannot take this data's inputs of shape {shape}: "
                          f"{str(exc).strip().splitlines()[0]}; {_what_fits(network, shape)}") from None


def _what_fits(network, shape: tuple[int, ...]) -> str:
    """The smallest power-of-two image size the network takes (tried on zeros), or a model for any size."""
    import torch

    if len(shape) == 3:
        for side in (16, 32, 64, 128, 256, 512):
            if side <= min(shape[1:]):
                continue
            try:
                with torch.no_grad():
                    network.train()(torch.zeros(2, shape[0], side, side))  # the mode it trains in
            except Exception:  # noqa: BLE001 - any failure means this size does not fit either
                continue
            return (f"it takes images of {side}x{side} (this data's are {shape[1]}x{shape[2]}), or choose a model "
                    "made for this size (model=cnn, model=resnet)")
    return "choose a model made for this data's shape (dltrain --help model lists them)"


def _check_first_validation(cfg: DictConfig, callbacks: dict, datamodule) -> None:
    """trainer.max_steps that ends training before the first validation leaves early stopping's validation
    metric unlogged (Lightning's EarlyStopping then fails at the end of training): refused before it starts."""
    trainer = cfg.trainer
    max_steps = trainer.get("max_steps")
    stoppers = {f"callbacks.{name}.monitor": callback["monitor"] for name, callback in callbacks.items()
                if isinstance(callback, dict) and str(callback.get("_target_", "")).endswith("EarlyStopping")
                and str(callback.get("monitor", "")).startswith("val_") and callback.get("strict", True)}
    if not stoppers or not isinstance(max_steps, int) or max_steps <= 0:
        return
    batches = math.ceil(len(datamodule.train_set) / datamodule.batch_size)
    limit = trainer.get("limit_train_batches", 1.0)
    batches = min(batches, limit) if isinstance(limit, int) else max(1, int(batches * float(limit)))
    interval = trainer.get("val_check_interval")
    first = interval if isinstance(interval, int) else batches if interval is None else max(1, int(batches * interval))
    needed = math.ceil(min(first, batches) / int(trainer.get("accumulate_grad_batches") or 1))
    if max_steps < needed:
        key, name = next(iter(stoppers.items()))
        raise ConfigError(f"trainer.max_steps={max_steps} ends training before the first validation (after "
                          f"{needed} optimizer steps), so {key}={name} is never logged: allow at least {needed} "
                          "steps, or turn early stopping off (callbacks.early_stopping=null)")


def component_argument_checks(cfg: DictConfig) -> list[Callable[[], None]]:
    """The checks of the keys of the trainer, optimizer, scheduler, loss, callbacks and logger against their
    callables' signatures, before the data loads (a misspelt +optimizer.<key> would otherwise fail at the first
    training step; Lightning would say only that Trainer.__init__ got an unexpected keyword)."""
    callbacks = (cfg.get("callbacks") or {}).items()
    return [lambda: check_target(cfg.get("trainer"), "trainer", named="Lightning's Trainer"),
            lambda: check_target(cfg.get("optimizer"), "optimizer"),
            lambda: check_target(OmegaConf.select(cfg, "scheduler.scheduler"), "scheduler.scheduler"),
            lambda: check_target(cfg.get("logger"), "logger"),
            lambda: _check_targets_named(cfg),
            lambda: _check_no_finder_callbacks(cfg),
            *(lambda name=name, callback=callback: check_target(callback, f"callbacks.{name}")
              for name, callback in callbacks)]


# Lightning's finder callbacks -> the tune preset that runs the same search: as callbacks they change the run's
# learning rate or batch size behind its record (config.yaml, the checkpoint), and search again at every test.
FINDER_PRESETS = {"LearningRateFinder": "lr", "BatchSizeFinder": "batch_size"}


def _check_no_finder_callbacks(cfg: DictConfig) -> None:
    """Lightning's LearningRateFinder or BatchSizeFinder under callbacks.: refused in one line naming the preset."""
    for name, entry in (cfg.get("callbacks") or {}).items():
        target = str(entry.get("_target_", "")) if isinstance(entry, DictConfig) else ""
        found = FINDER_PRESETS.get(target.rsplit(".", 1)[-1])
        if found and target.startswith(("pytorch_lightning.", "lightning.")):
            raise ConfigError(f"callbacks.{name}: Lightning's {target.rsplit('.', 1)[-1]} runs here as tune={found} "
                              f"(its search before training, the value found recorded in config.yaml and "
                              f"results.json): use tune={found} instead of the callback")


def _shipped_callback_names() -> set[str]:
    """The entry names of the shipped callbacks presets: one of them set to null turns that callback off (the
    composed config no longer shows it), which is not a misspelling."""
    import yaml

    from dltrain.paths import config_dir

    return {str(name) for preset in (config_dir() / "callbacks").glob("*.yaml")
            for name in (yaml.safe_load(preset.read_text()) or {}) if name != "defaults"}


def _check_targets_named(cfg: DictConfig) -> None:
    """A callbacks entry or logger without a `_target_` is one that +key=value added by mistake: a misspelt entry
    name (+callbacks.early_stoping.patience=3 adds a new entry beside early_stopping), or a key of a logger none
    chose. Refused naming it (and the entry it was likely meant for); a misspelt entry set to null would
    otherwise turn off nothing."""
    callbacks = cfg.get("callbacks") or {}
    named = [str(name) for name, entry in callbacks.items() if isinstance(entry, DictConfig) and "_target_" in entry]
    for name, entry in callbacks.items():
        if entry is not None and not isinstance(entry, DictConfig):
            raise ConfigError(f"callbacks.{name}={entry} is not a callback: give its keys "
                              f"(+callbacks.{name}._target_=...) or null to turn it off")
        if (entry is None or "_target_" not in entry) and str(name) not in named:
            close = difflib.get_close_matches(str(name), named, n=1)
            if entry is None and (not close or str(name) in _shipped_callback_names()):
                continue  # a shipped entry turned off (callbacks.last_checkpoint=null), or nothing to turn off
            keys = f".{next(iter(entry))}" if entry else ""
            raise ConfigError(f"callbacks.{name}{keys} names no callback of this config (it has "
                              f"{', '.join(named) or 'none'}): "
                              + (f"did you mean callbacks.{close[0]}{keys}?" if close else
                                 f"add one with +callbacks.{name}._target_=<its class>"))
    logger = cfg.get("logger")
    if isinstance(logger, DictConfig) and str(logger.get("_target_", "")).endswith("TensorBoardLogger"):
        _check_summary_writer_keys(logger)
    if isinstance(logger, DictConfig) and "_target_" not in logger:
        key = next(iter(logger), "")
        raise ConfigError(f"logger.{key} sets a key of no logger (logger=null): choose one first, e.g. "
                          f"logger=tensorboard logger.{key}=..., or leave it out")


def _check_summary_writer_keys(logger: DictConfig) -> None:
    """TensorBoardLogger passes the keys it does not take itself on to the SummaryWriter it opens at its first
    write (its signature ends in **kwargs, so check_target lets any key through): each checked against the
    writer's, before training rather than as a TypeError after the first epoch."""
    import inspect

    from pytorch_lightning.loggers import TensorBoardLogger

    own = inspect.signature(TensorBoardLogger).parameters
    try:
        from torch.utils.tensorboard import SummaryWriter  # the writer Lightning prefers, where tensorboard is
    except ImportError:
        return  # _check_logger has named the missing package
    writer = [name for name in inspect.signature(SummaryWriter).parameters if name not in ("self", "log_dir")]
    for key in logger:
        if str(key).startswith("_") or key in own or key in writer:
            continue
        close = difflib.get_close_matches(str(key), [*own, *writer], n=1)
        raise ConfigError(f"logger.{key} is not an argument of TensorBoardLogger nor of the SummaryWriter it passes "
                          "its other keys to: " + (f"did you mean logger.{close[0]}?" if close else
                                                   f"the writer takes {', '.join(writer)}"))


# Trainer arguments a run sets itself, and where the user sets what they stand for. Passed as +trainer.<key>,
# Hydra's instantiate would let the run's own value win without a word.
_SET_BY_THE_RUN = {
    "callbacks": "add one with +callbacks.<name>={_target_: ...} (see conf/callbacks/default.yaml)",
    "logger": "choose logger=tensorboard or logger=mlflow (metrics.csv is always written)",
    "default_root_dir": "every run writes into its own directory: set hydra.run.dir",
    "enable_checkpointing": "set callbacks.model_checkpoint=null callbacks.last_checkpoint=null",
    "plugins": "dltrain installs its atomic checkpoint IO; a precision or cluster plugin has its trainer key "
               "(trainer.precision, trainer.num_nodes)",
}


def check_trainer_keys_dltrain_sets(trainer_cfg: DictConfig) -> None:
    for key, instead in _SET_BY_THE_RUN.items():
        if key in trainer_cfg:
            raise ConfigError(f"trainer.{key} is set by dltrain for every run: {instead}")


def check_gpus(trainer_cfg: DictConfig) -> None:
    """Refuse a trainer asking for more GPUs than this machine has, in one line naming what would run here
    (Lightning's own error names neither the count nor the way out)."""
    import torch

    wanted = trainer_cfg.get("devices")
    if trainer_cfg.get("accelerator") not in ("gpu", "cuda") or not isinstance(wanted, int) or wanted < 1:
        return
    here = torch.cuda.device_count()
    if wanted > here:
        raise ConfigError(f"trainer.accelerator={trainer_cfg.accelerator} with trainer.devices={wanted} asks for "
                          f"{wanted} GPU(s) and this machine has {here}; use trainer.devices={here} or fewer"
                          if here else
                          f"trainer.accelerator={trainer_cfg.accelerator} asks for a GPU and this machine has none; "
                          "use trainer=cpu (trainer=ddp_cpu for several processes), or trainer=default, which "
                          "takes a GPU where there is one")
