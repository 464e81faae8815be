"""The Lightning Trainer of a run, and what it is given: dltrain's callbacks beside the configured ones, the
loggers (built by dltrain.training.loggers), the checkpoint IO plugin, and the environment fix a CPU-only machine
needs."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from dltrain.training.callbacks import EpochMetricsCSV, InterruptCheckpoint, RngState
from dltrain.checkpoints.writing import AtomicCheckpointIO
from dltrain.config.instantiate import build
from dltrain.report.progress import EpochProgressBar
from dltrain.rundir.layout import RunDir

log = logging.getLogger("dltrain")


def skip_nvml_probe_without_gpus(trainer: pl.Trainer) -> None:
    """Stop torch from loading NVML at every optimizer step of a CPU run on a machine without GPUs.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 so that asking whether CUDA is there does not
    initialise CUDA before processes fork; torch's optimizers ask at every step, and with that flag each
    answer loads the NVML library anew where it is missing. With no GPU at all
    there is no CUDA to protect, so the plain, cached check is used.
    """
    import torch

    if trainer.strategy.root_device.type == "cpu" and torch.cuda.device_count() == 0:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def build_callbacks(cfg: DictConfig, run_dir: Path, added: list[pl.Callback]) -> list[pl.Callback]:
    """Configured callbacks (a null entry is off), checkpoints into run_dir/checkpoints, and dltrain's own."""
    callbacks: list[pl.Callback] = []
    for name, cb_cfg in cfg.callbacks.items():
        if cb_cfg is None:
            continue
        callbacks.append(build(cb_cfg, f"callbacks.{name}", **_checkpoint_dir(cb_cfg, run_dir)))
    callbacks = [InterruptCheckpoint(RunDir(run_dir).interrupted_checkpoint), *callbacks,
                 EpochMetricsCSV(RunDir(run_dir).metrics), RngState(), *added]
    if _progress_bar(cfg):
        callbacks.append(EpochProgressBar())
    return callbacks


def _progress_bar(cfg: DictConfig) -> bool:
    """trainer.enable_progress_bar as set, else a bar on a terminal only (in CI logs one line an epoch is enough)."""
    chosen = cfg.trainer.get("enable_progress_bar")
    return sys.stdout.isatty() if chosen is None else bool(chosen)


def _checkpoint_dir(cb_cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    """dirpath=<run>/checkpoints for a ModelCheckpoint configured without one (Lightning would put its files
    under the logger's version folder, or beside the run)."""
    from hydra.utils import get_class

    target = cb_cfg.get("_target_")
    if not target or cb_cfg.get("dirpath") is not None:
        return {}
    try:
        is_checkpoint = issubclass(get_class(target), ModelCheckpoint)
    except (ImportError, ValueError, TypeError, AttributeError):  # not a class: build() names the problem
        return {}
    return {"dirpath": str(RunDir(run_dir).checkpoints)} if is_checkpoint else {}


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], run_dir: Path, loggers: list[Logger]) -> pl.Trainer:
    """The configured Trainer, every trainer.* key passed to it as Lightning documents it.

    Checkpointing is on only where a checkpoint callback is configured: with both set to null Lightning would
    otherwise add its own, writing checkpoints/epoch=N-step=M.ckpt that results.json knows nothing of.
    """
    return build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        enable_progress_bar=_progress_bar(cfg),
        enable_model_summary=bool(cfg.trainer.get("enable_model_summary", False)),  # dltrain shows its own
        enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
        plugins=[AtomicCheckpointIO()],
    )


def say_validation_schedule(trainer: pl.Trainer) -> None:
    """With trainer.check_val_every_n_epoch > 1 the epochs between validations have no monitored metric, so a
    ModelCheckpoint following it skips them: said once here, in place of Lightning's warning at each such
    epoch that it "could not find the monitored key" (which reads like a mistake)."""
    every = trainer.check_val_every_n_epoch
    monitors = {cb.monitor for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor}
    if not every or every <= 1 or not monitors:
        return
    log.info(f"trainer.check_val_every_n_epoch={every}: validation runs every {every} epochs, so the best "
             f"checkpoint ({', '.join(sorted(monitors))}) and early stopping consider those epochs only")
    warnings.filterwarnings("ignore", message=r".*`ModelCheckpoint\(monitor=.*could not find the monitored key")
