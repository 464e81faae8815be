"""`dltrain-predict ckpt_path=<checkpoint or run dir> input=<table, image file or folder, or array file>`.

New inputs get exactly the preprocessing of training (the table encoding and image size stored in the
checkpoint); the predictions (class and probabilities, or value) go to a CSV, one row per input row or file,
with the row number or file name and any table columns named by keep= beside them. A table or an image folder
of any size is read, predicted and written a batch at a time; the file takes its name once whole. A row that
cannot be predicted by training's rules (an empty cell under data.missing=drop, a word in a numeric column, a
number that is not finite in float32, an unseen category) or an unreadable image is named in one line and kept
in the file with an empty prediction and the reason in a not_predicted column; the other rows are predicted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from dltrain.commands.shared import listed, run_tool

KEYS = {"ckpt_path": None, "input": None, "output": None, "batch_size": "auto", "trust": None,
        "on_unknown_category": "error", "keep": None}


def predict(ckpt_path: str, input: str, output: str | None = None, batch_size: str = "auto",
            trust: str | None = None, on_unknown_category: str = "error", keep: str | None = None) -> Path:
    """Write one prediction per input row or file to a CSV (`output`, a file or a folder); returns its path.
    `batch_size`: rows or images read and predicted at once (auto: 1,024 rows, or the run's data.batch_size
    images). `keep`: columns of an input table copied beside the predictions (keep=[id] or keep=id,name)."""
    from dltrain.checkpoints.header import checkpoint_file

    checkpoint_file(ckpt_path)  # a wrong path answered before torch is imported

    from dltrain.collection import resume_collections
    from dltrain.training.restore import open_checkpoint
    from dltrain.data.inputs import check_keep_source, check_unknown_category, image_files, is_image_input, \
        missing_rule
    from dltrain.errors import ConfigError, DataError
    from dltrain.report.predictions import left_out_line

    if batch_size != "auto" and (not batch_size.isdigit() or int(batch_size) < 1):
        raise ConfigError(f"batch_size={batch_size} is not valid: expected auto or an integer > 0")
    check_unknown_category(on_unknown_category)
    path, run_dir, _, module = open_checkpoint(ckpt_path, trust)
    resume_collections()  # the libraries are imported (dltrain.collection)
    module.eval()
    source = Path(input).expanduser()
    check_keep_source(source, listed(keep))
    file = f"predictions_{source.stem}.csv"
    target = Path(output).expanduser() if output else run_dir / file
    if target.is_dir():  # a folder: the file goes inside it
        target = target / file
    data = module.hparams.config.get("data") or {}
    if is_image_input(source):  # any number: read, predicted and written a batch at a time
        from dltrain.data.streaming import worker_count
        from dltrain.inference.image_predictions import predict_images

        files = image_files(source, module.spec)
        rows, faults = predict_images(module, files, target, int(data.get("batch_size", 64)) if batch_size == "auto"
                                      else int(batch_size), worker_count(data.get("num_workers", "auto"), True))
        name = files.__getitem__
    else:
        rows, faults, name = _predict_rows(module, source, target, missing_rule(module.hparams.config),
                                           on_unknown_category, listed(keep), 1024 if batch_size == "auto"
                                           else int(batch_size))
    if len(faults) == rows:
        raise DataError(f"input={source}: no row can be predicted; {left_out_line(faults, name)}")
    if faults:  # the rows left out are named, and marked in the file (empty prediction, the reason beside)
        print(f"dltrain-predict: warning: {left_out_line(faults, name)}; their rows in the file have no "
              "prediction and say why in not_predicted", file=sys.stderr)
    print(f"{rows - len(faults)} predictions written to {target}")
    return target


def _predict_rows(module, source: Path, target: Path, missing: str, on_unknown: str, keep: list[str],
                  batch_size: int) -> tuple[int, dict[int, str], Callable[[int], str]]:
    """A table (read a batch at a time) or an array file (read whole) predicted into `target`: the rows, the
    faults ({row: why}) and how a message names a row."""
    import pandas as pd
    import torch

    from dltrain.data.inputs import TABLE_SUFFIXES, read_inputs
    from dltrain.inference.table_predictions import predict_table
    from dltrain.report.predictions import predict_rows, row_and_line
    from dltrain.rundir.files import write_atomic

    if source.suffix.lower() in TABLE_SUFFIXES:
        rows, faults = predict_table(module, source, target, missing=missing, on_unknown=on_unknown, keep=keep,
                                     batch_size=batch_size)
        return rows, faults, row_and_line
    features, ids, faults = read_inputs(source, module.spec, missing, on_unknown, keep)
    predicted, faults = predict_rows(module, torch.from_numpy(features), faults, batch_size)
    if len(faults) < len(predicted):
        write_atomic(target, pd.concat([pd.DataFrame(ids), predicted], axis=1).to_csv(index=False))
    return len(predicted), faults, lambda row: f"row {row + 1}"


def main() -> None:
    run_tool("dltrain-predict", __doc__, KEYS, ("ckpt_path", "input"), predict)
