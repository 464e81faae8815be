"""The progress bar on a terminal: Lightning's tqdm bar, with log lines printed above it, never into it."""

from __future__ import annotations

import contextlib
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf
from tqdm.contrib.logging import logging_redirect_tqdm


class EpochProgressBar(TQDMProgressBar):
    """Lightning's TQDMProgressBar, one bar reused across epochs, labelled "epoch 3/30" (counted from 1, as
    the log lines are), its metrics left to the epoch's log line.

    While Lightning runs, the terminal's log handlers write through tqdm (tqdm's own logging_redirect_tqdm):
    a plain handler writing on the bar's line glues the two into one.
    """

    def __init__(self) -> None:
        super().__init__(leave=False)
        self._redirect = contextlib.ExitStack()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._redirect.enter_context(logging_redirect_tqdm())

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._redirect.close()
        super().teardown(trainer, pl_module, stage)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning's own steps for a reused bar (leave=False), with its label: calling it first would draw
        # "Epoch 0" before the label is changed.
        bar = self.train_progress_bar
        bar.reset()
        bar.total = convert_inf(self.total_train_batches)
        bar.initial = 0
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        bar.set_description(f"epoch {trainer.current_epoch + 1}{of}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {}  # the epoch's log line shows them, rounded the same way every epoch
