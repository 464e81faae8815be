"""In-memory data as arrays, and a data set that hands out whole batches by slicing tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class ArrayData:
    """Features and targets of a whole data set, as a source returns them."""

    name: str
    features: np.ndarray
    targets: np.ndarray
    task: str
    tabular: bool = True  # tabular features are standardized with training-split statistics


class TensorBatchDataset(Dataset):
    """A data set over whole tensors: a batch of indices is served by one slice, not per-sample Python work."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.features[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.features[index], self.targets[index]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for TensorBatchDataset: its batches are already stacked."""
    return batch
