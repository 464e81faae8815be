"""In-memory data as a source returns it (ArrayData), and the user's numpy array files as a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dltrain.data.spec import IMAGE, SEQUENCE, TABLE
from dltrain.errors import DataError
from dltrain.schema import Task

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
    path: str, targets_path: str | None = None, features_key: str = "x", targets_key: str = "y", task: Task | None = None
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
