"""The user's numpy array files as a data source (data=arrays): a .npz, or a .npy of features and one of targets;
optionally separate validation and test files of the same form, whose split is then kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dltrain.data.arrays import TEST, TRAIN, VAL, ArrayData, as_frame, kind_of
from dltrain.data.spec import TABLE
from dltrain.errors import DataError
from dltrain.config.schema import Task


def array_files(
    path: str,
    targets_path: str | None = None,
    features_key: str = "x",
    targets_key: str = "y",
    task: Task | None = None,
    val_path: str | None = None,
    val_targets_path: str | None = None,
    test_path: str | None = None,
    test_targets_path: str | None = None,
) -> ArrayData:
    """Features and targets from one .npz (keys `features_key`, `targets_key`) or a .npy pair. With `val_path`
    or `test_path` (a .npz with the same keys, or a .npy with its `*_targets_path`) those rows are the
    validation or test split and `path`'s rows are for training."""
    from dltrain.data.targets import encode_targets

    parts = [(read_pair(path, targets_path, features_key, targets_key, "data.path", "data.targets_path"),
              TRAIN if (val_path or test_path) else -1)]
    for extra, extra_targets, part, role in ((val_path, val_targets_path, VAL, "data.val_path"),
                                             (test_path, test_targets_path, TEST, "data.test_path")):
        if extra_targets and not extra:
            raise DataError(f"{role.replace('path', 'targets_path')} is set without {role}: set {role} to the "
                            "features' .npy, or drop it")
        if extra:
            pair = read_pair(extra, extra_targets, features_key, targets_key, role, role.replace("path", "targets_path"))
            first, (features, _, file) = parts[0][0], pair
            if features.shape[1:] != first[0].shape[1:]:
                raise DataError(f"{role}={file}: rows of shape {features.shape[1:]}, but data.path={first[2]} has "
                                f"{first[0].shape[1:]}; every split needs the same shape")
            parts.append((pair, part))
    features = np.concatenate([pair[0] for pair, _ in parts])
    targets = np.concatenate([pair[1].reshape(len(pair[1])) for pair, _ in parts])
    file = parts[0][0][2]
    encoded, task, class_names = encode_targets(pd.Series(targets), task, str(file))
    split = np.concatenate([np.full(len(pair[0]), part) for pair, part in parts]) if len(parts) > 1 else None
    kind = kind_of(features)
    return ArrayData(file.stem, as_frame(features) if kind == TABLE else features, encoded, task, kind, split=split,
                     class_names=class_names)


def read_pair(path: str, targets_path: str | None, features_key: str, targets_key: str, role: str,
              targets_role: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """(float32 features, targets, file) of one .npz or .npy pair; `role` names the key that gave the file.
    Refused: a missing file or key, rows that do not match, and features that are not finite float32 numbers."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{role}: no such file {file} (expected a .npz, or a .npy with {targets_role})")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as arrays:
                if features_key not in arrays or targets_key not in arrays:
                    raise DataError(f"{file}: expected arrays '{features_key}' and '{targets_key}', "
                                    f"found {', '.join(arrays.files) or 'none'} (set data.features_key/targets_key)")
                features, targets = arrays[features_key], arrays[targets_key]
            names = (features_key, targets_key)
        else:
            if not targets_path:
                raise DataError(f"{role}={file} is a .npy of features: set {targets_role} to the targets' .npy")
            features = np.load(file, allow_pickle=False)
            targets_file = Path(targets_path).expanduser()
            if not targets_file.is_file():
                raise DataError(f"{targets_role}: no such file {targets_file}")
            targets = np.load(targets_file, allow_pickle=False)
            names = ("features", f"targets ({targets_file.name})")
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot be read as a numpy array file ({exc})") from None
    if features.ndim == 0 or targets.ndim == 0:
        raise DataError(f"{file}: expected rows of features and one target per row, found a single value")
    if len(features) != len(targets):
        raise DataError(f"{file}: {len(features)} feature rows but {len(targets)} targets; they must match")
    if not (np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.bool_)):
        raise DataError(f"{file}: the features are of dtype {features.dtype}; expected numbers")
    check_finite(features, f"{file}: array '{names[0]}'")
    if np.issubdtype(targets.dtype, np.number):
        check_finite(targets, f"{file}: array '{names[1]}'")
    return features.astype(np.float32), targets, file


def check_finite(values: np.ndarray, named: str) -> None:
    """Refuse a NaN, an infinity or a number beyond float32's range (it would become one), naming the first
    one's index: such a value trains to NaN or to nothing, never to a number to trust."""
    if not np.issubdtype(values.dtype, np.floating):  # integers and booleans are always finite float32s
        return
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(values.astype(np.float32, copy=False))
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = values[index]
    why = "is NaN" if np.isnan(value) else ("is infinite" if np.isinf(value) else
                                           "is beyond float32's range (about 3.4e38)")
    raise DataError(f"{named} at index {index if len(index) > 1 else index[0]}: {float(value):g} {why}; every "
                    "value must be a finite number (fill or drop the rows that lack one)")
