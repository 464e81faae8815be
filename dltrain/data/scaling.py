"""Sequences standardized per feature channel with the training split's statistics, kept for prediction."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dltrain.errors import DataError


class SequenceScaler:
    """Each feature channel of (rows, steps, features) sequences: (value - mean) / std, with the mean and std
    of that channel over the training split's rows and steps (as a table's numeric columns are standardized:
    a network learns badly from values far from unit scale). Computed in float64, so no value overflows.

    `to_dict` gives plain containers, stored in the checkpoint's data spec so prediction scales as training did.
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    @classmethod
    def fit(cls, features: np.ndarray) -> "SequenceScaler":
        values = features.astype(np.float64).reshape(-1, features.shape[-1])
        mean, std = values.mean(axis=0), values.std(axis=0)
        return cls([float(m) for m in mean], [float(s) if s > 0 else 1.0 for s in std])

    def describe(self) -> str:
        shown = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(self.mean[:4], self.std[:4]))
        more = f", ... ({len(self.mean) - 4} more)" if len(self.mean) > 4 else ""
        return (f"{len(self.mean)} sequence feature(s) standardized with the training split's mean and std over "
                f"rows and steps (mean/std: {shown}{more})")

    def transform(self, features: np.ndarray, source: str = "the sequences") -> np.ndarray:
        """float32 standardized sequences; a value whose standardized form is beyond float32's range is refused."""
        out = (features.astype(np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        with np.errstate(over="ignore"):
            scaled = out.astype(np.float32)
        if not np.isfinite(scaled).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(scaled))[0])
            raise DataError(f"{source} at index {index}: {float(features[index]):g} is not a finite number once "
                            f"standardized with the training split's mean and std; give finite values of the "
                            f"training data's scale")
        return scaled

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, Any], features: int | None = None) -> "SequenceScaler":
        """The stored scaler; ValueError unless it is `features` finite means and positive finite stds."""
        mean, std = data.get("mean"), data.get("std")
        numbers = (lambda values: isinstance(values, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))
        if set(data) != {"mean", "std"} or not numbers(mean) or not numbers(std) or len(mean) != len(std) \
                or (features is not None and len(mean) != features) or not all(s > 0 for s in std):
            raise ValueError("expected mean and std: one finite number per feature, each std above 0")
        return cls(mean, std)
