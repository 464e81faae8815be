"""The user's own tables: CSV or Parquet files, read with pyarrow, with a target column."""

from __future__ import annotations

import csv
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from dltrain.data.arrays import SPLIT_NAMES, TEST, TRAIN, VAL, ArrayData
from dltrain.data.spec import TABLE, TEXT
from dltrain.data.targets import encode_targets
from dltrain.errors import DataError
from dltrain.config.schema import PositiveInt, Task

MISSING_POLICIES = ("drop", "impute")
# Headers pandas (index=True writes an unnamed first column, read back as "Unnamed: 0") and R (write.csv's row
# names; Rdatasets' "rownames") give a row index: never a measurement.
INDEX_NAMES = ("unnamed: 0", "rownames", "index")
FLOAT32_MAX = float(np.finfo(np.float32).max)
PART_NAMES = {-1: "all", TRAIN: "train", VAL: "val", TEST: "test"}


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
    """An infinite number would be standardized to NaN and end as a NaN loss, and one beyond float32's range
    (the model computes in float32) becomes infinite there: name its column and line."""
    for name in frame.columns:
        values = frame[name]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        infinite = np.isinf(numbers)
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise DataError(f"{where(row)}: column '{name}' holds {values.iloc[row]}; give a finite number "
                            "(or leave the cell empty for a missing value)")
        huge = np.abs(numbers) > FLOAT32_MAX
        if huge.any():
            row = int(np.flatnonzero(huge)[0])
            raise DataError(f"{where(row)}: column '{name}' holds {values.iloc[row]}, beyond the float32 range "
                            f"(±{FLOAT32_MAX:.3g}) the model computes in; rescale the column (other units) or "
                            "leave it out with data.exclude=[...]")


def _check_flat(frame: pd.DataFrame, file: Path) -> None:
    """A nested Parquet column (struct, list, map) holds no single value per row for the model to read."""
    for name in frame.columns:
        dtype = getattr(frame[name].dtype, "pyarrow_dtype", None)
        if dtype is not None and pa.types.is_nested(dtype):
            raise DataError(f"{file}: column '{name}' holds nested values ({dtype}), not one number or category "
                            f"per row; leave it out with data.exclude=[{name}], or name the columns to use with "
                            "data.features=[...]")


def _is_row_number(parts: list[pd.Series]) -> bool:
    """Integers that number the rows: unique, and together 0..N-1 or 1..N in any order, in the whole table or
    in each file on its own (pandas writes 0..N-1 in every file it saves)."""
    def run(values: pd.Series) -> bool:
        if not len(values) or values.isna().any():
            return False
        numbers = np.sort(values.to_numpy(dtype="int64"))
        return numbers[0] in (0, 1) and bool((np.diff(numbers) == 1).all())
    if not all(pd.api.types.is_integer_dtype(p) for p in parts):
        return False
    return run(pd.concat(parts, ignore_index=True)) or all(run(p) for p in parts)


def identifier_columns(parts: list[pd.DataFrame], candidates: list[str]) -> dict[str, str]:
    """The candidate columns that identify rows rather than measure them, each with why: named as pandas and
    R name an index, a unique 'id', or integers that number the rows. Where the file is sorted by the target
    such a column leaks it; a unique measurement (a price) is none of these."""
    found = {}
    for name in candidates:
        columns = [p[name] for p in parts]
        dtype = getattr(columns[0].dtype, "pyarrow_dtype", None)
        if dtype is not None and pa.types.is_nested(dtype):  # no identifier; refused if an input (_check_flat)
            continue
        lower = str(name).strip().lower()
        if lower in INDEX_NAMES:
            found[name] = f"named '{name}', as pandas and R name a row index"
        elif lower == "id" and pd.concat(columns, ignore_index=True).is_unique:
            found[name] = "named 'id', with a different value in every row"
        elif _is_row_number(columns):
            found[name] = "its integers number the rows (each once, a run from 0 or 1)"
    return found


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


def check_columns(columns: list[str], file: Path | str, *, target: str, features: list[str] | None = None,
                  exclude: list[str] | None = None, categorical: list[str] | None = None,
                  split_column: str | None = None, text_column: str | None = None) -> None:
    """Refuse a column key naming a column the table has not, or one that cannot be meant (the target as a
    feature): the same one line from training and from `dltrain validate`, which reads only the header."""
    listed = ", ".join(map(str, columns))
    def absent(name: str, what: str) -> DataError:
        return DataError(f"{file}: no {what} column '{name}'; the columns are: {listed}")
    if target not in columns:
        raise absent(target, "target")
    for key, name in (("split", split_column), ("text", text_column)):
        if name is not None and name not in columns:
            raise absent(name, key)
    for name in features or []:
        if name not in columns:
            raise absent(name, "feature")
    for name in exclude or []:
        if name not in columns:
            raise DataError(f"data.exclude names '{name}', which {file} has not; the columns are: {listed}")
    if exclude and features is not None:
        raise DataError("data.exclude leaves columns out of the default inputs, and data.features names them all: "
                        "give one of the two (leave the column out of data.features)")
    if exclude and text_column is not None:
        raise DataError(f"data.text_column={text_column} trains on that column alone: leave data.exclude out")
    for name in exclude or []:
        if name in (target, split_column):
            raise DataError(f"data.exclude names '{name}', the {'target' if name == target else 'split'} column, "
                            "which is never an input: leave it out of data.exclude")
    if features is not None and (target in features or (split_column is not None and split_column in features)):
        which = target if target in features else split_column
        raise DataError(f"data.features lists '{which}', the {'target' if which == target else 'split'} column: "
                        f"the model would {'train on the answer' if which == target else 'see the split'}; "
                        "leave it out of data.features")
    for name in categorical or []:
        if name not in (features if features is not None else columns) or name in (target, split_column,
                                                                                       *(exclude or [])):
            raise DataError(f"data.categorical names '{name}', which is not a feature column of {file}")


def read_header(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """A table's column names as read_frame names them, reading no data rows (`dltrain validate`)."""
    file = Path(path).expanduser()
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet

            return list(pyarrow.parquet.read_schema(file).names)
        sep = "\t" if file.suffix.lower() == ".tsv" else ","
        return [str(c) for c in pd.read_csv(file, sep=sep, nrows=0, encoding=encoding, encoding_errors="replace").columns]
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1, "
                        "cp1252)") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file}: cannot be read as a table ({first})") from None


def input_columns(parts: list[pd.DataFrame], file: Path, target: str, features: list[str] | None,
                  exclude: list[str] | None, categorical: list[str] | None, split_column: str | None,
                  text_column: str | None) -> tuple[list[str], list[dict[str, str]], list[tuple[int, str]]]:
    """The columns the model reads, those left out (each with why, for results.json) and the lines saying so:
    the text column, data.features, or every column but the target, the split column, data.exclude and the
    identifier columns found in `parts` (the whole table, or a streamed table's first rows)."""
    columns = list(parts[0].columns)
    excluded = [{"column": str(name), "reason": "data.exclude"} for name in exclude or []]
    if text_column:
        chosen = [text_column]
    elif features:
        chosen = list(features)
    else:
        rest = [c for c in columns if c not in (target, split_column, *(exclude or []))]
        found = identifier_columns(parts, [c for c in rest if c not in (categorical or [])])
        excluded += [{"column": str(name), "reason": why} for name, why in found.items()]
        chosen = [c for c in rest if c not in found]
    if not chosen:
        raise DataError(f"{file}: no input columns: the table holds only '{target}'"
                        + (f" and '{split_column}'" if split_column else "")
                        + (f" and the left-out {', '.join(repr(e['column']) for e in excluded)}" if excluded else "")
                        + "; add feature columns (or name them with data.features=[...])")
    notes = [(logging.INFO if e["reason"] == "data.exclude" else logging.WARNING,
              f"column '{e['column']}' left out of the inputs: {e['reason']}"
              + ("" if e["reason"] == "data.exclude" else " (in a file sorted by the target it leaks the answer; "
                 "data.features=[...] lists the columns to use, to keep it)")) for e in excluded]
    return chosen, excluded, notes


def table(
    path: str,
    target: str,
    *,
    features: list[str] | None = None,
    exclude: list[str] | None = None,
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
    `text_column` (text classification or regression: its tokens, see dltrain.data.text). Without `features`,
    columns that identify rows (identifier_columns) and those in `exclude` are left out, each said.

    `missing`: drop rows with a missing value, or impute (training mean; categories: none; text: empty). The
    split comes from `split_column` (train/val/test per row), from separate val/test files, or is drawn later.
    Over 50 lines by its signature alone: one argument per data=csv key, each checked by the schema from it.
    """
    if missing not in MISSING_POLICIES:
        raise DataError(f"data.missing={missing!r} is not a policy: expected drop or impute")
    file = Path(path).expanduser()
    parts = _read_parts(file, val_path, test_path, encoding)
    frame = pd.concat([p for p, _, _ in parts], ignore_index=True)
    check_columns(list(frame.columns), file, target=target, features=features, exclude=exclude,
                  categorical=categorical, split_column=split_column, text_column=text_column)
    split = (_split_of(frame[split_column], split_column, file) if split_column is not None
             else np.concatenate([np.full(len(p), part) for p, part, _ in parts]))
    text = {"analyzer": analyzer, "max_length": max_length, "min_count": min_count, "max_vocabulary": max_vocabulary,
            "embedding_size": embedding_size}
    _check_text_keys(text, text_column, features)
    chosen, excluded, notes = input_columns([p for p, _, _ in parts], file, target, features, exclude, categorical,
                                            split_column, text_column)
    notes += _checked_values(frame, parts, file, chosen, target, categorical, text_column, missing)
    no_target = frame[target].isna().to_numpy(dtype=bool)
    gap = frame[chosen].isna().any(axis=1).to_numpy(dtype=bool) & ~no_target if missing == "drop" else \
        np.zeros(len(frame), dtype=bool)
    dropped, lines = dropped_rows(split, no_target, gap)
    notes += lines
    keep = ~(no_target | gap)
    if not keep.all():
        frame, split = frame[keep].reset_index(drop=True), split[keep]
    if frame.empty:
        raise DataError(f"{file}: no rows left after dropping rows with missing values (try data.missing=impute)")
    targets, task, class_names = encode_targets(frame[target], task, str(file))
    return ArrayData(file.stem, frame[chosen], targets, task, TEXT if text_column else TABLE, split=split,
                     class_names=class_names, notes=notes, text={"column": text_column, **text} if text_column else None,
                     facts={"excluded_columns": excluded, "dropped_rows": dropped})


def _read_parts(file: Path, val_path: str | None, test_path: str | None, encoding: str
                ) -> list[tuple[pd.DataFrame, int, Path]]:
    """The table and its separate validation and test files, each with the part it fixes (-1: drawn later)."""
    parts = [(read_frame(file, encoding=encoding), TRAIN if (val_path or test_path) else -1, file)]
    for extra, part, role in ((val_path, VAL, "data.val_path"), (test_path, TEST, "data.test_path")):
        if extra:
            parts.append((read_frame(extra, role, encoding), part, Path(extra).expanduser()))
            _check_same_columns(parts[0][0], file, parts[-1][0], parts[-1][2])
    return parts


def _split_of(names: pd.Series, split_column: str, file: Path) -> np.ndarray:
    """Each row's part as a split column names it (train, val or test, any case)."""
    names = names.astype(str).str.lower()
    unknown = sorted(set(names) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"{file}: split column '{split_column}' holds {unknown[0]!r}; expected train, val or test")
    return names.map(SPLIT_NAMES).to_numpy()


def _check_text_keys(text: dict[str, Any], text_column: str | None, features: list[str] | None) -> None:
    """The keys that say how a text column is read come with one, which is then the only input."""
    defaults = inspect.signature(table).parameters
    changed = [key for key, value in text.items() if value != defaults[key].default]
    if text_column is None and changed:
        raise DataError(f"data.{changed[0]} sets how a text column is read, and there is none: name it with "
                        "data.text_column=<column>, or leave the key out")
    if text_column is not None and features not in (None, [text_column]):
        raise DataError(f"data.text_column={text_column} trains on that column alone: leave data.features out")


def _checked_values(frame: pd.DataFrame, parts: list[tuple[pd.DataFrame, int, Path]], file: Path,
                    chosen: list[str], target: str, categorical: list[str] | None, text_column: str | None,
                    missing: str) -> list[tuple[int, str]]:
    """Refuse inputs the model cannot read (nested values, words in numeric columns, non-finite numbers, a text
    column of numbers or of no text), the file and line named; categorical columns made text in place. Returns
    the warnings for columns with no values at all."""
    _check_flat(frame[chosen + [target]], file)
    if text_column is not None and (pd.api.types.is_numeric_dtype(frame[text_column])
                                    or pd.api.types.is_bool_dtype(frame[text_column])):
        raise DataError(f"data.text_column={text_column}: column '{text_column}' of {file} holds numbers, not text; "
                        f"leave data.text_column out to use it as a feature column")
    for name in categorical or []:
        frame[name] = frame[name].astype("string")
    where = _line_finder([(source, len(p)) for p, _, source in parts])
    if text_column is None:
        _check_numeric(frame[chosen], where)
    _check_finite(frame[[c for c in chosen + [target] if c != text_column]], where)
    if text_column is not None and missing == "impute" and _is_blank(frame[text_column]).all():
        raise DataError(f"{file}: text column '{text_column}' holds no text in any row; name a column of texts "
                        "with data.text_column")
    return [(logging.WARNING, f"{file}: column '{name}' has no values at all; it is a constant input (leave it "
                              "out with data.exclude=[...])") for name in chosen if frame[name].isna().all()]


def _is_blank(texts: pd.Series) -> pd.Series:
    return texts.isna() | (texts.astype("string").str.strip() == "")


def dropped_rows(split: np.ndarray, no_target: np.ndarray, gap: np.ndarray
                 ) -> tuple[dict[str, dict[str, int]], list[tuple[int, str]]]:
    """Rows read and dropped per part (train/val/test where files or the split column fix it; "all" where
    the split is drawn afterwards), for results.json, and the lines that say them."""
    counts = {PART_NAMES[int(part)]: {"rows_read": int((split == part).sum()),
                                      "dropped_missing_target": int(no_target[split == part].sum()),
                                      "dropped_missing_value": int(gap[split == part].sum())}
              for part in sorted(set(split.tolist()))}
    return counts, dropped_lines(counts)


def dropped_lines(counts: dict[str, dict[str, int]]) -> list[tuple[int, str]]:
    """The lines saying the rows dropped per part (dropped_rows' counts)."""
    lines = []
    for key, why in (("dropped_missing_target", "no target value"),
                     ("dropped_missing_value", "a missing value (data.missing=drop)")):
        total = sum(c[key] for c in counts.values())
        if not total:
            continue
        read = sum(c["rows_read"] for c in counts.values())
        each = ", before the split is drawn" if list(counts) == ["all"] else ": " + ", ".join(
            f"{part} {c[key]} of {c['rows_read']}" for part, c in counts.items())
        line = f"dropped {total} of {read} rows with {why}{each}"
        share = total / read
        if key == "dropped_missing_value" and share > 0.03:
            line += f": {share:.0%} of the rows; data.missing=impute keeps them (the training mean, no category)"
        lines.append((logging.WARNING if share > 0.03 else logging.INFO, line))
    return lines
