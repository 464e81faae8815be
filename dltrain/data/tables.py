"""The user's own tables: CSV or Parquet files, read with pyarrow, with a target column."""

from __future__ import annotations

import csv
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from dltrain.data.arrays import SPLIT_NAMES, TEST, TRAIN, VAL, ArrayData
from dltrain.data.spec import TABLE, TEXT
from dltrain.data.targets import encode_targets
from dltrain.errors import DataError
from dltrain.schema import PositiveInt, Task

MISSING_POLICIES = ("drop", "impute")


def read_frame(path: str | Path, role: str = "data.path", encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV (.csv, .tsv, .txt) or Parquet (.parquet, .pq) file as a DataFrame, read by pyarrow; refused when
    two columns share a name (pandas would rename one silently) or text is not in `encoding`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{role}: no such file {file}")
    if file.stat().st_size == 0:
        raise DataError(f"{file}: the file is empty (expected a header row and data rows)")
    parquet = file.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            import pyarrow.parquet

            names = pyarrow.parquet.read_schema(file).names
            frame = pd.read_parquet(file, engine="pyarrow", dtype_backend="pyarrow")
        else:
            sep = "\t" if file.suffix.lower() == ".tsv" else ","
            with file.open(newline="", encoding=encoding, errors="replace") as handle:
                names = next(csv.reader(handle, delimiter=sep), [])
            # Arrow-backed columns: no conversion copy of the whole table into pandas' own arrays.
            frame = pd.read_csv(file, engine="pyarrow", sep=sep, dtype_backend="pyarrow", encoding=encoding)
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1, "
                        "cp1252)") from None
    except Exception as exc:  # pyarrow and pandas raise many kinds for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file}: cannot be read as a table ({first})") from None
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise DataError(f"{file}: the header names column '{twice}' twice; give each column its own name")
    for name in frame.columns:
        if pa.types.is_binary(getattr(frame[name].dtype, "pyarrow_dtype", pa.null())):
            raise DataError(f"{file}: column '{name}' holds text that is not {encoding}; save the file as UTF-8, "
                            "or name its encoding with data.encoding=<name> (e.g. latin-1, cp1252)")
    if frame.empty:
        raise DataError(f"{file}: the file has a header but no data rows")
    return frame


def _check_finite(frame: pd.DataFrame, where: Callable[[int], str]) -> None:
    """An infinite number would be standardized to NaN and end as a NaN loss: name its column and line."""
    for name in frame.columns:
        values = frame[name]
        if not pd.api.types.is_float_dtype(values):
            continue
        infinite = np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise DataError(f"{where(row)}: column '{name}' holds {values.iloc[row]}; give a finite number "
                            "(or leave the cell empty for a missing value)")


def _check_numeric(frame: pd.DataFrame, where: Callable[[int], str]) -> None:
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
                f"{where(row)}: column '{name}' is numeric but holds {present.iloc[position]!r}; "
                "fix the value, or list the column in data.categorical to treat it as text"
            )


def _line_finder(files: list[tuple[Path, int]]) -> Callable[[int], str]:
    """Row of the concatenated files -> "file line N" (line 1 is the header)."""
    def where(row: int) -> str:
        for file, rows in files:
            if row < rows:
                return f"{file} line {row + 2}"
            row -= rows
        return f"row {row}"
    return where


def _check_same_columns(main: pd.DataFrame, main_file: Path, other: pd.DataFrame, other_file: Path) -> None:
    """A validation or test file holds exactly the training file's columns (concatenated, any other would be
    missing values everywhere)."""
    lacking = [c for c in main.columns if c not in other.columns]
    extra = [c for c in other.columns if c not in main.columns]
    if lacking or extra:
        what = "; ".join(part for part in (
            f"lacks {', '.join(map(repr, lacking))}" if lacking else "",
            f"has {', '.join(map(repr, extra))}, which {main_file.name} has not" if extra else "") if part)
        raise DataError(f"{other_file}: its columns differ from {main_file}'s: it {what}")


def table(
    path: str,
    target: str,
    *,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    task: Task | None = None,
    missing: Literal["drop", "impute"] = "drop",
    split_column: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    encoding: str = "utf-8",
    text_column: str | None = None,
    analyzer: Literal["word", "char"] = "word",
    max_length: PositiveInt = 64,
    min_count: PositiveInt = 1,
    max_vocabulary: PositiveInt = 20000,
    embedding_size: PositiveInt = 32,
) -> ArrayData:
    """A table with a target column; the other columns (or `features`) are the inputs, or the one
    `text_column` (text classification or regression: its tokens, see dltrain.data.text).

    `missing`: drop rows with a missing value, or impute (training mean; categories: none; text: empty). The
    split comes from `split_column` (train/val/test per row), from separate val/test files, or is drawn later.
    """
    if missing not in MISSING_POLICIES:
        raise DataError(f"data.missing={missing!r} is not a policy: expected drop or impute")
    file = Path(path).expanduser()
    parts = [(read_frame(file, encoding=encoding), TRAIN if (val_path or test_path) else -1, file)]
    for extra, part, role in ((val_path, VAL, "data.val_path"), (test_path, TEST, "data.test_path")):
        if extra:
            parts.append((read_frame(extra, role, encoding), part, Path(extra).expanduser()))
            _check_same_columns(parts[0][0], file, parts[-1][0], parts[-1][2])
    frame = pd.concat([p for p, _, _ in parts], ignore_index=True)
    split = np.concatenate([np.full(len(p), part) for p, part, _ in parts])

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
    text = {"analyzer": analyzer, "max_length": max_length, "min_count": min_count, "max_vocabulary": max_vocabulary,
            "embedding_size": embedding_size}
    defaults = inspect.signature(table).parameters
    changed = [key for key, value in text.items() if value != defaults[key].default]
    if text_column is None and changed:
        raise DataError(f"data.{changed[0]} sets how a text column is read, and there is none: name it with "
                        "data.text_column=<column>, or leave the key out")
    if text_column is not None and features not in (None, [text_column]):
        raise DataError(f"data.text_column={text_column} trains on that column alone: leave data.features out")
    chosen = [text_column] if text_column else features or [c for c in columns if c not in (target, split_column)]
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        raise DataError(f"{file}: no feature column '{unknown[0]}'; the columns are: {', '.join(map(str, columns))}")
    if target in chosen or (split_column is not None and split_column in chosen):
        which = target if target in chosen else split_column
        raise DataError(f"data.features lists '{which}', the {'target' if which == target else 'split'} column: "
                        f"the model would {'train on the answer' if which == target else 'see the split'}; "
                        "leave it out of data.features")
    if not chosen:
        raise DataError(f"{file}: no input columns: the table holds only '{target}'"
                        + (f" and '{split_column}'" if split_column else "") + "; add feature columns")
    for name in categorical or []:
        if name not in chosen:
            raise DataError(f"data.categorical names '{name}', which is not a feature column of {file}")
        frame[name] = frame[name].astype("string")
    where = _line_finder([(source, len(p)) for p, _, source in parts])
    if text_column is None:
        _check_numeric(frame[chosen], where)
    _check_finite(frame[[c for c in chosen + [target] if c != text_column]], where)
    notes = [(logging.WARNING, f"{file}: column '{name}' has no values at all; it is a constant input (leave it "
                               "out with data.features)") for name in chosen if frame[name].isna().all()]

    used = frame[chosen + [target]]
    keep = (used.notna().all(axis=1) if missing == "drop" else frame[target].notna()).to_numpy(dtype=bool)
    if not keep.all():
        frame, split = frame[keep].reset_index(drop=True), split[keep]
    if frame.empty:
        raise DataError(f"{file}: no rows left after dropping rows with missing values (try data.missing=impute)")
    targets, task, class_names = encode_targets(frame[target], task, str(file))
    return ArrayData(file.stem, frame[chosen], targets, task, TEXT if text_column else TABLE, split=split,
                     class_names=class_names, notes=notes, text={"column": text_column, **text} if text_column else None)
