"""The rows of each split (seeded, stratified by class) and the loss's weight of each class from the training
rows: the same for every data path (in memory, streamed image folders, LitData's prepared folders)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
from sklearn.model_selection import train_test_split

from dltrain.data.arrays import TEST, TRAIN, VAL, ArrayData
from dltrain.data.spec import REGRESSION
from dltrain.data.targets import class_weights_of
from dltrain.errors import DataError

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # row indices of train, validation and test


def loss_class_weights(choice: str | list[float] | None, data: ArrayData, train_targets: np.ndarray,
                       num_classes: int) -> list[float] | None:
    """The loss's weight of each class: none, given, or balanced (rows / (classes * rows of the class)
    over the training split, scikit-learn's formula)."""
    counts = np.bincount(train_targets.astype(np.int64), minlength=num_classes) if data.task != REGRESSION else None
    return class_weights_of(choice, data.task, counts, f"data={data.name}")


def split_rows(data: ArrayData, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Row indices of train, validation and test.

    Parts the source fixed are kept; missing ones are drawn (seeded, stratified by class) from the
    rows left for training: the test part as test_fraction of all rows, then validation as val_fraction of the
    rows the test part left, whatever fixed it (drawn, a test file, a split column). A share of all rows would
    ask more than a small training file holds when a large test file comes with it (UCR's ItalyPowerDemand:
    110 of its 67 training rows).
    """
    rows = np.arange(len(data.targets))
    fixed = data.split if data.split is not None else np.full(len(rows), -1)
    pool = rows[(fixed == TRAIN) | (fixed == -1)]
    test, val = rows[fixed == TEST], rows[fixed == VAL]
    classify = data.task != REGRESSION
    if not len(test):
        pool, test = _draw(data, pool, test_fraction, seed, classify, "test")
    if not len(val):
        pool, val = _draw(data, pool, val_fraction, seed, classify, "validation")
    return pool, val, test


def smallest_class(data: ArrayData, labels: np.ndarray) -> tuple[Any, int]:
    """The class among `labels` with the fewest rows, by its name where the data has names, and its count."""
    values, counts = np.unique(labels, return_counts=True)
    name = values[counts.argmin()]
    return (data.class_names[name] if data.class_names else name), int(counts.min())


def _draw(data: ArrayData, pool: np.ndarray, share: float, seed: int, classify: bool, part: str):
    labels = data.targets[pool] if classify else None
    if classify:
        shown, count = smallest_class(data, labels)
        if count < 2:
            raise DataError(
                f"data={data.name}: class '{shown}' has {count} row(s) left for training; a stratified "
                f"{part} split needs at least 2 per class (add rows or drop that class)"
            )
    try:
        return train_test_split(pool, test_size=share, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DataError(f"data={data.name}: cannot draw the {part} split ({exc})") from None


class SplitLoaders(pl.LightningDataModule):
    """A data module whose train, validation and test loaders come from one `_loader(split, shuffle)`, over its
    `train_set`, `val_set` and `test_set` (training shuffled)."""

    augments_images = False  # the module augments whole batches (see training.builders.build_module)

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, shuffle=False)

