"""Batches served by slicing whole tensors: a data set, a batch sampler and the collate function that go together."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler


def joined(batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(inputs, targets) batches as one pair of tensors (empty ones for no batch)."""
    pairs = list(batches)
    if not pairs:
        return torch.empty(0), torch.empty(0)
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


class TensorBatchDataset(Dataset):
    """A data set over whole tensors: a batch of indices is served by one slice, not per-sample Python work."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.features[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # index_select, not features[index]: the same rows, but advanced indexing's kernel runs 20-35x slower
        # when another process shares the cores (benchmarks/data_loading.py)
        index = torch.as_tensor(indices)
        return torch.index_select(self.features, 0, index), torch.index_select(self.targets, 0, index)

    def labelled_batches(self, rows: int | None = None, batch_size: int = 1024):
        """The first `rows` rows (all when None) in order, as (features, targets) batches."""
        return zip(self.features[:rows].split(batch_size), self.targets[:rows].split(batch_size))

    def labelled_head(self, rows: int | None) -> tuple[Tensor, Tensor]:
        """The features and targets of the first `rows` rows (all when None)."""
        return self.features[:rows], self.targets[:rows]


class TensorBatchSampler(BatchSampler):
    """Batches of row indices as tensor slices of the epoch's whole order.

    torch's BatchSampler builds each batch as a Python list, one index at a time (for a small model, more than
    its training step costs per row: benchmarks/data_loading.py), so this one takes the order whole. A random
    order is the very permutation RandomSampler would draw (its seed from the global generator, or its own
    generator), so runs do not change; any other sampler (Lightning's DistributedSampler, which Lightning
    puts in through the `sampler` argument under DDP) is read into one array.
    """

    def __iter__(self):
        order = self._order()
        if self.drop_last:
            order = order[: len(order) - len(order) % self.batch_size]
        yield from order.split(self.batch_size)

    def _order(self) -> Tensor:
        sampler = self.sampler
        rows = len(getattr(sampler, "data_source", ()))
        if type(sampler) is SequentialSampler:
            return torch.arange(rows)
        if type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == rows:
            generator = sampler.generator
            if generator is None:  # as RandomSampler.__iter__ draws it
                generator = torch.Generator()
                generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            return torch.randperm(rows, generator=generator)
        return torch.from_numpy(np.fromiter(sampler, dtype=np.int64))


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for TensorBatchDataset: its batches are already stacked."""
    return batch

