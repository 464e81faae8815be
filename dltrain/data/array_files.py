"""The user's numpy array files as a data source (data=arrays): a .npz, or a .npy of features and one of targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dltrain.data.arrays import ArrayData, as_frame, kind_of
from dltrain.data.spec import TABLE
from dltrain.errors import DataError
from dltrain.schema import Task


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
