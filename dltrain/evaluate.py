"""`dltrain-eval ckpt_path=<checkpoint or run dir>`: the test metrics of a checkpoint, recomputed.

The data and model come from the config stored in the checkpoint; the metrics are written as JSON
(default: eval_<checkpoint name>.json in the run directory; output= a file, or a folder to put it in) and
shown as a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dltrain.tools import run_tool

KEYS = {"ckpt_path": None, "output": None, "split": "test", "trust": None}


def evaluate(ckpt_path: str, split: str = "test", output: str | None = None, trust: str | None = None
             ) -> dict[str, Any]:
    """Metrics of the checkpoint on its run's test (or val/train) split; written to `output`.

    The data is read as training read it, with no download: a checkpoint does not send for files."""
    import pytorch_lightning as pl

    from dltrain import console
    from dltrain.checkpoints import open_checkpoint
    from dltrain.data.datamodule import build_datamodule
    from dltrain.errors import ConfigError
    from dltrain.run_files import write_json
    from dltrain.train import quiet_libraries

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split} is not a split: expected train, val or test")
    quiet_libraries()
    path, run_dir, checkpoint, module = open_checkpoint(ckpt_path, trust)
    config = module.hparams.config
    data = dict(config["data"]) | ({"download": False} if "download" in config["data"] else {})
    datamodule = build_datamodule(data, config["seed"])
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    tested = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {k.replace("test_", f"{split}_", 1): float(v) for k, v in sorted(tested.items())}
    result = {"checkpoint": str(path.resolve()), "split": split, "epoch": checkpoint["epoch"], "metrics": metrics}
    name = f"eval_{path.stem}.json"
    target = Path(output).expanduser() if output else run_dir / name
    if target.is_dir():  # a folder: the file goes inside it
        target = target / name
    write_json(target, result)
    console.show_metrics(metrics, f"{split} metrics of {path.name}")
    print(f"written to {target}")
    return result


def main() -> None:
    run_tool("dltrain-eval", __doc__, KEYS, ("ckpt_path",), evaluate)
