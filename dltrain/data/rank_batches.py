"""A split served in batches to several DDP ranks with every row in exactly one batch of one rank an epoch, and
the position a resumed run continues from: what a streamed table (dltrain.data.table_loader) and a prepared
LitData folder's training split under DDP (dltrain.data.litdata_source) share.

A split's rows, in the epoch's order, are cut into contiguous shares, one per rank (the ranks' shares differ by
at most a row), and each rank's share into K batches, K the same on every rank when training (DDP needs the
same steps on every rank), near-equal: no row is left out and none is read twice. A rank's batches are split
among its DataLoader workers in contiguous runs. The position (epoch, batches served by each worker) is the
dataset's state_dict, which torchdata's StatefulDataLoader keeps in checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info


def batch_bounds(total: int, rank: int, world: int, batch_size: int, equal: bool) -> np.ndarray:
    """The batches of rank `rank`'s share of `total` rows, as K+1 row bounds: K near-equal batches with K the
    same on every rank (`equal`, training), or batches of batch_size and a last smaller one."""
    low, high = total * rank // world, total * (rank + 1) // world
    if equal:
        count = max(1, math.ceil(math.ceil(total / world) / batch_size))
        return low + (high - low) * np.arange(count + 1) // count
    count = math.ceil((high - low) / batch_size)
    return low + np.minimum(np.arange(count + 1) * batch_size, high - low)


class RankBatches(IterableDataset):
    """The batches of one rank's share (`bounds`), each DataLoader worker serving its run of them, epoch after
    epoch; a subclass's __iter__ starts with next_pass()."""

    def __init__(self, bounds: np.ndarray, first_epoch: int) -> None:
        """`first_epoch`: the trainer's epoch when the loader is made (a run resumed at an epoch's end goes on with
        the next epoch's order); each pass after it is the next epoch, and a restored state says its own."""
        self.bounds = bounds
        self.epoch, self.done, self._resume = first_epoch - 1, 0, None

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["done"]))

    def next_pass(self) -> tuple[np.ndarray, int]:
        """Start a pass: this worker's batches (numbers into bounds) and how many of them were served already
        (a restored position), the epoch set."""
        worker = get_worker_info()
        number, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        if self._resume is not None:
            (self.epoch, skip), self._resume = self._resume, None
        else:
            self.epoch, skip = self.epoch + 1, 0
        self.done = skip
        count = len(self)
        return np.arange(count * number // workers, count * (number + 1) // workers), skip
