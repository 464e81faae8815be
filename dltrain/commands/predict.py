"""`dltrain-predict ckpt_path=<checkpoint or run dir> input=<table, image file or folder, or array file>`.

New inputs get exactly the preprocessing of training (the table encoding and image size stored in the
checkpoint); the predictions (class and probabilities, or value) go to a CSV, one row per input row or file,
with the row number or file name and any table columns named by keep= beside them. A row that cannot be
predicted by training's rules (an empty cell under data.missing=drop, a word in a numeric column, a number
that is not finite in float32, an unseen category) is named in one line and kept in the file with an empty
prediction and the reason in a not_predicted column; the other rows are predicted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dltrain.commands.shared import listed, run_tool

KEYS = {"ckpt_path": None, "input": None, "output": None, "batch_size": "1024", "trust": None,
        "on_unknown_category": "error", "keep": None}


def predict(ckpt_path: str, input: str, output: str | None = None, batch_size: str = "1024",
            trust: str | None = None, on_unknown_category: str = "error", keep: str | None = None) -> Path:
    """Write one prediction per input row or file to a CSV (`output`, a file or a folder); returns its path.
    `keep`: columns of an input table copied beside the predictions (keep=[id] or keep=id,name)."""
    from dltrain.checkpoints.header import checkpoint_file

    checkpoint_file(ckpt_path)  # a wrong path answered before torch is imported

    import pandas as pd
    import torch

    from dltrain.training.restore import open_checkpoint
    from dltrain.data.inputs import TABLE_SUFFIXES, check_unknown_category, missing_rule, read_inputs
    from dltrain.errors import ConfigError, DataError
    from dltrain.report.predictions import left_out_line, predict_rows, row_and_line
    from dltrain.inference.table_predictions import predict_table
    from dltrain.rundir.files import write_atomic

    if not batch_size.isdigit() or int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} is not valid: expected an integer > 0")
    check_unknown_category(on_unknown_category)
    path, run_dir, _, module = open_checkpoint(ckpt_path, trust)
    module.eval()
    source = Path(input).expanduser()
    missing = missing_rule(module.hparams.config)
    file = f"predictions_{source.stem}.csv"
    target = Path(output).expanduser() if output else run_dir / file
    if target.is_dir():  # a folder: the file goes inside it
        target = target / file
    if source.suffix.lower() in TABLE_SUFFIXES:  # any size: read, predicted and written a batch at a time
        rows, faults = predict_table(module, source, target, missing=missing, on_unknown=on_unknown_category,
                                     keep=listed(keep), batch_size=int(batch_size))
        name = row_and_line
    else:
        features, ids, faults = read_inputs(source, module.spec, missing, on_unknown_category, listed(keep))
        predicted, faults = predict_rows(module, torch.from_numpy(features), faults, int(batch_size))
        rows, name = len(predicted), (lambda row: f"row {row + 1}")
        if len(faults) < rows:
            write_atomic(target, pd.concat([pd.DataFrame(ids), predicted], axis=1).to_csv(index=False))
    if len(faults) == rows:
        raise DataError(f"input={source}: no row can be predicted; {left_out_line(faults, name)}")
    if faults:  # the rows left out are named, and marked in the file (empty prediction, the reason beside)
        print(f"dltrain-predict: warning: {left_out_line(faults, name)}; their rows in the file have no "
              "prediction and say why in not_predicted", file=sys.stderr)
    print(f"{rows - len(faults)} predictions written to {target}")
    return target


def main() -> None:
    run_tool("dltrain-predict", __doc__, KEYS, ("ckpt_path", "input"), predict)
