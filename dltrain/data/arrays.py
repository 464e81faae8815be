"""In-memory data as arrays, user array files, and a data set that hands out batches by slicing tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler

from dltrain.data.spec import IMAGE, SEQUENCE, TABLE
from dltrain.errors import DataError

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = {"train": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST}


@dataclass
class ArrayData:
    """A whole data set as a source returns it.

    Tables keep their raw columns (a DataFrame) until the encoder is fitted on the training split;
    images (N, C, H, W) and sequences (N, T, F) are float arrays. `split` fixes each row's part
    (TRAIN, VAL, TEST, or -1 for "not fixed") where the source defines one.
    """

    name: str
    features: pd.DataFrame | np.ndarray
    targets: np.ndarray
    task: str
    kind: str = TABLE
    split: np.ndarray | None = None
    class_names: list[str] | None = None
    notes: list[tuple[int, str]] = field(default_factory=list)  # (logging level, what the source inferred)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.targets):
            raise DataError(f"data={self.name}: {len(self.features)} feature rows but {len(self.targets)} targets")
        if len(self.targets) == 0:
            raise DataError(f"data={self.name} has no rows")


def kind_of(features: np.ndarray) -> str:
    """table for (N, F), sequence for (N, T, F), image for (N, C, H, W)."""
    kinds = {2: TABLE, 3: SEQUENCE, 4: IMAGE}
    if features.ndim not in kinds:
        raise DataError(f"features of shape {features.shape} are neither a table, sequences nor images")
    return kinds[features.ndim]


def as_frame(features: np.ndarray, names: list[str] | None = None) -> pd.DataFrame:
    """A numeric feature matrix as a table with named columns."""
    return pd.DataFrame(features, columns=names or [f"x{i}" for i in range(features.shape[1])])


def array_files(
    path: str, targets_path: str | None = None, features_key: str = "x", targets_key: str = "y", task: str | None = None
) -> ArrayData:
    """Features and targets from one .npz (keys `features_key`, `targets_key`) or a .npy pair."""
    from dltrain.data.targets import encode_targets

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path: no such file {file} (expected a .npz, or a .npy with data.targets_path)")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as arrays:
                if features_key not in arrays or targets_key not in arrays:
                    raise DataError(f"{file}: expected arrays '{features_key}' and '{targets_key}', "
                                    f"found {', '.join(arrays.files) or 'none'} (set data.features_key/targets_key)")
                features, targets = arrays[features_key], arrays[targets_key]
        else:
            if not targets_path:
                raise DataError(f"data.path={file} is a .npy of features: set data.targets_path to the targets' .npy")
            features = np.load(file, allow_pickle=False)
            targets = np.load(Path(targets_path).expanduser(), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot be read as a numpy array file ({exc})") from None
    if len(features) != len(targets):
        raise DataError(f"{file}: {len(features)} feature rows but {len(targets)} targets; they must match")
    encoded, task, class_names = encode_targets(pd.Series(targets.reshape(len(targets))), task, str(file))
    if not (np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.bool_)):
        raise DataError(f"{file}: the features are of dtype {features.dtype}; expected numbers")
    features = features.astype(np.float32)
    kind = kind_of(features)
    return ArrayData(file.stem, as_frame(features) if kind == TABLE else features, encoded, task, kind,
                     class_names=class_names)


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


class TensorBatchSampler(BatchSampler):
    """Batches of row indices as tensor slices of the epoch's whole order.

    torch's BatchSampler builds each batch as a Python list, one index at a time (about 0.4 us a row here:
    more than a small model's training step costs per row), so this one takes the order whole. A random
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
