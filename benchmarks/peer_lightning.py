"""The peer baseline: a LightningModule as lightning-hydra-template writes one (src/models/mnist_module.py).

The loss and torchmetrics objects logged with self.log at every step, a DataLoader over a TensorDataset, and
Lightning's ModelCheckpoint and EarlyStopping: what a Lightning user writes by hand. benchmarks/performance.py
trains it on the same model, rows, batch size and epochs as dltrain.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class PeerModule(pl.LightningModule):
    def __init__(self, net: torch.nn.Module, num_classes: int, lr: float = 1e-3) -> None:
        super().__init__()
        self.net, self.lr = net, lr
        self.criterion = torch.nn.CrossEntropyLoss()
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.train_loss, self.val_loss = torchmetrics.MeanMetric(), torchmetrics.MeanMetric()

    def model_step(self, batch):
        x, y = batch
        logits = self.net(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def training_step(self, batch, batch_idx: int):
        loss, preds, targets = self.model_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, targets)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, targets = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def peer_trainer_and_loaders(net, num_classes, train_xy, val_xy, batch_size: int, epochs: int, root: str,
                             callbacks: list) -> tuple[pl.Trainer, PeerModule, DataLoader, DataLoader]:
    """The peer module, its loaders and a Trainer with ModelCheckpoint and EarlyStopping on val/loss."""
    module = PeerModule(net, num_classes)
    train = DataLoader(TensorDataset(*train_xy), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(*val_xy), batch_size=batch_size)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root,
                         callbacks=[ModelCheckpoint(root, monitor="val/loss", save_last=True),
                                    EarlyStopping("val/loss", patience=epochs), *callbacks])
    return trainer, module, train, val
