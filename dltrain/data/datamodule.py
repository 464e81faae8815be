"""Split in-memory data (seeded, stratified), scale it with training statistics, and serve it in batches."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader

from dltrain.data.arrays import ArrayData, TensorBatchDataset, keep_batch
from dltrain.errors import DataError
from dltrain.tasks import MULTICLASS, REGRESSION, DataSpec


class ArrayDataModule(pl.LightningDataModule):
    """Train, validation and test splits of an ArrayData, as whole tensors sliced into batches."""

    def __init__(
        self,
        data: ArrayData,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        x, y = data.features, data.targets
        if len(x) != len(y):
            raise DataError(f"data={data.name}: {len(x)} feature rows but {len(y)} targets; they must match")
        train, val, test = _split(data, val_fraction, test_fraction, seed)
        num_classes = 0
        if data.task != REGRESSION:
            num_classes = int(y.max()) + 1 if data.task == MULTICLASS else 2
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
        if data.tabular:
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            std[std == 0] = 1.0
        target_mean, target_std = 0.0, 1.0
        if data.task == REGRESSION:
            target_mean, target_std = float(y[train].mean()), float(y[train].std()) or 1.0
        self.spec = DataSpec(data.name, data.task, tuple(x.shape[1:]), num_classes, target_mean, target_std)

        def tensors(rows: np.ndarray) -> TensorBatchDataset:
            feats = torch.from_numpy((x[rows] - mean) / std).float()
            targets = torch.from_numpy(y[rows])
            if data.task == REGRESSION:
                targets = (targets.float() - target_mean) / target_std
            elif data.task != MULTICLASS:
                targets = targets.float()
            return TensorBatchDataset(feats, targets)

        self.train_set, self.val_set, self.test_set = tensors(train), tensors(val), tensors(test)

    def _loader(self, dataset: TensorBatchDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


def _split(data: ArrayData, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Row indices of train, validation and test; stratified by class for classification."""
    rows = np.arange(len(data.targets))
    stratify = data.targets if data.task != REGRESSION else None
    try:
        rest, test = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=stratify)
        rest_stratify = data.targets[rest] if stratify is not None else None
        train, val = train_test_split(
            rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=rest_stratify
        )
    except ValueError as exc:
        raise DataError(f"data={data.name} cannot be split into train/validation/test: {exc}") from None
    return train, val, test


def build_datamodule(data_cfg: dict, seed: int) -> ArrayDataModule:
    """The data module of a data config: its `source` builds the arrays, the other keys shape the batches."""
    from hydra.utils import instantiate

    options = {k: v for k, v in data_cfg.items() if k != "source"}
    return ArrayDataModule(instantiate(data_cfg["source"]), seed=seed, **options)
