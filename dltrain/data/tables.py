"""The user's own tables: CSV or Parquet files, read with pyarrow, with a target column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dltrain.data.arrays import SPLIT_NAMES, TABLE, TEST, TRAIN, VAL, ArrayData
from dltrain.data.targets import encode_targets
from dltrain.errors import DataError

MISSING_POLICIES = ("drop", "impute")


def read_frame(path: str | Path, role: str = "data.path") -> pd.DataFrame:
    """A CSV (.csv, .tsv, .txt) or Parquet (.parquet, .pq) file as a DataFrame, read by pyarrow."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{role}: no such file {file}")
    if file.stat().st_size == 0:
        raise DataError(f"{file}: the file is empty (expected a header row and data rows)")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(file, engine="pyarrow", dtype_backend="pyarrow")
        else:
            sep = "\t" if file.suffix.lower() == ".tsv" else ","
            # Arrow-backed columns: no conversion copy of the whole table into pandas' own arrays.
            frame = pd.read_csv(file, engine="pyarrow", sep=sep, dtype_backend="pyarrow")
    except Exception as exc:  # pyarrow and pandas raise many kinds for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file}: cannot be read as a table ({first})") from None
    if frame.empty:
        raise DataError(f"{file}: the file has a header but no data rows")
    return frame


def _check_numeric(frame: pd.DataFrame, file: Path, first_line: int) -> None:
    """A text column whose values are mostly numbers holds a typo: name its first non-number."""
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        present = values.dropna()
        not_number = np.isnan(pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
        if len(present) and not_number.mean() <= 0.5 and not_number.any():
            position = int(np.flatnonzero(not_number)[0])
            row = frame.index.get_loc(present.index[position])
            raise DataError(
                f"{file}: column '{name}' is numeric but line {row + first_line} holds {present.iloc[position]!r}; "
                "fix the value, or list the column in data.categorical to treat it as text"
            )


def table(
    path: str,
    target: str,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    task: str | None = None,
    missing: str = "drop",
    split_column: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
) -> ArrayData:
    """A table with a target column; the other columns (or `features`) are the inputs.

    `missing`: drop rows with a missing value, or impute (training mean; categories: none). The split
    comes from `split_column` (train/val/test per row), from separate val/test files, or is drawn later.
    """
    if missing not in MISSING_POLICIES:
        raise DataError(f"data.missing={missing!r} is not a policy: expected drop or impute")
    file = Path(path).expanduser()
    parts = [(read_frame(file), TRAIN if (val_path or test_path) else -1)]
    for extra, part, role in ((val_path, VAL, "data.val_path"), (test_path, TEST, "data.test_path")):
        if extra:
            parts.append((read_frame(extra, role), part))
    frame = pd.concat([p for p, _ in parts], ignore_index=True)
    split = np.concatenate([np.full(len(p), part) for p, part in parts])

    columns = list(frame.columns)
    if target not in columns:
        raise DataError(f"{file}: no target column '{target}'; the columns are: {', '.join(map(str, columns))}")
    if split_column is not None:
        if split_column not in columns:
            raise DataError(f"{file}: no split column '{split_column}'; the columns are: {', '.join(map(str, columns))}")
        names = frame[split_column].astype(str).str.lower()
        unknown = sorted(set(names) - set(SPLIT_NAMES))
        if unknown:
            raise DataError(f"{file}: split column '{split_column}' holds {unknown[0]!r}; expected train, val or test")
        split = names.map(SPLIT_NAMES).to_numpy()
    chosen = features or [c for c in columns if c not in (target, split_column)]
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        raise DataError(f"{file}: no feature column '{unknown[0]}'; the columns are: {', '.join(map(str, columns))}")
    for name in categorical or []:
        if name not in chosen:
            raise DataError(f"data.categorical names '{name}', which is not a feature column of {file}")
        frame[name] = frame[name].astype("string")
    _check_numeric(frame[chosen], file, first_line=2)

    used = frame[chosen + [target]]
    keep = (used.notna().all(axis=1) if missing == "drop" else frame[target].notna()).to_numpy(dtype=bool)
    if not keep.all():
        frame, split = frame[keep].reset_index(drop=True), split[keep]
    if frame.empty:
        raise DataError(f"{file}: no rows left after dropping rows with missing values (try data.missing=impute)")
    targets, task, class_names = encode_targets(frame[target], task, str(file))
    return ArrayData(file.stem, frame[chosen], targets, task, TABLE, split=split, class_names=class_names)
