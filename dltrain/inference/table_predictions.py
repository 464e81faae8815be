"""dltrain-predict on a table of any size: read in record batches (pyarrow.dataset), each batch encoded, checked
row by row (dltrain.data.inputs.table_features) and predicted, its rows written as they come
(dltrain.inference.prediction_file), so memory stays that of one batch: a row number and the keep= columns beside
the predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dltrain.data.inputs import check_kept_columns, table_features
from dltrain.errors import DataError
from dltrain.inference.prediction_file import write_predictions


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
    """Write the predictions of every row of `source` to `target` (dltrain.inference.prediction_file); returns
    the rows and the faults ({row: why}, rows counted from 0)."""
    spec = module.spec
    numeric = [c["name"] for c in (spec.encoder or {}).get("columns", []) if c["kind"] == "numeric"]

    def batches() -> Iterator[tuple[dict[str, Any], Any, dict[int, str]]]:
        import torch

        rows = 0
        for frame in table_batches(source, batch_size, numeric):
            check_kept_columns(frame, keep, source)
            found: dict[int, str] = {}
            features = table_features(frame, spec, missing, on_unknown, source, faults=found)
            ids = {"row": np.arange(rows + 1, rows + len(frame) + 1), **{name: frame[name].to_numpy() for name in keep}}
            yield ids, torch.from_numpy(features), found
            rows += len(frame)

    rows, faults = write_predictions(module, batches(), target, batch_size)
    if rows == 0:
        raise DataError(f"input={source}: the file has no data rows")
    return rows, faults
