"""`dltrain-eval ckpt_path=<checkpoint or run dir> [input=<labelled table or image folder>]`: a checkpoint's metrics.

Without input=, its run's test split (or split=val|train), read as training read it from the config stored in
the checkpoint. With input=, a new labelled file: a table holding the target column, or an image folder with
a sub-folder per class, encoded with training's preprocessing; a row dltrain-predict could not predict (its
features break training's rules) is left out of the score, named in one line and in the JSON (rows_left_out).
The metrics are written as JSON (default: eval_<checkpoint name>.json, or eval_<checkpoint>_<input>.json, in
the run directory; output= a file, or a folder to put it in) and shown as a table; its epoch counts from 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dltrain.commands.shared import run_tool

KEYS = {"ckpt_path": None, "input": None, "output": None, "split": "test", "trust": None,
        "on_unknown_category": "error"}


def evaluate(ckpt_path: str, split: str = "test", output: str | None = None, trust: str | None = None,
             input: str | None = None, on_unknown_category: str = "error") -> dict[str, Any]:
    """Metrics of the checkpoint on its run's test (or val/train) split, or on the labelled file `input`;
    written to `output`.

    The run's data is read as training read it, with no download: a checkpoint does not send for files."""
    from dltrain.checkpoints.header import checkpoint_file
    from dltrain.errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split} is not a split: expected train, val or test")
    checkpoint_file(ckpt_path)  # a wrong path answered before torch is imported

    from dltrain.collection import resume_collections
    from dltrain.data.inputs import check_unknown_category
    from dltrain.quiet import quiet_libraries

    check_unknown_category(on_unknown_category)
    from dltrain.training.restore import open_checkpoint

    quiet_libraries()
    path, run_dir, checkpoint, module = open_checkpoint(ckpt_path, trust)  # a refused file costs no Lightning import
    resume_collections()  # the libraries are imported (dltrain.collection)

    import pytorch_lightning as pl

    from dltrain.report import terminal as console
    from dltrain.rundir.files import write_json
    from dltrain.rundir.layout import RunDir

    if input:
        loader, scored = _input_loader(Path(input).expanduser(), module, on_unknown_category)
    else:
        loader, scored = _split_loader(module, split), {"split": split}
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    tested = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {k.replace("test_", f"{scored['split']}_", 1): float(v) for k, v in sorted(tested.items())}
    result = {"checkpoint": str(path.resolve()), **scored, "epoch": checkpoint["epoch"] + 1, "metrics": metrics}
    if module.temperature != 1.0:  # the metrics above are the network's (the classes do not change with it)
        from dltrain.training.calibration import calibrated_figures

        result["calibration"] = calibrated_figures(module, loader)
    default = RunDir(run_dir).evaluation(path, Path(input).expanduser() if input else None)
    target = Path(output).expanduser() if output else default
    if target.is_dir():  # a folder: the file goes inside it
        target = target / default.name
    write_json(target, result)
    console.show_metrics(metrics, f"{Path(input).name if input else split} metrics of {path.name}")
    if "calibration" in result:
        figures = result["calibration"]
        print(f"calibrated by the run's temperature {figures['temperature']:.4f} (what dltrain-predict and -serve "
              f"give): loss {figures['loss']:.4f}, ECE {figures['uncalibrated_ece']:.4f} -> {figures['ece']:.4f}, "
              f"Brier {figures['uncalibrated_brier']:.4f} -> {figures['brier']:.4f}")
    print(f"written to {target}")
    return result


def _split_loader(module, split: str):
    """The batches of the run's own `split`, read with the checkpoint's stored encoding."""
    from dltrain.data.datamodule import stored_datamodule

    datamodule = stored_datamodule(module.hparams.config, module.spec)
    return {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
            "test": datamodule.test_dataloader}[split]()


def _input_loader(source: Path, module, on_unknown_category: str) -> tuple[Any, dict[str, Any]]:
    """The batches of the labelled file `source` and what its score covers: the rows prediction would leave
    out are scored without, said in one line and in the JSON; none left is an error."""
    import numpy as np

    from dltrain.data.datamodule import evaluation_loader, tensor_dataset
    from dltrain.data.inputs import TABLE_SUFFIXES, missing_rule, read_labelled
    from dltrain.errors import DataError
    from dltrain.report.predictions import left_out_line, row_and_line

    config = module.hparams.config
    features, targets, faults = read_labelled(source, module.spec, (config.get("data") or {}).get("target"),
                                              missing_rule(config), on_unknown_category)
    scored = {"split": "input", "input": str(source.resolve()), "rows": len(targets) - len(faults)}
    if faults:
        where = row_and_line if source.suffix.lower() in TABLE_SUFFIXES else (lambda row: f"row {row + 1}")
        line = left_out_line(faults, where, "left out of the score")
        if len(faults) == len(targets):
            raise DataError(f"input={source}: no row can be scored; {line}")
        print(f"dltrain-eval: warning: {line}", file=sys.stderr)
        kept = np.setdiff1d(np.arange(len(targets)), list(faults))
        features, targets = features[kept], targets[kept]
        scored["rows_left_out"] = {"count": len(faults), "rows": [row + 1 for row in faults],
                                   "reasons": {str(row + 1): why for row, why in faults.items()}}
    return evaluation_loader(tensor_dataset(features, targets, module.spec), 1024), scored


def main() -> None:
    run_tool("dltrain-eval", __doc__, KEYS, ("ckpt_path",), evaluate)
