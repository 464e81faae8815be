"""A table too large to hold, read in pieces through pyarrow.dataset: a CSV or Parquet file, or a folder of
Parquet (or CSV) files. A piece is a Parquet row group or one record batch of a CSV file's streaming reader;
each is read as the in-memory path reads the whole file (Arrow-backed pandas columns), and the in-memory path's
per-row rules (dltrain.data.tables) are applied piece by piece: rows without a target dropped, rows with a gap
dropped under data.missing=drop, a value that is not finite in float32 or a malformed CSV line refused (or
skipped and counted under data.on_bad_sample=skip).

Each row's part of the split comes from the split column, from the file it is in (data.val_path,
data.test_path), or from a stable hash: splitmix64 of the row's number in its file plus a key made of the seed
and the file's name, as a fraction u in [0, 1): test when u < test_fraction, validation when u falls in the
next val_fraction of the rest. A row keeps its part whichever process reads it, and no index of rows is held.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dltrain.data.arrays import SPLIT_NAMES, TEST, TRAIN, VAL
from dltrain.data.spec import TABLE
from dltrain.data.tables import FLOAT32_MAX
from dltrain.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
CSV_BLOCK = 4 << 20  # bytes of CSV text per record batch (the first block's values set the column types)
HEAD_ROWS = 20_000  # the first rows, on which identifier columns are judged


class BadRow(DataError):
    """A row no rule can use, named by file and line. Raised in a DataLoader worker, torch raises it again in
    the main process with the worker's traceback as its message: only the original last line is kept."""

    def __init__(self, message: str) -> None:
        if message.startswith("Caught "):
            message = message.rstrip().splitlines()[-1].partition(": ")[2]
        super().__init__(message)


@dataclass(frozen=True)
class TableFile:
    path: Path
    part: int  # every row's part where the file fixes it (data.val_path, data.test_path); -1: drawn or split column
    name: str  # its path in the table's folder (or its file name): with the seed, its share of each row's hash


@dataclass
class Cleaned:
    """A piece's rows after the per-row rules: the kept rows' columns, their parts, and what was counted."""

    frame: pd.DataFrame
    parts: np.ndarray
    read: np.ndarray  # rows read per part (train, val, test)
    no_target: np.ndarray  # rows dropped per part: no target value
    gap: np.ndarray  # rows dropped per part: a missing value (data.missing=drop)
    bad: int = 0  # rows skipped (data.on_bad_sample=skip)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (Steele, Lea and Flood's SplitMix64 finalizer)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass
class TableSource:
    """A streamed table: its files, the columns the model reads, and the rules its rows follow."""

    name: str
    files: list[TableFile]
    schema: pa.Schema
    target: str
    chosen: list[str]
    csv_types: dict[str, pa.DataType]
    missing: str = "drop"
    task: str | None = None
    categorical: list[str] = field(default_factory=list)
    split_column: str | None = None
    encoding: str = "utf-8"
    shares: tuple[float, float] = (0.0, 0.0)  # the test and validation shares the hash draws (0: fixed by a file)
    on_bad: str = "error"
    notes: list[tuple[int, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    kind: str = TABLE

    @property
    def columns(self) -> list[str]:
        """The columns read from each piece."""
        return list(dict.fromkeys([*self.chosen, self.target, *([self.split_column] if self.split_column else [])]))

    def clean(self, frame: pd.DataFrame, number: int, first_row: int, seed: int, part: int | None = None
              ) -> Cleaned:
        """The rows of a piece (the file's rows first_row...) that training uses, each with its part; with
        `part`, the rows of that part only, picked before the rules are applied (a loader reads one split:
        validation's tenth of a piece is cleaned and encoded, not the whole piece)."""
        file = self.files[number]
        rows = first_row + np.arange(len(frame))
        if part is not None:
            mine = self._parts(frame, file, rows, seed) == part
            frame, rows = frame[mine].reset_index(drop=True), rows[mine]
        bad = self._bad_rows(frame, file, rows)
        parts = self._parts(frame, file, rows, seed) if part is None else np.full(len(frame), part, dtype=np.int64)
        no_target = frame[self.target].isna().to_numpy(dtype=bool) & ~bad
        gap = (frame[self.chosen].isna().any(axis=1).to_numpy(dtype=bool) & ~no_target & ~bad
               if self.missing == "drop" else np.zeros(len(frame), dtype=bool))
        keep = ~(bad | no_target | gap)
        count = lambda mask: np.bincount(parts[mask], minlength=3)  # noqa: E731
        kept = frame[keep].reset_index(drop=True)
        for name in self.categorical:
            kept[name] = kept[name].astype("string")
        return Cleaned(kept, parts[keep], count(~bad), count(no_target), count(gap), int(bad.sum()))

    def where(self, file: TableFile, row: int) -> str:
        """A row named as a user finds it: its line in a CSV file (no quoted line breaks), its row in Parquet."""
        if file.path.suffix.lower() in PARQUET_SUFFIXES:
            return f"{file.path} row {row + 1}"
        return f"{file.path} row {row + 1} (line {row + 2})"

    def _bad_rows(self, frame: pd.DataFrame, file: TableFile, rows: np.ndarray) -> np.ndarray:
        """Rows holding a number that is infinite or beyond float32 in an input or the target: refused in one
        line naming the row (as the in-memory path refuses them), or marked for skipping."""
        bad = np.zeros(len(frame), dtype=bool)
        for name in dict.fromkeys([*self.chosen, self.target]):
            values = frame[name]
            if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                continue
            numbers = np.abs(values.to_numpy(dtype="float64", na_value=np.nan))
            faulty = numbers > FLOAT32_MAX
            if faulty.any() and self.on_bad == "error":
                row = int(np.flatnonzero(faulty)[0])
                raise BadRow(f"{self.where(file, int(rows[row]))}: column '{name}' holds {values.iloc[row]}, not a "
                             "finite float32 number; fix the row, or skip such rows with data.on_bad_sample=skip")
            bad |= faulty
        return bad

    def _parts(self, frame: pd.DataFrame, file: TableFile, rows: np.ndarray, seed: int) -> np.ndarray:
        if self.split_column is not None:
            names = frame[self.split_column].astype("string").str.lower()
            parts = names.map(SPLIT_NAMES).to_numpy(dtype="float64", na_value=np.nan)
            if np.isnan(parts).any():
                row = int(np.flatnonzero(np.isnan(parts))[0])
                raise DataError(f"{self.where(file, int(rows[row]))}: split column '{self.split_column}' holds "
                                f"{frame[self.split_column].iloc[row]!r}; expected train, val or test")
            return parts.astype(np.int64)
        if file.part >= 0:
            return np.full(len(frame), file.part, dtype=np.int64)
        key = np.uint64(file_key(seed, file.name))
        u = (splitmix64(rows.astype(np.uint64) + key) >> np.uint64(11)) / float(2**53)
        test, val = self.shares
        return np.where(u < test, TEST, np.where(u < test + val, VAL, TRAIN)).astype(np.int64)


class PieceReader:
    """Reads the pieces of a source's files, keeping each CSV file's stream open so that reading its pieces in
    order parses it once (Parquet row groups are read on their own)."""

    def __init__(self, source: TableSource) -> None:
        self.source = source
        self._streams: dict[int, tuple[int, Iterator]] = {}

    def read(self, number: int, wanted: list[int] | None) -> Iterator[tuple[int, int, pd.DataFrame, int]]:
        """(piece, first row, frame, malformed lines skipped) of file `number`: its pieces `wanted` (all: None)."""
        file = self.source.files[number]
        if file.path.suffix.lower() in PARQUET_SUFFIXES:
            yield from self._parquet(file, wanted)
        else:
            yield from self._csv(number, file, wanted)

    def _parquet(self, file: TableFile, wanted: list[int] | None) -> Iterator[tuple[int, int, pd.DataFrame, int]]:
        import pyarrow.dataset as ds

        fragment = next(ds.dataset(str(file.path), format="parquet").get_fragments())
        groups = fragment.split_by_row_group()
        starts = np.concatenate([[0], np.cumsum([g.row_groups[0].num_rows for g in groups])])
        for index in range(len(groups)) if wanted is None else wanted:
            table = _readable(file, lambda: groups[index].to_table(columns=self.source.columns))
            yield index, int(starts[index]), _frame(table), 0

    def _csv(self, number: int, file: TableFile, wanted: list[int] | None
             ) -> Iterator[tuple[int, int, pd.DataFrame, int]]:
        for index in itertools.count() if wanted is None else wanted:
            piece = self._csv_piece(number, file, index)
            if piece is None:
                return
            yield piece

    def _csv_piece(self, number: int, file: TableFile, index: int) -> tuple[int, int, pd.DataFrame, int] | None:
        """Piece `index` of a CSV file: its open stream read on to it (opened again to go back)."""
        state = self._streams.get(number)
        if state is None or state["next"] > index:
            state = self._streams[number] = {"next": 0, "row": 0, "stream": self._open_csv(file)}
        while True:
            read = _readable(file, lambda: next(state["stream"], None))
            if read is None:
                del self._streams[number]
                return None
            batch, skipped = read
            piece, first = state["next"], state["row"]
            state["next"], state["row"] = piece + 1, first + batch.num_rows
            if piece == index:
                return index, first, _frame(batch), skipped

    def _open_csv(self, file: TableFile) -> Iterator[tuple[pa.RecordBatch, int]]:
        """A CSV file's record batches, each with the malformed lines skipped while reading it."""
        import pyarrow.csv as pcsv
        import pyarrow.dataset as ds

        malformed: dict[int, Any] = {}  # by line: pyarrow also meets a line while it infers the types

        def on_invalid(row) -> str:
            malformed.setdefault(row.number, row)
            return "skip"
        source, seen = self.source, 0
        fmt = ds.CsvFileFormat(
            read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK, encoding=source.encoding),
            parse_options=pcsv.ParseOptions(delimiter="\t" if file.path.suffix.lower() == ".tsv" else ",",
                                            invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types=source.csv_types))
        fragment = next(ds.dataset(str(file.path), format=fmt).get_fragments())
        for batch in fragment.to_batches(columns=source.columns, use_threads=False, batch_size=1 << 30):
            if len(malformed) > seen and source.on_bad == "error":
                row = list(malformed.values())[seen]
                raise BadRow(f"{file.path} line {row.number}: a malformed row ({row.actual_columns} fields where the "
                             f"header has {row.expected_columns}): {row.text[:60]!r}; fix the line, or skip such rows "
                             "with data.on_bad_sample=skip")
            yield batch, len(malformed) - seen
            seen = len(malformed)


def _readable(file: TableFile, read):
    """`read()`, a pyarrow failure (a value the column's type cannot hold, a damaged file) in one line."""
    try:
        return read()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadRow(f"{file.path}: cannot be read further ({first}); fix the file, or give the column's type by "
                     "listing it in data.categorical") from None


def _frame(table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Arrow-backed pandas columns: the dtypes of the in-memory path's read_frame."""
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def table_files(path: str, role: str = "data.path") -> list[Path]:
    """A table file, or a folder's Parquet files (else its CSV files), sorted by name."""
    root = Path(path).expanduser()
    if root.is_file():
        if root.suffix.lower() not in (*PARQUET_SUFFIXES, *CSV_SUFFIXES):
            raise DataError(f"{role}={root}: expected a .csv, .tsv or .parquet file, or a folder of Parquet files")
        return [root]
    if not root.is_dir():
        raise DataError(f"{role}: no such file or folder {root}")
    for suffixes in (PARQUET_SUFFIXES, CSV_SUFFIXES):
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if found:
            return found
    raise DataError(f"{role}={root}: the folder holds no .parquet or .csv files")


def decoded_size(files: list[Path]) -> int:
    """What the in-memory path would hold: Parquet's uncompressed size from its metadata (at least 8 bytes a
    value), a CSV file's bytes on disk; nothing is read but metadata."""
    import pyarrow.parquet as pq

    total = 0
    for file in files:
        if file.suffix.lower() in PARQUET_SUFFIXES:
            meta = pq.ParquetFile(file).metadata
            uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            total += max(uncompressed, meta.num_rows * meta.num_columns * 8)
        else:
            total += file.stat().st_size
    return total


def file_key(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")
