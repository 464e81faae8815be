"""Targets: the task they imply, and class labels as indices 0..C-1 with their names kept."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION
from dltrain.errors import DataError

MAX_INFERRED_CLASSES = 20
TASK_CHOICES = (None, "classification", MULTICLASS, BINARY, REGRESSION)


def infer_task(targets: pd.Series) -> str:
    """Text, booleans or few integer values are classes; other numbers are a regression target."""
    values = targets.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return BINARY if values.nunique() == 2 else MULTICLASS
    whole = np.all(np.mod(values.to_numpy(dtype="float64"), 1) == 0)
    if whole and values.nunique() <= MAX_INFERRED_CLASSES:
        return BINARY if values.nunique() == 2 else MULTICLASS
    return REGRESSION


def label_keys(targets: pd.Series) -> np.ndarray:
    """Class labels as they are sorted and named: numbers as numbers, anything else as text."""
    labels = targets.to_numpy()
    return labels.astype(str) if labels.dtype == object else labels


def encode_targets(targets: pd.Series, task: str | None, source: str) -> tuple[np.ndarray, str, list[str] | None]:
    """(encoded targets, task, class names); `task` may be None (inferred) or "classification"."""
    if task not in TASK_CHOICES:
        raise DataError(f"data.task={task!r} is not a task: expected classification, multiclass, binary, regression or null")
    if task is None:
        task = infer_task(targets)
    if task == REGRESSION:
        # NaN where a value is not a number (Arrow-backed columns keep NaN apart from missing: test both)
        numbers = pd.to_numeric(targets, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(numbers) & targets.notna().to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: target value {targets.iloc[row]!r} in row {row + 1} is not a number, "
                            "but the task is regression")
        return numbers.astype(np.float32), task, None
    names, codes = np.unique(label_keys(targets), return_inverse=True)
    if task == "classification":
        task = BINARY if len(names) == 2 else MULTICLASS
    if task == BINARY and len(names) != 2:
        raise DataError(f"{source}: task binary needs 2 classes, the target has {len(names)}")
    if len(names) < 2:
        raise DataError(f"{source}: the target has a single class ({names[0]}); classification needs at least 2")
    return codes.astype(np.int64), task, [str(n) for n in names]


def class_weights_of(choice: str | list[float] | None, task: str, counts: np.ndarray | None, name: str
                     ) -> list[float] | None:
    """loss_class_weights from the training rows per class (`counts`), as a streamed table's survey counts them."""
    if choice is None:
        return None
    if task == REGRESSION:
        raise DataError(f"data.class_weights is for classes, but {name} is regression: drop it")
    num_classes = len(counts)
    if choice == "balanced":
        if (counts == 0).any():
            raise DataError(f"data.class_weights=balanced: class {int(np.argmin(counts))} has no training rows")
        return [float(w) for w in counts.sum() / (num_classes * counts.astype(np.float64))]
    if isinstance(choice, str) or len(choice) != num_classes:
        raise DataError(f"data.class_weights={choice!r}: expected balanced or {num_classes} numbers, "
                        f"one per class (e.g. [{', '.join(['1.0'] * num_classes)}])")
    return [float(w) for w in choice]
