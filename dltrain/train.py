"""One training run: config -> data and model -> Lightning module -> trainer -> files in the run directory."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.model_summary import ModelSummary

from dltrain import console
from dltrain.callbacks import EpochMetricsCSV
from dltrain.config_check import check_config
from dltrain.data.datamodule import build_datamodule
from dltrain.instantiate import build
from dltrain.module import TrainingModule
from dltrain.run_files import write_atomic, write_json

log = logging.getLogger("dltrain")

# Lightning's advice that fits other workloads (in-memory batches need no worker processes, metrics
# are logged per epoch so short epochs are fine) and deprecations inside Lightning a user cannot act on.
_UNHELPFUL_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's own use of a torch API
)


def quiet_libraries() -> None:
    """Silence library chatter that does not help a dltrain user."""
    for pattern in _UNHELPFUL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def skip_nvml_probe_without_gpus(trainer: pl.Trainer) -> None:
    """Stop torch from loading NVML at every optimizer step of a CPU run on a machine without GPUs.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 so that asking whether CUDA is there does not
    initialise CUDA before processes fork; torch's optimizers ask at every step, and with that flag each
    answer loads the NVML library anew (about 0.5 ms a step where it is missing). With no GPU at all
    there is no CUDA to protect, so the plain, cached check is used.
    """
    import torch

    if trainer.strategy.root_device.type == "cpu" and torch.cuda.device_count() == 0:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """Configured callbacks (a null entry is off), checkpoints into run_dir/checkpoints, and metrics.csv."""
    callbacks: list[pl.Callback] = []
    for name, cb_cfg in cfg.callbacks.items():
        if cb_cfg is None:
            continue
        extra = {"dirpath": str(run_dir / "checkpoints")} if name == "model_checkpoint" else {}
        callbacks.append(build(cb_cfg, f"callbacks.{name}", **extra))
    callbacks.append(EpochMetricsCSV(run_dir / "metrics.csv"))
    return callbacks


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], run_dir: Path) -> pl.Trainer:
    return build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=False,
        default_root_dir=str(run_dir),
        enable_progress_bar=sys.stdout.isatty(),
        enable_model_summary=False,
    )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train, test the best checkpoint, and write config, metrics, checkpoints and results into run_dir."""
    started = time.perf_counter()
    check_config(cfg)
    quiet_libraries()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(config))

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(config["data"], cfg.seed)
    module = TrainingModule(config, datamodule.spec.to_dict())
    summary = ModelSummary(module, max_depth=3)
    write_atomic(run_dir / "model_summary.txt", f"{summary}\n")

    trainer = build_trainer(cfg, build_callbacks(cfg, run_dir), run_dir)
    skip_nvml_probe_without_gpus(trainer)
    console.show_start(cfg, run_dir, datamodule, summary, trainer)
    trainer.fit(module, datamodule=datamodule)
    checkpoint = trainer.checkpoint_callback
    tested = trainer.test(module, datamodule=datamodule, ckpt_path="best" if checkpoint else None, verbose=False)

    stopper = trainer.early_stopping_callback
    best = checkpoint.best_model_score if checkpoint else None
    results = {
        "status": "completed",
        "model": config["model"]["name"],
        "data": datamodule.spec.name,
        "task": datamodule.spec.task,
        "monitor": cfg.monitor,
        "mode": cfg.mode,
        "best_val": float(best) if best is not None else None,
        "test": {k: float(v) for k, v in sorted(tested[0].items())},
        "epochs_run": trainer.current_epoch,
        "max_epochs": cfg.trainer.max_epochs,
        "early_stopped": bool(stopper is not None and stopper.stopped_epoch > 0),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "num_parameters": summary.total_parameters,
        "trainable_parameters": summary.trainable_parameters,
        "best_checkpoint": _relative(checkpoint.best_model_path, run_dir) if checkpoint else None,
        "last_checkpoint": _relative(checkpoint.last_model_path, run_dir) if checkpoint else None,
        "seed": cfg.seed,
    }
    write_json(run_dir / "results.json", results)
    console.show_results(results, run_dir)
    return results


def _relative(path: str, run_dir: Path) -> str | None:
    return str(Path(path).resolve().relative_to(run_dir.resolve())) if path else None
