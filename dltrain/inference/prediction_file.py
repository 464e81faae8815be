"""dltrain-predict's CSV written a batch at a time, whatever the input: each batch's rows predicted and spooled
as they come, so memory stays that of one batch, and the file put in place whole at the end
(dltrain.rundir.files.write_with: a half-written file never bears its name). It is the file a whole read gives:
the columns naming each row, the predictions, and a not_predicted column only where some row has a reason in it."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from dltrain.report.predictions import NOT_PREDICTED, predict_rows
from dltrain.rundir.files import write_with


def write_predictions(module, batches: Iterable[tuple[dict[str, Any], Any, dict[int, str]]], target: Path,
                      batch_size: int) -> tuple[int, dict[int, str]]:
    """Predict each of `batches` (the columns naming its rows, its features tensor, the rows read with a fault,
    {row in the batch: why}) and write the rows to `target`, unless no row could be predicted. Returns the rows
    and the faults ({row: why}, rows counted from 0 over all batches)."""
    faults: dict[int, str] = {}
    with tempfile.TemporaryFile("w+", newline="") as spool:  # every row's line, a not_predicted field last
        rows = 0
        for ids, features, found in batches:
            predicted, found = predict_rows(module, features, found, batch_size)
            if NOT_PREDICTED not in predicted.columns:
                predicted[NOT_PREDICTED] = np.nan
            pd.concat([pd.DataFrame(ids), predicted], axis=1).to_csv(spool, index=False, header=rows == 0)
            faults.update({rows + row: why for row, why in found.items()})
            rows += len(predicted)
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
