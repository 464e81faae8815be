"""The LightningModule: loss, L1 penalty, metrics, optimizer and scheduler around a model from config."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from hydra.utils import instantiate
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

from dltrain.data.augment import build_augmentation
from dltrain.errors import ConfigError
from dltrain.models.build import build_model
from dltrain.losses import build_loss
from dltrain.tasks import DataSpec, make_metrics, metric_inputs, shape_outputs


class TrainingModule(pl.LightningModule):
    """Trains the configured model on the data described by `data_spec`.

    Hyperparameters are the resolved config and the data spec as plain containers, so a
    checkpoint rebuilds the module on its own and loads with weights_only.

    Optimization is manual: each training_step call trains on a group of batches (see training_step),
    so gradient clipping and learning-rate schedules are applied here rather than by the Trainer.
    """

    def __init__(self, config: dict[str, Any], data_spec: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = DataSpec.from_dict(data_spec)
        self.model = build_model(config["model"], self.spec)
        self.loss_fn = build_loss(config.get("loss"), self.spec)
        self.l1 = float(config["regularization"]["l1"])
        self.augment = build_augmentation(config["data"].get("augment"), self.spec.kind, self.spec.input_shape)
        metrics = make_metrics(self.spec)
        # A non-finite training loss stops the run in training_step; the means need not scan for NaN.
        self.train_metrics, self.train_loss = metrics.clone(prefix="train_"), torchmetrics.MeanMetric("disable")
        self.val_metrics, self.val_loss = metrics.clone(prefix="val_"), torchmetrics.MeanMetric("disable")
        self.test_metrics, self.test_loss = metrics.clone(prefix="test_"), torchmetrics.MeanMetric("disable")
        self._pending = {stage: _Pending() for stage in ("train", "val", "test")}
        self.automatic_optimization = False
        self.batch_size = int(config["data"]["batch_size"])
        self.clip_value = config["trainer"].get("gradient_clip_val")
        self.clip_algorithm = config["trainer"].get("gradient_clip_algorithm") or "norm"
        self._direct = False  # set at the start of training: see _direct_updates_fit

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def l1_penalty(self) -> Tensor:
        """Sum of absolute weights (biases and norms excluded)."""
        return sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)

    def _stage(self, stage: str) -> tuple[torchmetrics.MeanMetric, torchmetrics.MetricCollection]:
        return getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Loss of a batch; its detached loss, outputs and targets wait for the stage's metrics (see _Pending)."""
        x, y = batch
        outputs = shape_outputs(self.spec, self(x))
        loss = self.loss_fn(outputs, y)
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
        if stage == "train" and not torch.isfinite(losses).all():
            first = int((~torch.isfinite(losses)).nonzero()[0])
            step = self.global_step - (len(losses) - 1 - first)
            raise FloatingPointError(f"loss became {losses[first].item()} at epoch {self.current_epoch}, step {step}")
        mean_loss, metrics = self._stage(stage)
        # Each batch's mean counted once per sample, so the epoch value is the mean over samples whatever the
        # batch sizes (torchmetrics 1.9's MeanMetric ignores `weight` when nan_strategy="disable").
        mean_loss.update(losses.repeat_interleave(torch.tensor(pending.sizes, device=losses.device)))
        metrics.update(*metric_inputs(self.spec, torch.cat(pending.outputs), torch.cat(pending.targets)))
        pending.clear()

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch values (reduced over every process by torchmetrics), then start afresh."""
        self._update_metrics(stage)
        mean_loss, metrics = self._stage(stage)
        self.log_dict({f"{stage}_loss": mean_loss.compute(), **metrics.compute()}, on_step=False, on_epoch=True)
        mean_loss.reset()
        metrics.reset()

    def training_step(self, group: tuple[Tensor, Tensor], call_idx: int) -> None:
        """Train on each batch_size batch of the group in turn, one optimizer step each.

        Lightning's work around a training_step call (hooks, loop bookkeeping, progress) costs more than
        a small model's whole step on the CPU; a group of batches per call pays it once for all of them.
        The batches, their order and the updates are those of one batch per call, and backward and the
        optimizer step go through Lightning (mixed-precision scaling, DDP gradient sync, global_step, the
        per-step callback hooks), or straight to torch where those layers would do nothing but count the
        step (see _direct_updates_fit).
        """
        optimizer = self.optimizers()
        per_step = self._scheduler("step")
        for x, y in zip(*(part.split(self.batch_size) for part in group)):
            loss = self._step((x if self.augment is None else self.augment(x), y), "train")
            if self.l1 > 0:
                loss = loss + self.l1 * self.l1_penalty()
            if self._direct:
                self._direct_update(loss, optimizer)
            else:
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            if per_step is not None:
                per_step.step()
        if self.trainer.is_last_batch:
            # Logged here, not in on_train_epoch_end: Lightning runs callbacks (metrics.csv, checkpoints) before
            # that hook, and a diverged epoch must stop before its weights are saved.
            self._log_epoch("train")

    def on_fit_start(self) -> None:
        """torch.compile the model where compile.enabled: in place (nn.Module.compile), so the state_dict keeps
        its keys and checkpoints load into a model that is not compiled."""
        options = self.hparams.config.get("compile") or {}
        if not options.get("enabled"):
            return
        if options["backend"] not in torch.compiler.list_backends(exclude_tags=()):
            raise ConfigError(f"compile.backend={options['backend']} is not a torch.compile backend here; "
                              f"one of {', '.join(torch.compiler.list_backends())}")
        self.model.compile(backend=options["backend"], mode=options.get("mode"))

    def on_train_start(self) -> None:
        self._direct = self._direct_updates_fit()

    def _direct_updates_fit(self) -> bool:
        """Whether backward and the optimizer step may skip Lightning's per-step layers (about 0.2 ms a step
        on a small CPU, as much as the model's own step): one device, plain 32-bit precision, and no callback
        listening to the hooks those layers call (on_before_backward, on_after_backward,
        on_before_optimizer_step). Everything else those layers do is then a no-op."""
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        trainer = self.trainer
        return (type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision
                and not any(getattr(type(callback), hook) is not getattr(pl.Callback, hook)
                            for callback in trainer.callbacks for hook in hooks))

    def _direct_update(self, loss: Tensor, optimizer: LightningOptimizer) -> None:
        """One update as manual_backward and optimizer.step make it where _direct_updates_fit: the step is
        counted by Lightning's own bookkeeping (global_step, checkpoints, resume) around the plain step."""
        raw = optimizer.optimizer
        raw.zero_grad()
        loss.backward()
        self.on_before_optimizer_step(raw)
        optimizer._on_before_step()
        raw.step()
        optimizer._on_after_step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip gradients (trainer.gradient_clip_val) after mixed precision has unscaled them."""
        if self.clip_value:
            self.clip_gradients(optimizer, self.clip_value, self.clip_algorithm)

    def on_train_epoch_end(self) -> None:
        """Step an epoch-interval learning-rate schedule: after validation, before the epoch's checkpoint."""
        scheduler = self._scheduler("epoch")
        if scheduler is None:
            return
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
            return
        monitor = self.hparams.config["scheduler"]["monitor"]
        value = self.trainer.callback_metrics.get(monitor)
        if value is None:
            raise ConfigError(f"scheduler=plateau follows {monitor}, which epoch {self.current_epoch} did not log "
                              "(it needs a validation pass every epoch)")
        scheduler.step(value)

    def _scheduler(self, interval: str) -> Any:
        """The learning-rate scheduler that steps at this interval (step or epoch), if any. (Under manual
        optimization Lightning keeps the scheduler but not its interval, so that comes from the config.)"""
        if self.hparams.config["scheduler"].get("interval") != interval:
            return None
        return self.lr_schedulers()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        config = self.hparams.config
        optimizer = instantiate(config["optimizer"])(self.parameters())
        sched_cfg = dict(config["scheduler"])
        if sched_cfg.get("scheduler") is None:
            return optimizer
        factory = dict(sched_cfg["scheduler"])
        if "total_steps" in factory and factory["total_steps"] is None:  # one-cycle: the whole run's steps
            factory["total_steps"] = self._optimizer_steps()
        scheduler = instantiate(factory)(optimizer)
        return {
            "optimizer": optimizer,
            # interval and monitor are applied by the module (manual optimization), not by Lightning
            "lr_scheduler": {"scheduler": scheduler, "interval": sched_cfg["interval"]},
        }

    def _optimizer_steps(self) -> int:
        """Optimizer steps of the whole run. Lightning counts training_step calls; where a call holds several
        batches, every epoch steps once per batch of this process's share of the rows."""
        steps = int(self.trainer.estimated_stepping_batches)
        batches = self.trainer.train_dataloader.batch_sampler
        if batches.batch_size > self.batch_size:
            steps = math.ceil(len(batches.sampler) / self.batch_size) * self.trainer.max_epochs
        return steps


class _Pending:
    """A stage's batch losses, outputs and targets not yet given to torchmetrics.

    A torchmetrics update costs more than a small model's whole training step, so batches are handed over
    in chunks of CHUNK_ROWS rows and at the epoch's end: one update instead of hundreds, the same values.
    """

    CHUNK_ROWS = 32768

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.losses, self.sizes, self.outputs, self.targets, self.rows = [], [], [], [], 0

    def add(self, loss: Tensor, outputs: Tensor, targets: Tensor) -> None:
        self.losses.append(loss)
        self.sizes.append(len(targets))
        self.outputs.append(outputs)
        self.targets.append(targets)
        self.rows += len(targets)
