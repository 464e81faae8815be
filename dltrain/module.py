"""The LightningModule: loss, L1 penalty, metrics, optimizer and scheduler around a model from config."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from dltrain.data.augment import build_augmentation
from dltrain.models.build import build_model
from dltrain.tasks import DataSpec, make_loss, make_metrics, metric_inputs, shape_outputs


class TrainingModule(pl.LightningModule):
    """Trains the configured model on the data described by `data_spec`.

    Hyperparameters are the resolved config and the data spec as plain containers, so a
    checkpoint rebuilds the module on its own and loads with weights_only.
    """

    def __init__(self, config: dict[str, Any], data_spec: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = DataSpec.from_dict(data_spec)
        self.model = build_model(config["model"], self.spec)
        self.loss_fn = make_loss(self.spec.task)
        self.l1 = float(config["regularization"]["l1"])
        self.augment = build_augmentation(config["data"].get("augment"), self.spec.kind, self.spec.input_shape)
        metrics = make_metrics(self.spec)
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augment training batches only, on the device they were moved to."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            return self.augment(x), y
        return batch

    def l1_penalty(self) -> Tensor:
        """Sum of absolute weights (biases and norms excluded)."""
        return sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str, metrics) -> Tensor:
        x, y = batch
        outputs = shape_outputs(self.spec, self(x))
        loss = self.loss_fn(outputs, y)
        metrics.update(*metric_inputs(self.spec, outputs.detach(), y))
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train", self.train_metrics)
        if self.l1 > 0:
            loss = loss + self.l1 * self.l1_penalty()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}")
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        config = self.hparams.config
        optimizer = instantiate(config["optimizer"])(self.parameters())
        sched_cfg = dict(config["scheduler"])
        if sched_cfg.get("scheduler") is None:
            return optimizer
        factory = dict(sched_cfg["scheduler"])
        if "total_steps" in factory and factory["total_steps"] is None:  # one-cycle: the whole run's steps
            factory["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(factory)(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": sched_cfg["interval"], "monitor": sched_cfg["monitor"]},
        }
