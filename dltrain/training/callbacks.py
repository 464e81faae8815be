"""Callbacks of dltrain's own: the per-epoch metrics table and its log line, the random generators' state in
each checkpoint, and the checkpoint an interrupt saves (SIGTERM left to Lightning while fit runs)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dltrain.errors import Terminated

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

    def state_dict(self) -> dict[str, Any]:
        """The epoch's learning rate and seconds so far: a run resumed mid-epoch (from a step checkpoint) starts
        no epoch to read them at."""
        return {"epoch_lr": self._epoch_lr, "epoch_seconds": time.perf_counter() - self._epoch_start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch_lr = state_dict.get("epoch_lr", self._epoch_lr)
        self._epoch_start = time.perf_counter() - state_dict.get("epoch_seconds", 0.0)

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


class RngState(pl.Callback):
    """Stores the random generators' states in each checkpoint and restores them on resume.

    Shuffling, dropout and augmentation draw from torch's generator; restoring it makes a resumed run
    continue exactly as the uninterrupted one would.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class InterruptCheckpoint(pl.Callback):
    """On Ctrl-C or SIGTERM: save checkpoints/interrupted.ckpt and note the interruption.

    Lightning ignores further Ctrl-C while it shuts down; here a second Ctrl-C stops at once (this callback
    comes first, so its handler replaces Lightning's SIG_IGN before any other callback's on_exception runs).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signal_name: str | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        signal.signal(signal.SIGINT, _stop_now)
        self.signal_name = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT"
        # A save, not a load: Lightning's weights_only=False writes the whole training state (said explicitly,
        # or Lightning logs its default); the file is read back only by read_checkpoint's weights_only load.
        trainer.save_checkpoint(self.path, weights_only=False)


def _stop_now(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


@contextmanager
def sigterm_to_lightning() -> Iterator[None]:
    """While fit runs, SIGTERM is Lightning's: its handler stops at the next batch and InterruptCheckpoint saves.
    Lightning's handler also calls the handler it found (the dltrain command's, which raises to end the
    command), so that one is set aside for the fit: in its place, one that raises only until Lightning's is in."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield  # no handler of a command's to set aside (in-process runs), or not ours to set (a thread)
        return
    signal.signal(signal.SIGTERM, _terminate_until_lightning_handles)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_until_lightning_handles(signum: int, frame: Any) -> None:
    if signal.getsignal(signal.SIGTERM) is _terminate_until_lightning_handles:  # fit has not set Lightning's yet
        raise Terminated("terminated by SIGTERM")
