"""dltrain-predict on a table of any size: read in record batches (pyarrow.dataset), each batch encoded, checked
row by row (dltrain.data.inputs.table_features) and predicted, its rows written as they come, so memory stays
that of one batch. The file is the one a whole read gives: a row number, the keep= columns, the predictions,
and a not_predicted column only where some row has a reason in it."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from dltrain.data.inputs import check_kept_columns, table_features
from dltrain.errors import DataError
from dltrain.report.predictions import NOT_PREDICTED, predict_rows
from dltrain.rundir.files import write_with


def table_batches(source: Path, rows: int, numeric: list[str]) -> Iterator[pd.DataFrame]:
    """A CSV or Parquet file `rows` rows at a time, its columns as a whole read types them; a CSV file's
    `numeric` columns read as text, so that a word among numbers is that row's fault, not the read's."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.dataset as ds

    from dltrain.data.table_source import PARQUET_SUFFIXES

    if not source.is_file():
        raise DataError(f"input: no such file {source}")
    if source.suffix.lower() in PARQUET_SUFFIXES:
        fmt: Any = "parquet"
    else:
        fmt = ds.CsvFileFormat(
            parse_options=pcsv.ParseOptions(delimiter="\t" if source.suffix.lower() == ".tsv" else ","),
            convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in numeric},
                                                strings_can_be_null=True))
    try:
        for batch in ds.dataset(str(source), format=fmt).to_batches(batch_size=rows, use_threads=False):
            if batch.num_rows:
                yield _typed(batch.to_pandas(types_mapper=pd.ArrowDtype), numeric)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"input={source}: cannot be read as a table ({first})") from None


def _typed(frame: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    """A batch's columns read as text made numbers where every value is one, as a whole read types them."""
    for name in numeric:
        if name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name]):
            numbers = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            if not (np.isnan(numbers) & frame[name].notna().to_numpy(dtype=bool)).any():
                frame[name] = pd.Series(numbers, index=frame.index).astype("float64[pyarrow]")
    return frame


def predict_table(module, source: Path, target: Path, *, missing: str, on_unknown: str, keep: list[str],
                  batch_size: int) -> tuple[int, dict[int, str]]:
    """Write the predictions of every row of `source` to `target` (atomically); returns the rows and the faults
    ({row: why}, rows counted from 0)."""
    import torch

    spec = module.spec
    numeric = [c["name"] for c in (spec.encoder or {}).get("columns", []) if c["kind"] == "numeric"]
    faults: dict[int, str] = {}
    with tempfile.TemporaryFile("w+", newline="") as spool:  # every row's line, a not_predicted field last
        rows = 0
        for frame in table_batches(source, batch_size, numeric):
            check_kept_columns(frame, keep, source)
            found: dict[int, str] = {}
            features = table_features(frame, spec, missing, on_unknown, source, faults=found)
            predicted, found = predict_rows(module, torch.from_numpy(features), found, batch_size)
            if NOT_PREDICTED not in predicted.columns:
                predicted[NOT_PREDICTED] = np.nan
            ids = pd.DataFrame({"row": np.arange(rows + 1, rows + len(frame) + 1),
                                **{name: frame[name].to_numpy() for name in keep}})
            pd.concat([ids, predicted], axis=1).to_csv(spool, index=False, header=rows == 0)
            faults.update({rows + row: why for row, why in found.items()})
            rows += len(frame)
        if rows == 0:
            raise DataError(f"input={source}: the file has no data rows")
        if len(faults) < rows:
            spool.seek(0)
            write_with(target, lambda handle: _copy(spool, handle, keep_reasons=bool(faults)))
    return rows, faults


def _copy(spool: io.TextIOBase, handle: BinaryIO, keep_reasons: bool) -> None:
    """The spooled lines into the output file, without the not_predicted field where no row has one."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)
    if keep_reasons:
        for chunk in iter(lambda: spool.read(1 << 20), ""):
            text.write(chunk)
    else:
        writer = csv.writer(text, lineterminator="\n")
        for line in csv.reader(spool):
            writer.writerow(line[:-1])
    text.detach()
