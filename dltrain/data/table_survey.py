"""A streamed table opened (its files, columns and the inputs chosen, from the header and the first rows) and
surveyed: the one streaming pass before training that fits the encoding on the training rows (the in-memory
path's TableEncoder, to rounding), finds the task and classes, and counts each piece's rows per part, so that
every process can cut its share of an epoch without reading anything else."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dltrain.data.arrays import TEST, TRAIN, VAL
from dltrain.data.encoding import RunningFit, TableEncoder, combine
from dltrain.data.spec import REGRESSION
from dltrain.data.table_source import (CSV_BLOCK, HEAD_ROWS, PARQUET_SUFFIXES, PieceReader, TableFile, TableSource,
                                       table_files)
from dltrain.data.tables import (MISSING_POLICIES, PART_NAMES, _check_flat, check_columns, dropped_lines,
                                 input_columns)
from dltrain.data.targets import encode_targets, label_keys
from dltrain.errors import DataError

MAX_CLASSES = 100_000  # distinct target values kept while surveying; more (numbers) make a regression target


def open_table(source: dict[str, Any], val_fraction: float, test_fraction: float, on_bad: str = "error"
               ) -> TableSource:
    """The streamed table of a data=csv/parquet config's source keys (those of dltrain.data.tables.table)."""
    if source.get("text_column") is not None:
        raise DataError("data.text_column: a text column's vocabulary is fitted in memory; streamed tables take "
                        "number and category columns (set data.stream=false)")
    missing, split_column = source.get("missing", "drop"), source.get("split_column")
    if missing not in MISSING_POLICIES:
        raise DataError(f"data.missing={missing!r} is not a policy: expected drop or impute")
    main = table_files(source["path"])
    extra = {part: table_files(source[key], f"data.{key}")
             for part, key in ((VAL, "val_path"), (TEST, "test_path")) if source.get(key)}
    head = _head(main[0], source.get("encoding", "utf-8"))
    names = list(head.columns)
    for file in main[1:] + [f for files in extra.values() for f in files]:
        _check_same_names(names, main[0], file, source.get("encoding", "utf-8"))
    categorical = list(source.get("categorical") or [])
    check_columns(names, main[0], target=source["target"], features=source.get("features"),
                  exclude=source.get("exclude"), categorical=categorical, split_column=split_column)
    chosen, excluded, notes = input_columns([head], main[0], source["target"], source.get("features"),
                                            source.get("exclude"), categorical, split_column, None)
    _check_flat(head[chosen + [source["target"]]], main[0])
    if source.get("task") == REGRESSION and not pd.api.types.is_numeric_dtype(head[source["target"]]):
        raise DataError(f"{main[0]}: target '{source['target']}' holds text, but data.task=regression")
    if excluded and any(e["reason"] != "data.exclude" for e in excluded):
        notes.append((logging.INFO, f"streamed: identifier columns judged on the first {len(head)} rows"))
    fixed = set(extra) | ({TRAIN, VAL, TEST} if split_column else set())
    test = 0.0 if TEST in fixed else test_fraction
    val = 0.0 if VAL in fixed else val_fraction * (1 - test)
    files = [TableFile(p, TRAIN if extra else -1, _relative(p, source["path"])) for p in main]
    files += [TableFile(p, part, p.name) for part, paths in extra.items() for p in paths]
    return TableSource(Path(source["path"]).stem, files, pa.Schema.from_pandas(head.iloc[:0]), source["target"],
                       chosen, _csv_types(head, chosen, source["target"], categorical), missing, source.get("task"),
                       categorical, split_column, source.get("encoding", "utf-8"), (test, val), on_bad, notes,
                       {"excluded_columns": excluded})


def _relative(file: Path, root: str) -> str:
    base = Path(root).expanduser()
    return file.name if base.is_file() else str(file.relative_to(base))


def _head(file: Path, encoding: str) -> pd.DataFrame:
    """The first rows of a file, typed as a piece of it will be (a CSV file's first block sets its types)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if file.suffix.lower() in PARQUET_SUFFIXES:
            batch = next(pq.ParquetFile(file).iter_batches(batch_size=HEAD_ROWS), None)
            table = batch if batch is not None else pq.read_schema(file).empty_table()
        else:
            reader = pcsv.open_csv(file, read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK,
                                                                       encoding=encoding),
                                   parse_options=pcsv.ParseOptions(delimiter="\t" if file.suffix.lower() == ".tsv"
                                                                   else ",", invalid_row_handler=lambda row: "skip"))
            table = reader.read_next_batch()
    except (pa.ArrowInvalid, OSError, StopIteration, LookupError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{file}: cannot be read as a table ({first})") from None
    names = table.schema.names
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise DataError(f"{file}: the header names column '{twice}' twice; give each column its own name")
    if table.num_rows == 0:
        raise DataError(f"{file}: the file has a header but no data rows")
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _check_same_names(names: list[str], first: Path, file: Path, encoding: str) -> None:
    import pyarrow.parquet as pq

    other = (pq.read_schema(file).names if file.suffix.lower() in PARQUET_SUFFIXES
             else list(pd.read_csv(file, nrows=0, sep="\t" if file.suffix.lower() == ".tsv" else ",",
                                   encoding=encoding).columns))
    if other != names:
        raise DataError(f"{file}: its columns differ from {first}'s ({', '.join(map(str, other))} against "
                        f"{', '.join(map(str, names))}); every file of a table holds the same columns")


def _csv_types(head: pd.DataFrame, chosen: list[str], target: str, categorical: list[str]) -> dict[str, pa.DataType]:
    """A CSV file's column types beyond its first block: integer inputs read as float64 (a later decimal must
    not fail the read; they are standardized as floats anyway), categorical and empty ones as text."""
    types = {}
    for name in head.columns:
        dtype = head[name].dtype.pyarrow_dtype
        if name in categorical or pa.types.is_null(dtype):
            types[name] = pa.string()
        elif name in chosen and name != target and pa.types.is_integer(dtype):
            types[name] = pa.float64()
        else:
            types[name] = dtype
    return types


@dataclass
class Survey:
    """What one pass over a streamed table found."""

    pieces: list[tuple[int, int]]  # (file, piece) in file order
    rows: np.ndarray  # (pieces, 3): each piece's kept rows of train, val and test
    encoder: TableEncoder
    task: str
    class_names: list[str] | None
    label_keys: np.ndarray | None  # the sorted class keys (targets.label_keys) a piece's targets are looked up in
    target_mean: float = 0.0
    target_std: float = 1.0
    class_counts: np.ndarray | None = None  # training rows per class
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[tuple[int, str]] = field(default_factory=list)

    def total(self, part: int) -> int:
        return int(self.rows[:, part].sum())


class _Targets:
    """The target column over the pass: its distinct values (for the task and classes, as encode_targets finds
    them on the whole column) and the training rows' moments (a regression target's scale)."""

    def __init__(self) -> None:
        self.distinct: pd.Series | None = None
        self.many = False  # more distinct numbers than a class list holds: a regression target
        self.moments = [0.0, 0.0, 0.0]
        self.counts = pd.Series(dtype="int64")  # training rows per class key


    def update(self, values: pd.Series, train: np.ndarray) -> None:
        if not self.many:
            unique = values.drop_duplicates()
            self.distinct = unique if self.distinct is None else pd.concat([self.distinct, unique]).drop_duplicates()
            self.many = len(self.distinct) > MAX_CLASSES and pd.api.types.is_numeric_dtype(values)
            counts = pd.Series(label_keys(values[train])).value_counts()
            self.counts = counts if self.counts.empty else self.counts.add(counts, fill_value=0)
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and train.any():
            numbers = values[train].to_numpy(dtype="float64", na_value=np.nan).astype(np.float32)  # as training's y
            self.moments = combine(self.moments, numbers.astype(np.float64))

    def decide(self, task: str | None, source: str) -> tuple[str, list[str] | None, np.ndarray | None]:
        """The task, the class names and their keys, as encode_targets finds them on the whole column."""
        if self.many and task in (None, REGRESSION):
            return REGRESSION, None, None
        if self.many:
            raise DataError(f"{source}: data.task={task}, but the target has over {MAX_CLASSES} distinct values")
        _, task, names = encode_targets(self.distinct.reset_index(drop=True), task, source)
        return task, names, (None if task == REGRESSION else np.unique(label_keys(self.distinct)))


def survey(source: TableSource, seed: int) -> Survey:
    """One pass over every piece: the rules applied, the training rows' encoding fitted, the rows counted."""
    fit, targets, reader = RunningFit(), _Targets(), PieceReader(source)
    pieces, rows = [], []
    read, no_target, gap = (np.zeros(3, dtype=np.int64) for _ in range(3))
    skipped, present = 0, pd.Series(0, index=source.chosen)
    bar = _progress(source)
    for number in range(len(source.files)):
        for index, first, frame, malformed in reader.read(number, None):
            cleaned = source.clean(frame, number, first, seed)
            train = cleaned.parts == TRAIN
            fit.update(cleaned.frame.loc[train, source.chosen])
            targets.update(cleaned.frame[source.target], train)
            read, no_target, gap = read + cleaned.read, no_target + cleaned.no_target, gap + cleaned.gap
            skipped += cleaned.bad + malformed
            present += frame[source.chosen].notna().sum()
            pieces.append((number, index))
            rows.append(np.bincount(cleaned.parts, minlength=3))
            bar.update(len(frame) + malformed)
    bar.close()
    return _finish(source, fit, targets, pieces, np.array(rows, dtype=np.int64).reshape(-1, 3),
                   (read, no_target, gap), skipped, present)


def _finish(source: TableSource, fit: RunningFit, targets: _Targets, pieces: list[tuple[int, int]], rows: np.ndarray,
            counts: tuple[np.ndarray, ...], skipped: int, present: pd.Series) -> Survey:
    """The survey's record: the parts checked, the task decided, the drops and skips said."""
    name = str(source.files[0].path)
    for part, word in ((TRAIN, "training"), (VAL, "validation"), (TEST, "test")):
        if not rows[:, part].sum():
            raise DataError(f"{name}: no {word} rows after the split and the dropped rows (streamed tables take the "
                            "parts as given: add rows of that part, or draw it with data.split_column=null)")
    task, class_names, keys = targets.decide(source.task, name)
    read, no_target, gap = counts
    dropped = {PART_NAMES[p]: {"rows_read": int(read[p]), "dropped_missing_target": int(no_target[p]),
                               "dropped_missing_value": int(gap[p])} for p in (TRAIN, VAL, TEST)}
    notes = list(source.notes) + dropped_lines(dropped)
    notes += [(logging.WARNING, f"{name}: column '{c}' has no values at all; it is a constant input (leave it out "
                                "with data.exclude=[...])") for c in source.chosen if not present[c]]
    facts = dict(source.facts) | {"dropped_rows": dropped}
    if skipped:
        notes.append((logging.WARNING, f"skipped {skipped} malformed row(s) (data.on_bad_sample=skip)"))
        facts["skipped_rows"] = skipped
    result = Survey(pieces, rows, fit.encoder(), task, class_names, keys, facts=facts, notes=notes)
    if task == REGRESSION:
        count, mean, squares = targets.moments
        result.target_mean, result.target_std = float(mean), float(np.sqrt(squares / count)) or 1.0
    else:
        result.class_counts = targets.counts.reindex(keys, fill_value=0).to_numpy(dtype=np.int64)
    return result


def _progress(source: TableSource):
    """A progress bar over the rows (Parquet metadata gives them; a CSV file's are counted as read), on the
    terminal of the first process only."""
    from tqdm.auto import tqdm

    import pyarrow.parquet as pq

    total = None
    if all(f.path.suffix.lower() in PARQUET_SUFFIXES for f in source.files):
        total = sum(pq.ParquetFile(f.path).metadata.num_rows for f in source.files)
    quiet = os.environ.get("LOCAL_RANK", "0") != "0" or not sys.stderr.isatty()
    return tqdm(total=total, unit=" rows", desc="surveying the table (one pass)", disable=quiet, unit_scale=True)
