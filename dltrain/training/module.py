"""The LightningModule: loss, L1 penalty, metrics, optimizer and scheduler around a network, all built elsewhere
(dltrain.training.builders) and handed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import Tensor, nn

from dltrain.data.spec import DataSpec
from dltrain.errors import ConfigError
from dltrain.training.metrics import metric_inputs, shape_outputs


PLATEAU_KEY = "dltrain_plateau"  # a checkpoint's pending plateau step: its epoch and the monitored value
EPOCH_SO_FAR_KEY = "dltrain_train_metrics"  # a checkpoint's training loss and metrics of its epoch so far


@dataclass
class Schedule:
    """A learning-rate scheduler for Lightning to step: factory(optimizer, total_steps) builds it (total_steps()
    counts the run's optimizer steps, asked only by a scheduler that needs them), stepped every `interval`
    ("epoch" or "step") `frequency` times; `monitor` is the metric a ReduceLROnPlateau follows."""

    factory: Callable[[torch.optim.Optimizer, Callable[[], int]], Any]
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None


class TrainingModule(pl.LightningModule):
    """Trains `network` with `loss` on the data `spec` describes, as lightning-hydra-template's module does:
    it receives built parts and reads no config.

    `record` (the resolved config and the data spec, plain containers) is saved as the hyperparameters, so a
    checkpoint holds what rebuilds the module (dltrain.training.restore.load_module, under the trust rules) and
    loads with weights_only; Lightning's load_from_checkpoint cannot rebuild it alone (it takes objects).

    Plain Lightning: automatic optimization, one batch per training_step. The Trainer owns gradient clipping
    (trainer.gradient_clip_val), accumulation (trainer.accumulate_grad_batches) and the learning-rate
    scheduler, which configure_optimizers returns with its interval, frequency and monitor.
    """

    def __init__(self, *, network: nn.Module, loss: nn.Module, metrics: torchmetrics.MetricCollection,
                 optimizer: Callable[..., torch.optim.Optimizer], spec: DataSpec, schedule: Schedule | None = None,
                 l1: float = 0.0, augment: Callable[[Tensor], Tensor] | None = None,
                 mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
                 compile_options: dict[str, Any] | None = None, record: dict[str, Any] | None = None,
                 resumed_settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(record or {}, logger=False)
        self.spec = spec
        self.model = network
        self.loss_fn = loss
        self.optimizer_factory, self.schedule = optimizer, schedule
        self.l1, self.augment, self.mix = float(l1), augment, mix  # mix: MixUp/CutMix, soft targets
        self.compile_options = compile_options or {}
        # A non-finite training loss stops the run (_update_metrics); the means need not scan for NaN.
        self.train_metrics, self.train_loss = metrics.clone(prefix="train_"), torchmetrics.MeanMetric("disable")
        self.val_metrics, self.val_loss = metrics.clone(prefix="val_"), torchmetrics.MeanMetric("disable")
        self.test_metrics, self.test_loss = metrics.clone(prefix="test_"), torchmetrics.MeanMetric("disable")
        self._pending = {stage: _Pending() for stage in ("train", "val", "test")}
        self.logged_epochs: dict[str, int] = {}  # stage -> the epoch its logged values are of (sanity check aside)
        self._plateau_pending: dict[str, Any] | None = None  # see on_save_checkpoint
        self._resumed = False  # set when Lightning restores a checkpoint into this module (see on_train_start)
        self.resumed_settings = dict(resumed_settings or {})  # optimizer keys a resume changes (on_train_start)
        self._stop_on_non_finite = True  # off while a tuner searches (see searching)
        # Temperature scaling's T (dltrain.training.calibration), which predictions divide the logits by: set
        # after training, and from the checkpoint's "calibration" entry when a module is loaded; training and
        # Lightning's loops never read it.
        self.temperature = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def epoch_columns(self, stages: tuple[str, ...] = ("train", "val")) -> list[str]:
        """Every value the stages log once an epoch, in the order metrics.csv holds them."""
        return [name for stage in stages for name in (f"{stage}_loss", *self._stage(stage)[1].keys())]

    def l1_penalty(self) -> Tensor:
        """Sum of absolute weights (biases and norms excluded)."""
        return sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)

    def _stage(self, stage: str) -> tuple[torchmetrics.MeanMetric, torchmetrics.MetricCollection]:
        return getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")

    def _step(self, batch: tuple[Tensor, Tensor], stage: str, soft: Tensor | None = None) -> Tensor:
        """Loss of a batch (against `soft` class probabilities where given: a mixed batch); its detached loss,
        outputs and (hard) targets wait for the stage's metrics (see _Pending)."""
        x, y = batch
        outputs = shape_outputs(self.spec, self(x))
        loss = self.loss_fn(outputs, y if soft is None else soft)
        pending = self._pending[stage]
        pending.add(loss.detach(), outputs.detach(), y)
        if pending.rows >= _Pending.CHUNK_ROWS:
            self._update_metrics(stage)
        return loss

    def _update_metrics(self, stage: str) -> None:
        """Hand the stage's waiting batches to its mean loss and metrics; a non-finite training loss stops the run."""
        pending = self._pending[stage]
        if not pending.rows:
            return
        losses = torch.stack(pending.losses)
        if stage == "train" and self._stop_on_non_finite and not torch.isfinite(losses).all():
            first = int((~torch.isfinite(losses)).nonzero()[0])
            batch = pending.first_batch + first
            raise FloatingPointError(f"loss became {losses[first].item()} at epoch {self.current_epoch + 1}, "
                                     f"batch {batch + 1}")
        mean_loss, metrics = self._stage(stage)
        # Each batch's mean counted once per sample, so the epoch value is the mean over samples whatever the
        # batch sizes (torchmetrics 1.9's MeanMetric ignores `weight` when nan_strategy="disable").
        mean_loss.update(losses.repeat_interleave(torch.tensor(pending.sizes, device=losses.device)))
        metrics.update(*metric_inputs(self.spec, torch.cat(pending.outputs), torch.cat(pending.targets)))
        pending.clear(pending.first_batch + len(losses))

    @contextmanager
    def searching(self) -> Iterator[None]:
        """While a Lightning tuner searches (dltrain.training.tuning): a non-finite loss is where a learning-rate
        range test ends, not a diverged run; afterwards the stages' values start afresh for the training."""
        self._stop_on_non_finite = False
        try:
            yield
        finally:
            self._stop_on_non_finite = True
            for stage in self._pending:
                mean_loss, metrics = self._stage(stage)
                mean_loss.reset()
                metrics.reset()
                self._pending[stage].clear()
            self.logged_epochs.clear()

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch values (reduced over every process by torchmetrics), then start afresh."""
        self._update_metrics(stage)
        mean_loss, metrics = self._stage(stage)
        if mean_loss.update_count == 0:  # nothing ran in this stage this epoch
            return
        self.log_dict({f"{stage}_loss": mean_loss.compute(), **metrics.compute()}, on_step=False, on_epoch=True)
        if not self.trainer.sanity_checking:
            self.logged_epochs[stage] = self.current_epoch
        mean_loss.reset()
        metrics.reset()
        self._pending[stage].clear()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = x if self.augment is None else self.augment(x)
        x, soft = (x, None) if self.mix is None else self.mix(x, y)
        loss = self._step((x, y), "train", soft)
        if self.l1 > 0:
            loss = loss + self.l1 * self.l1_penalty()
        if self.trainer.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            # Logged here, not in on_train_epoch_end: Lightning runs callbacks (metrics.csv) before that hook,
            # and a diverged epoch must stop before its weights are saved.
            self._log_epoch("train")
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """An epoch that max_steps ends early logs what it trained on at its last step (before metrics.csv)."""
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self._log_epoch("train")

    def on_train_epoch_end(self) -> None:
        """An epoch cut short otherwise (max_time, a callback) logs what it trained on here, before its
        checkpoints (its metrics.csv row, written earlier, leaves those cells empty)."""
        self._log_epoch("train")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the value a plateau scheduler follows: Lightning saves the epoch's checkpoint before it steps
        the schedulers, and on resuming has no metric left to take that epoch's plateau step with."""
        monitor = self.schedule.monitor if self.schedule else None
        value = self.trainer.callback_metrics.get(monitor) if monitor else None
        if self._plateau() is not None and value is not None:
            checkpoint[PLATEAU_KEY] = {"epoch": self.current_epoch, "value": float(value)}
        # A step checkpoint (every_n_train_steps) comes mid-epoch: the epoch's training loss and metrics so far
        # go with it, so a run resumed from it logs the epoch's values over all of its batches.
        self._update_metrics("train")
        checkpoint[EPOCH_SO_FAR_KEY] = {name: _metric_states(metric) for name, metric in
                                        (("loss", self.train_loss), ("metrics", self.train_metrics))}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed = True
        pending = checkpoint.get(PLATEAU_KEY)
        valid = isinstance(pending, dict) and isinstance(pending.get("epoch"), int) \
            and isinstance(pending.get("value"), float)
        self._plateau_pending = pending if valid else None
        so_far = checkpoint.get(EPOCH_SO_FAR_KEY)
        if isinstance(so_far, dict):  # absent in checkpoints older than it: the epoch's values start afresh
            for name, metric in (("loss", self.train_loss), ("metrics", self.train_metrics)):
                _load_metric_states(metric, so_far.get(name) or {}, self.device)

    def on_train_start(self) -> None:
        """A resumed run takes the plateau step its checkpoint's epoch had not taken yet (see
        on_save_checkpoint): the scheduler's own count of steps tells whether it had."""
        if self._resumed:
            self._apply_optimizer_settings()
        pending, scheduler = self._plateau_pending, self._plateau()
        self._plateau_pending = None
        if pending is not None and scheduler is not None and scheduler.last_epoch == pending["epoch"]:
            scheduler.step(pending["value"])

    def _apply_optimizer_settings(self) -> None:
        """The optimizer keys changed on resume (resumed_settings) set on the restored optimizer: Lightning
        restores the checkpoint's param_groups, whose values would otherwise silently win. Only the changed
        ones: the others (a scheduler's lr among them) go on from their restored state."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                for key, value in self.resumed_settings.items():
                    if key in group and key != "params":
                        group[key] = tuple(value) if isinstance(group[key], tuple) else value

    def _plateau(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
        """The run's ReduceLROnPlateau scheduler, if it has one."""
        if not self.trainer.lr_scheduler_configs:
            return None
        scheduler = self.trainer.lr_scheduler_configs[0].scheduler
        return scheduler if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else None

    def on_fit_start(self) -> None:
        """torch.compile the model where compile.enabled: in place (nn.Module.compile), so the state_dict keeps
        its keys and checkpoints load into a model that is not compiled."""
        options = self.compile_options
        if not options.get("enabled"):
            return
        if options["backend"] not in torch.compiler.list_backends(exclude_tags=()):
            raise ConfigError(f"compile.backend={options['backend']} is not a torch.compile backend here; "
                              f"one of {', '.join(torch.compiler.list_backends())}")
        self.model.compile(backend=options["backend"], mode=options.get("mode"))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        """The optimizer, and the scheduler with its interval, frequency and monitor, for Lightning to step."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.schedule is None:
            return optimizer
        scheduler = self.schedule.factory(optimizer, lambda: int(self.trainer.estimated_stepping_batches))
        config = {"scheduler": scheduler, "interval": self.schedule.interval, "frequency": self.schedule.frequency}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.schedule.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}


class _Pending:
    """A stage's batch losses, outputs and targets not yet given to torchmetrics.

    A torchmetrics update costs more than a small model's whole training step, so batches are handed over
    in chunks of CHUNK_ROWS rows and at the epoch's end: one update instead of hundreds, the same values.
    """

    CHUNK_ROWS = 32768

    def __init__(self) -> None:
        self.clear()

    def clear(self, first_batch: int = 0) -> None:
        """Start afresh; `first_batch` is the epoch's number of the next batch added."""
        self.losses, self.sizes, self.outputs, self.targets, self.rows = [], [], [], [], 0
        self.first_batch = first_batch

    def add(self, loss: Tensor, outputs: Tensor, targets: Tensor) -> None:
        self.losses.append(loss)
        self.sizes.append(len(targets))
        self.outputs.append(outputs)
        self.targets.append(targets)
        self.rows += len(targets)


def _metric_states(metric: torchmetrics.Metric | torchmetrics.MetricCollection) -> dict[str, Any]:
    """A metric's accumulated states (torchmetrics keeps them out of state_dict unless made persistent)."""
    metric.persistent(True)
    try:
        return dict(metric.state_dict())
    finally:
        metric.persistent(False)


def _load_metric_states(metric: torchmetrics.Metric | torchmetrics.MetricCollection, states: dict[str, Any],
                        device: torch.device) -> None:
    """Put states of _metric_states back (with torchmetrics' own loading) on the module's device."""
    metric.persistent(True)
    try:
        metric.load_state_dict(states, strict=False)
    finally:
        metric.persistent(False)
    metric.to(device)
