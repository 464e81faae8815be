"""What a run records about itself: results.json's record (what the run was, how it went, where its checkpoints
are), the best epoch read back from metrics.csv, and metrics.csv cut back to the epochs a resume keeps."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint, StochasticWeightAveraging, WeightAveraging
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.utilities.model_summary import ModelSummary

from dltrain.training.losses import loss_name
from dltrain.rundir.files import write_atomic
from dltrain.rundir.layout import RunDir

if TYPE_CHECKING:
    from dltrain.data.datamodule import ArrayDataModule


def best_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best epoch (the one that follows a metric), if there is one."""
    return next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor), None)


def stopped_early(trainer: pl.Trainer) -> str | None:
    """Why early stopping ended the run, in words, or None where it did not: also where it fired at the last
    epoch, which trainer.max_epochs ended anyway."""
    stopper = trainer.early_stopping_callback
    if stopper is None or stopper.stopping_reason is EarlyStoppingReason.NOT_STOPPED:
        return None
    if trainer.max_epochs and 0 < trainer.max_epochs <= trainer.current_epoch:
        return None
    monitor = stopper.monitor
    return {
        EarlyStoppingReason.PATIENCE_EXHAUSTED: f"{monitor} did not improve by more than {abs(stopper.min_delta):g} "
                                                f"in {stopper.patience} epoch(s) (callbacks.early_stopping.patience)",
        EarlyStoppingReason.NON_FINITE_METRIC: f"{monitor} became non-finite (nan or inf)",
        EarlyStoppingReason.STOPPING_THRESHOLD: f"{monitor} reached stopping_threshold={stopper.stopping_threshold}",
        EarlyStoppingReason.DIVERGENCE_THRESHOLD: f"{monitor} passed divergence_threshold="
                                                  f"{stopper.divergence_threshold}",
    }[stopper.stopping_reason]


def weight_averagers(trainer: pl.Trainer) -> list[pl.Callback]:
    """The run's weight-averaging callbacks (EMAWeightAveraging and other WeightAveraging, SWA)."""
    return [cb for cb in trainer.callbacks if isinstance(cb, (WeightAveraging, StochasticWeightAveraging))]


def still_improving(trainer: pl.Trainer, path: Path, monitor: str, mode: str, recent: int = 3) -> bool:
    """Whether the monitored metric was still improving when trainer.max_epochs ended the run: the best of its
    last `recent` validated epochs beats the best before them by more than early stopping's min_delta (as
    early stopping counts an improvement). Never for a run something else ended (early stopping, max_steps,
    max_time, a callback) or a fast_dev_run."""
    if trainer.fast_dev_run or not trainer.max_epochs or trainer.max_epochs < 0 \
            or trainer.current_epoch < trainer.max_epochs or stopped_early(trainer) is not None \
            or not path.exists():
        return False
    with path.open(newline="") as handle:
        values = [float(row[monitor]) for row in csv.DictReader(handle) if row.get(monitor)]
    if len(values) < 2:
        return False
    scores = [-value if mode == "min" else value for value in values]  # higher is better
    recent = min(recent, len(scores) - 1)
    stopper = trainer.early_stopping_callback
    min_delta = abs(stopper.min_delta) if stopper is not None else 0.0
    return max(scores[-recent:]) - max(scores[:-recent]) > min_delta


def limits_in_force(trainer: pl.Trainer, datamodule: ArrayDataModule) -> dict[str, dict[str, Any]]:
    """The batch limits that left rows out (trainer.limit_{train,val,test}_batches, fast_dev_run), per stage:
    the limit, the rows each epoch (or the test) covered, and the split's rows. Validation and test batches
    are the split's rows in order, so a limit covers its first rows."""
    limits = {}
    splits = {"train": (trainer.limit_train_batches, datamodule.train_set),
              "val": (trainer.limit_val_batches, datamodule.val_set),
              "test": (trainer.limit_test_batches, datamodule.test_set)}
    per_step = datamodule.batch_size * max(1, trainer.world_size)
    for stage, (limit, split) in splits.items():
        total = len(split)
        batches = -(-total // per_step)
        covered = min(limit, batches) if isinstance(limit, int) else int(batches * limit)
        rows = min(covered * per_step, total)
        if rows < total:
            key = ("fast_dev_run" if trainer.fast_dev_run else "overfit_batches"
                   if trainer.overfit_batches and stage != "test" else f"limit_{stage}_batches")
            limits[stage] = {key: trainer.fast_dev_run or limit, "rows": rows, "of": total}
    return limits


def results_record(cfg: DictConfig, trainer: pl.Trainer, datamodule: ArrayDataModule,
                   summary: ModelSummary, run_dir: Path, *, started: float, status: str, **extra: Any
                   ) -> dict[str, Any]:
    """results.json: what the run was (`cfg`: the run's record, resolved), how it went, and where its
    checkpoints are."""
    checkpoint = best_checkpoint(trainer)
    last = RunDir(run_dir).last_checkpoint
    best = checkpoint.best_model_score if checkpoint else None
    stop_reason = stopped_early(trainer)
    results = {
        "status": status,
        "name": cfg.get("name"),
        "tags": list(cfg.get("tags") or []),
        "model": cfg.model.name,
        "data": datamodule.spec.name,
        "task": datamodule.spec.task,
        "monitor": cfg.monitor,
        "mode": cfg.mode,
        "best_val": float(best) if best is not None else None,
        "val": {},
        "test": {},
        "epochs_run": trainer.current_epoch,
        "max_epochs": cfg.trainer.max_epochs,
        "early_stopped": stop_reason is not None,
        "stop_reason": stop_reason,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "num_parameters": summary.total_parameters,
        "trainable_parameters": summary.trainable_parameters,
        "best_checkpoint": relative_path(checkpoint.best_model_path, run_dir) if checkpoint else None,
        "last_checkpoint": relative_path(last, run_dir) if last.exists() else None,
        "seed": cfg.seed,
        "rows": {split: len(getattr(datamodule, f"{split}_set")) for split in ("train", "val", "test")},
        "device": {"type": trainer.strategy.root_device.type, "devices": trainer.num_devices,
                   "nodes": trainer.num_nodes},
        "loss": loss_name(cfg.get("loss"), datamodule.spec.task),
        "class_weights": datamodule.spec.class_weights,
        # what the source left out of the user's table (identifier columns, rows with gaps), as its start lines say
        **datamodule.facts,
    }
    return results | extra


def last_val_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The validation metrics of the last epoch."""
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val_")}


def best_epoch_in(path: Path, monitor: str, mode: str) -> tuple[int | None, dict[str, float]]:
    """The best checkpoint's epoch (counted from 1) and its validation metrics, from metrics.csv (the first of
    equal values, like ModelCheckpoint); of the run so far, a resumed one included."""
    if not path.exists():  # no epoch ended (a Timer or max_steps stopped the first)
        return None, {}
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(monitor)]
    if not rows:
        return None, {}
    pick = min if mode == "min" else max
    best = pick(rows, key=lambda row: float(row[monitor]))
    return int(best["epoch"]) + 1, {k: float(v) for k, v in sorted(best.items()) if k.startswith("val_") and v != ""}


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """The epochs a checkpoint had finished: its epoch's too where it was saved at the epoch's end, not where a
    step checkpoint (every_n_train_steps) saved it mid-epoch (Lightning's count of processed epochs says which)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("total", {})
    processed = progress.get("processed") if isinstance(progress, dict) else None
    return processed if isinstance(processed, int) and not isinstance(processed, bool) else checkpoint["epoch"] + 1


def drop_metrics_from(path: Path, epoch: int) -> None:
    """Keep metrics.csv rows of epochs before `epoch`: a resumed run writes the later ones again."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], [row for row in reader if int(row["epoch"]) < epoch]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def relative_path(path: str, run_dir: Path) -> str | None:
    return str(Path(path).resolve().relative_to(run_dir.resolve())) if path else None
