"""Lightning's tuners before training (tune=lr, tune=batch_size): Tuner.lr_find and Tuner.scale_batch_size run on
a trainer of their own, so the run's trainer, callbacks and random draws start as in a run without them; what
they find becomes the run's config record (optimizer.lr, data.batch_size), said in a start line and recorded in
results.json's "tune". A resume keeps what its run found and searches no more."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from dltrain.data.streaming import available_memory
from dltrain.errors import ConfigError, one_line
from dltrain.rundir.layout import RunDir
from dltrain.training.builders import build_module
from dltrain.training.trainer_setup import build_trainer, skip_nvml_probe_without_gpus

if TYPE_CHECKING:
    from dltrain.data.datamodule import ArrayDataModule
    from dltrain.training.module import TrainingModule

log = logging.getLogger("dltrain")


def tune(cfg: DictConfig, run_dir: Path, datamodule: ArrayDataModule, module: TrainingModule
         ) -> tuple[DictConfig, TrainingModule, dict[str, Any]]:
    """Run the search cfg.tune asks for: (the config record with what it found applied, the module built from
    it with the same initial weights, results.json's "tune" record)."""
    settings = OmegaConf.to_container(cfg.tune)
    trainer = _search_trainer(cfg, run_dir, settings)
    with module.searching(), _random_state_kept(), _refusals_in_one_line(), _quiet_search(trainer):
        if settings["find"] == "lr":
            record, key, value = _find_lr(trainer, module, datamodule, settings, cfg, run_dir)
        else:
            record, key, value = _find_batch_size(trainer, module, datamodule, settings, cfg)
        if value is not None:  # the record and the module the training uses say it
            cfg = copy.deepcopy(cfg)
            with read_write(cfg), open_dict(cfg):
                OmegaConf.update(cfg, key, value)
            rebuilt = build_module(OmegaConf.to_container(cfg), datamodule.spec.to_dict(),
                                   per_image=not datamodule.augments_images)
            rebuilt.load_state_dict(module.state_dict())  # the initial weights, which the tuner restored
            module = rebuilt
    return cfg, module, record


def kept_on_resume(cfg: DictConfig, earlier: dict[str, Any] | None) -> dict[str, Any]:
    """A resumed run's "tune" record: what its first start found (`earlier`, its results.json's record where one
    was written), with the value the config holds, and no new search."""
    key = "optimizer.lr" if cfg.tune.find == "lr" else "data.batch_size"
    record = dict(earlier or {}) | {"find": cfg.tune.find, "used": OmegaConf.select(cfg, key),
                                    "searched_again": False}
    log.info(f"tune={cfg.tune.find}: resumed with {key}={record['used']} as the run's start chose it (a resume "
             f"does not search again)")
    return record


def _search_trainer(cfg: DictConfig, run_dir: Path, settings: dict[str, Any]) -> pl.Trainer:
    """The run's Trainer set-up (device, precision, batch limits) with no callbacks or loggers, and enough steps
    for the search whatever trainer.max_epochs says (the finders stop themselves)."""
    steps = settings.get("num_training") or settings["steps_per_trial"] * (settings["max_trials"] + 1)
    searching = copy.deepcopy(cfg)
    with read_write(searching), open_dict(searching):
        searching.trainer.max_epochs, searching.trainer.max_steps = -1, int(steps)
        searching.trainer.num_sanity_val_steps = 0
    trainer = build_trainer(searching, [], run_dir, [])
    skip_nvml_probe_without_gpus(trainer)  # Lightning set the variable again for this trainer
    if trainer.world_size > 1:
        raise ConfigError(f"tune={settings['find']} searches on one device, and this run trains on "
                          f"{trainer.world_size}: search on one (trainer.devices=1), then train with the value found")
    return trainer


def _find_lr(trainer: pl.Trainer, module: TrainingModule, datamodule: ArrayDataModule, settings: dict[str, Any],
             cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], str, float | None]:
    """Tuner.lr_find; its plot (lr_find.png) and record, and the rate to train with (None: the configured one)."""
    from dltrain.report.plots import plot_lr_find

    keys = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
    finder = Tuner(trainer).lr_find(module, datamodule=datamodule, update_attr=False,
                                    **{key: settings[key] for key in keys})
    configured = float(cfg.optimizer.lr)
    if finder is None:  # Lightning skips it under fast_dev_run
        log.info("tune=lr: skipped under fast_dev_run (Lightning's lr_find does not run there)")
        return {"find": "lr", "skipped": "fast_dev_run", "used": configured}, "optimizer.lr", None
    pairs = [(float(lr), float(loss)) for lr, loss in zip(finder.results["lr"], finder.results["loss"])
             if math.isfinite(loss)]
    suggestion = finder.suggestion()
    suggestion = float(suggestion) if suggestion is not None else None
    used = suggestion if settings["apply"] and suggestion is not None else configured
    plot = plot_lr_find(RunDir(run_dir).plot("lr_find"), [p[0] for p in pairs], [p[1] for p in pairs],
                        suggestion, used)
    tried = len(finder.results["lr"])
    record = {"find": "lr", "range": [settings["min_lr"], settings["max_lr"]], "tried": tried,
              "tried_up_to": float(finder.results["lr"][-1]) if tried else None, "suggestion": suggestion,
              "configured": configured, "used": used, "applied": bool(settings["apply"]) and suggestion is not None,
              "plot": plot.name}
    stopped = (f", stopping at {record['tried_up_to']:.3g} where the loss passed "
               f"{settings['early_stop_threshold']:g}x its best" if tried < settings["num_training"] else "")
    found = f"suggested {suggestion:.3g}" if suggestion is not None else "no suggestion (too few rates tried)"
    then = (f"training with optimizer.lr={used:.3g} (configured {configured:g})" if used != configured else
            f"training with the configured optimizer.lr={configured:g}"
            + (" (tune.apply=false)" if suggestion is not None else ""))
    log.info(f"tune=lr: Lightning's lr_find tried {tried} learning rates from {settings['min_lr']:g} on the training "
             f"split{stopped}; {found}; {then}; plot: {plot}")
    return record, "optimizer.lr", used if used != configured else None


def _find_batch_size(trainer: pl.Trainer, module: TrainingModule, datamodule: ArrayDataModule,
                     settings: dict[str, Any], cfg: DictConfig) -> tuple[dict[str, Any], str, int | None]:
    """Tuner.scale_batch_size up to the cap (the training rows, and the rows whose inputs fit the memory share)."""
    rows = len(datamodule.train_set)
    memory, where = _device_memory(trainer)
    row_bytes = 4 * math.prod(datamodule.spec.input_shape)  # a row's float32 input
    memory_rows = max(1, int(settings["memory_share"] * memory // row_bytes))
    cap = min(rows, memory_rows)
    configured = int(cfg.data.batch_size)
    found = Tuner(trainer).scale_batch_size(
        module, datamodule=datamodule, mode=settings["mode"], steps_per_trial=settings["steps_per_trial"],
        init_val=min(settings["init_val"], cap), max_trials=settings["max_trials"], max_val=cap)
    datamodule.batch_size = configured  # as configured until the size to train with is known
    if found is None:
        log.info("tune=batch_size: skipped under fast_dev_run (Lightning's scale_batch_size does not run there)")
        return {"find": "batch_size", "skipped": "fast_dev_run", "used": configured}, "data.batch_size", None
    found = min(int(found), cap)
    used = found if settings["apply"] else configured
    datamodule.batch_size = used  # the training's loaders, as the record says
    bound = "the training rows" if cap == rows else "the memory cap"
    record = {"find": "batch_size", "found": found, "configured": configured, "used": used,
              "cap": {"rows": cap, "training_rows": rows, "memory_rows": memory_rows,
                      "memory": f"{settings['memory_share']:g} of {memory / 2**30:.1f} GiB {where} over "
                                f"{row_bytes:,} bytes a row's input"}}
    then = (f"training with data.batch_size={used} (configured {configured})" if used != configured
            else f"training with the configured data.batch_size={configured}"
            + (" (tune.apply=false)" if found != configured else ""))
    log.info(f"tune=batch_size: Lightning's scale_batch_size ({settings['mode']}) found {found}, capped by {bound} "
             f"({rows:,} training rows; inputs of {memory_rows:,} rows fill {settings['memory_share']:g} of the "
             f"{memory / 2**30:.1f} GiB {where}); {then}")
    return record, "data.batch_size", used if used != configured else None


def _device_memory(trainer: pl.Trainer) -> tuple[int, str]:
    """The bytes the run's device holds: a GPU's whole memory, or the memory the CPU's machine has available."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"of {torch.cuda.get_device_name(device)}"
    return available_memory(), "available"


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """The random generators as they were before the search: the training draws (shuffling, dropout) what it
    would have drawn without it."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def _refusals_in_one_line() -> Iterator[None]:
    """Lightning's refusal of a set-up for its tuner (a distributed strategy) as one line, the user's to change."""
    try:
        yield
    except MisconfigurationException as exc:
        raise ConfigError(f"Lightning's tuner refuses this set-up: {one_line(exc)}") from None


# Lightning's lines about its own search, which the start line says in full: the temporary checkpoint it restores
# (its own, read back whole), its early stop and its result.
_SEARCH_LOGGERS = ("pytorch_lightning.trainer.connectors.checkpoint_connector", "pytorch_lightning.tuner.lr_finder",
                   "pytorch_lightning.tuner.batch_size_scaling")


@contextmanager
def _quiet_search(trainer: pl.Trainer) -> Iterator[None]:
    """Lightning's search without its log lines, and without the lr finder's progress bar (tqdm, on stderr) where
    the run shows none (not a terminal, or trainer.enable_progress_bar=false)."""
    loggers = [logging.getLogger(name) for name in _SEARCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.ExitStack() as stack:
            if trainer.progress_bar_callback is None:
                stack.enter_context(contextlib.redirect_stderr(stack.enter_context(open(os.devnull, "w"))))
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
