"""How raw table columns become model features, fitted on the training split and kept for prediction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dltrain.errors import DataError


class TableEncoder:
    """Numeric columns: missing values imputed with the training mean, then standardized with training
    statistics. Other columns: one-hot over the training split's categories (unseen or missing: all zeros).

    `to_dict` gives plain containers, stored in the checkpoint so prediction encodes exactly as training did.
    """

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> "TableEncoder":
        columns = []
        for name in frame.columns:
            values = frame[name]
            if is_numeric(values):
                numbers = values.astype("float64")
                mean, std = float(numbers.mean()), float(numbers.std(ddof=0))
                columns.append({"name": str(name), "kind": "numeric", "mean": 0.0 if np.isnan(mean) else mean,
                                "std": std if std > 0 else 1.0})
            else:
                categories = sorted(str(v) for v in values.dropna().unique())
                columns.append({"name": str(name), "kind": "categorical", "categories": categories})
        return cls(columns)

    def describe(self, rows: int) -> tuple[list[str], list[str]]:
        """What fit inferred, a line per decision, and warnings: a text column with so many distinct values
        (over 50, or over half of the `rows` training rows) that it is likely an identifier or free text."""
        numeric = [c["name"] for c in self.columns if c["kind"] == "numeric"]
        lines = [f"{len(numeric)} numeric column(s) standardized with the training split's mean and std: "
                 f"{_listed(numeric)}"] if numeric else []
        warnings = []
        for column in self.columns:
            if column["kind"] != "categorical":
                continue
            width = len(column["categories"])
            if width <= 50 and width <= rows / 2:
                lines.append(f"text column '{column['name']}': {width} categories, one-hot encoded into {width} inputs")
            else:
                warnings.append(f"column '{column['name']}' has {width} distinct values in {rows} training rows, "
                                f"one-hot encoded into {width} inputs: if it is an identifier or free text, leave it out with "
                                "data.features=[...]")
        return lines, warnings

    @property
    def num_features(self) -> int:
        return sum(1 if c["kind"] == "numeric" else len(c["categories"]) for c in self.columns)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 feature matrix of `frame`, which must hold every fitted column."""
        missing = [c["name"] for c in self.columns if c["name"] not in frame.columns]
        if missing:
            raise KeyError(f"missing columns: {', '.join(missing)}")
        out = np.empty((len(frame), self.num_features), dtype=np.float32)
        start = 0  # filled column by column: no float64 copy of the whole table
        for column in self.columns:
            values = frame[column["name"]]
            if column["kind"] == "numeric":
                numbers = as_numbers(values)
                out[:, start] = (np.where(np.isnan(numbers), column["mean"], numbers) - column["mean"]) / column["std"]
                start += 1
            else:
                width = len(column["categories"])
                codes = pd.Categorical(values.astype("string"), categories=column["categories"]).codes
                out[:, start:start + width] = 0.0
                known = codes >= 0
                out[np.flatnonzero(known), start + codes[known]] = 1.0
                start += width
        return out

    def check(self, frame: pd.DataFrame, missing: str, on_unknown: str, source: str,
              where: Callable[[int], str] | None = None, every: bool = False) -> dict[int, str]:
        """Refuse new rows that training would have refused, naming column and row (`where(row)`; by default
        the line of `source`, line 1 being the header): a word in a numeric column, an infinite number or one
        that overflows float32 once standardized, an empty cell where training dropped such rows
        (missing=drop), and with on_unknown=error a category the training split never had. With every=True
        nothing is raised: each faulty row's first fault is returned ({row: why}), for row-by-row prediction."""
        where = where or (lambda row: f"{source} line {row + 2}")
        faults: dict[int, str] = {}
        limit = float(np.finfo(np.float32).max)
        for column in self.columns:
            values = frame[column["name"]]
            present = values.notna().to_numpy(dtype=bool)
            found: list[tuple[np.ndarray, str]] = []
            if missing == "drop":
                found.append((~present, "is empty, and the model was trained with data.missing=drop (rows with a "
                                        "missing value left out): fill it in"))
            if column["kind"] == "numeric":
                numbers = as_numbers(values)
                infinite = np.isinf(numbers)
                with np.errstate(over="ignore", invalid="ignore"):
                    scaled = (numbers - column["mean"]) / column["std"]
                found += [(np.isnan(numbers) & present, "is not a number, and the column is numeric"),
                          (infinite, "is infinite; give a finite number"),
                          (~infinite & (np.abs(numbers) > limit) | (np.abs(scaled) > limit),
                           "is beyond float32's range (about 3.4e38) once standardized; give a smaller number")]
            elif on_unknown == "error":
                unseen = present & ~values.astype("string").isin(column["categories"]).to_numpy(dtype=bool)
                found.append((unseen, f"is a category training never saw (it saw "
                                      f"{', '.join(column['categories'][:8])}"
                                      f"{', ...' if len(column['categories']) > 8 else ''}); pass "
                                      "on_unknown_category=zeros to encode unseen categories as all zeros"))
            for bad, why in found:
                for row in np.flatnonzero(bad):
                    row = int(row)
                    if row in faults:
                        continue
                    shown = values.iloc[row]
                    value = f" value {getattr(shown, 'item', lambda: shown)()!r}" if present[row] else ""
                    faults[row] = f"column '{column['name']}'{value} {why}"
                    if not every:
                        raise DataError(f"{where(row)}: {faults[row]}")
        return dict(sorted(faults.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableEncoder":
        return cls(list(data["columns"]))


def as_numbers(values: pd.Series) -> np.ndarray:
    """A column's values as float64, missing or unreadable ones NaN (a numeric column is not parsed again)."""
    if not is_numeric(values):
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(dtype="float64", na_value=np.nan)


def is_numeric(values: pd.Series) -> bool:
    """A column standardized as numbers (booleans are categories)."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


class RunningFit:
    """TableEncoder.fit over a table met a batch at a time (a streamed table's training rows): each numeric
    column's count, mean and sum of squared deviations, combined batch by batch in float64 (Chan, Golub and
    LeVeque's pairwise update: the mean and population std of the whole column, to rounding), and each other
    column's categories."""

    def __init__(self) -> None:
        self.numeric: dict[str, list[float]] = {}  # name -> [count, mean, squared deviations]
        self.categories: dict[str, set[str]] = {}
        self.order: list[str] = []

    def update(self, frame: pd.DataFrame) -> None:
        for name in frame.columns:
            values = frame[name]
            if name not in self.order:
                self.order.append(name)
                if is_numeric(values):
                    self.numeric[name] = [0.0, 0.0, 0.0]
                else:
                    self.categories[name] = set()
            if name in self.categories:
                self.categories[name].update(str(v) for v in values.dropna().unique())
                continue
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            numbers = numbers[~np.isnan(numbers)]
            if len(numbers):
                self.numeric[name] = combine(self.numeric[name], numbers)

    def encoder(self) -> TableEncoder:
        columns = []
        for name in self.order:
            if name in self.categories:
                columns.append({"name": str(name), "kind": "categorical", "categories": sorted(self.categories[name])})
                continue
            count, mean, squares = self.numeric[name]
            std = float(np.sqrt(squares / count)) if count else 0.0
            columns.append({"name": str(name), "kind": "numeric", "mean": float(mean), "std": std if std > 0 else 1.0})
        return TableEncoder(columns)


def combine(moments: list[float], numbers: np.ndarray) -> list[float]:
    """[count, mean, squared deviations] of the numbers so far joined with `numbers`' (float64)."""
    count, mean, squares = moments
    n, m = len(numbers), float(numbers.mean())
    s = float(((numbers - m) ** 2).sum())
    total = count + n
    delta = m - mean
    return [total, mean + delta * n / total, squares + s + delta * delta * count * n / total]


def _listed(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
