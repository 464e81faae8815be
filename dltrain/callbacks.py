"""Callbacks of dltrain's own: the per-epoch metrics table and its one line per epoch in the log."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger("dltrain")


class EpochMetricsCSV(pl.Callback):
    """Appends one row per epoch (train and validation together) to metrics.csv and logs it as one line.

    Lightning's CSVLogger writes a row per logging call, so train and validation values land on
    separate rows; a table of one row per epoch is what users read and what the plots are drawn from.
    The header holds every column the module can log (TrainingModule.epoch_columns), written with the first
    row: an epoch without validation (trainer.check_val_every_n_epoch) leaves its cells empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._epoch_start, self._epoch_lr = 0.0, 0.0
        self._columns: list[str] | None = None  # metrics.csv's header, read or chosen at the first row

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"]  # epoch schedulers step before epoch end

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        # callback_metrics keeps the last values logged: a stage that did not run this epoch shows none
        stages = tuple(f"{stage}_" for stage in ("train", "val")
                       if pl_module.logged_epochs.get(stage) == trainer.current_epoch)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(stages)}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics, "lr": self._epoch_lr,
               "epoch_time_s": round(time.perf_counter() - self._epoch_start, 4)}
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if new_file:
            self._columns = ["epoch", "step", *pl_module.epoch_columns(), "lr", "epoch_time_s"]
        elif self._columns is None:  # a resumed run goes on with the header its file has
            with self.path.open(newline="") as handle:
                self._columns = next(csv.reader(handle))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self._columns, restval="", extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)
        # One write call for the whole row: a killed process leaves it complete or absent, never half of it.
        with self.path.open("ab") as handle:
            handle.write(text.getvalue().encode())
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info(f"epoch {trainer.current_epoch + 1}{of}  {shown}  ({row['epoch_time_s']:.2f}s)")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.4g}"
