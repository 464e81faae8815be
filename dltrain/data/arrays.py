"""A whole data set in memory, as every source returns it (ArrayData), with its split markers and kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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
    text: dict[str, Any] | None = None  # text: the column and TextEncoder.fit's settings
    # What the source decided about the user's rows and columns, for results.json (tables: excluded_columns,
    # dropped_rows)
    facts: dict[str, Any] = field(default_factory=dict)

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
