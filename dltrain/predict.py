"""`dltrain-predict ckpt_path=<checkpoint or run dir> input=<table, image file or folder, or array file>`.

New inputs get exactly the preprocessing of training (the table encoding and image size stored in the
checkpoint); the predictions (class and probabilities, or value) go to a CSV, one row per input row or file,
with the row number or file name and any table columns named by keep= beside them.
"""

from __future__ import annotations

from pathlib import Path

from dltrain.console_scripts import listed, run_tool

KEYS = {"ckpt_path": None, "input": None, "output": None, "batch_size": "1024", "trust": None,
        "on_unknown_category": "error", "keep": None}


def predict(ckpt_path: str, input: str, output: str | None = None, batch_size: str = "1024",
            trust: str | None = None, on_unknown_category: str = "error", keep: str | None = None) -> Path:
    """Write one prediction per input row or file to a CSV (`output`, a file or a folder); returns its path.
    `keep`: columns of an input table copied beside the predictions (keep=[id] or keep=id,name)."""
    import pandas as pd
    import torch

    from dltrain.checkpoints import open_checkpoint
    from dltrain.data.inputs import check_unknown_category, missing_rule, read_inputs
    from dltrain.errors import ConfigError
    from dltrain.predictions import prediction_table
    from dltrain.run_files import write_atomic

    if not batch_size.isdigit() or int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} is not valid: expected an integer > 0")
    check_unknown_category(on_unknown_category)
    path, run_dir, _, module = open_checkpoint(ckpt_path, trust)
    module.eval()
    source = Path(input).expanduser()
    missing = missing_rule(module.hparams.config)
    features, ids = read_inputs(source, module.spec, missing, on_unknown_category, listed(keep))
    table = pd.concat([pd.DataFrame(ids), prediction_table(module, torch.from_numpy(features), int(batch_size))],
                      axis=1)
    name = f"predictions_{source.stem}.csv"
    target = Path(output).expanduser() if output else run_dir / name
    if target.is_dir():  # a folder: the file goes inside it
        target = target / name
    write_atomic(target, table.to_csv(index=False))
    print(f"{len(table)} predictions written to {target}")
    return target


def main() -> None:
    run_tool("dltrain-predict", __doc__, KEYS, ("ckpt_path", "input"), predict)
