"""`dltrain-export ckpt_path=<checkpoint or run dir> format=onnx|torch_export|safetensors [output=<dir>]`: the model, for use elsewhere.

onnx: one self-contained .onnx file (torch's dynamo exporter, a dynamic batch dimension, input "input",
output "logits" or "output"); torch_export: a .pt2 that torch.export.load runs without dltrain; safetensors:
the network's weights plus model_config.json, which rebuilds it with dltrain. Several formats: format=[onnx,
safetensors] or format=all. Each file is run on the run's test rows by its own runtime right after it is made
and must give the checkpoint's outputs (within 1e-5) and classes on every row; the figures are printed and
written beside it (<file>.check.json). preprocessing.json beside them says what an input must be and what the
outputs mean. Default output: <run>/export.
"""

from __future__ import annotations

from pathlib import Path

from dltrain.console_scripts import listed, run_tool

KEYS = {"ckpt_path": None, "format": "onnx", "output": None, "trust": None}


def export(ckpt_path: str, format: str = "onnx", output: str | None = None, trust: str | None = None) -> list[Path]:
    """Write the checkpoint's network in each of `format`'s formats to `output`; returns the files written."""
    from dltrain.errors import ConfigError
    from dltrain.exporting import FORMATS, missing_packages

    formats = list(FORMATS) if format == "all" else listed(format)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"format={format} is not valid: expected {' | '.join(FORMATS)}, several as "
                          f"format=[onnx,safetensors], or all")
    if output and Path(output).expanduser().is_file():
        raise ConfigError(f"output={output} is a file: an export is a folder of files (give a folder's path)")
    lacking = missing_packages(formats)
    if lacking:
        raise ConfigError(f"format={','.join(formats)} needs the package {lacking[0]}, which is not installed: "
                          f"pip install \"dltrain[export]\"")
    return _write(ckpt_path, list(dict.fromkeys(formats)), output, trust)


def _write(ckpt_path: str, formats: list[str], output: str | None, trust: str | None) -> list[Path]:
    from dltrain.checkpoints import open_checkpoint
    from dltrain.quiet import quiet_libraries

    quiet_libraries()
    path, run_dir, checkpoint, module = open_checkpoint(ckpt_path, trust)  # a refused file costs no Lightning import

    from dltrain.data.datamodule import stored_datamodule
    from dltrain.exporting import NETWORK_CONFIG, export_network
    from dltrain.preprocessing import describe
    from dltrain.run_files import write_json, write_with

    record = {"config": module.hparams.config, "data_spec": module.hparams.data_spec}
    split, rows = _check_rows(stored_datamodule(record["config"]))
    made = export_network(module.model, module.spec, record, formats, rows, tuple(listed(trust)))
    folder = Path(output).expanduser() if output else run_dir / "export"
    written = []
    for exported in made:
        target = folder / exported.name
        write_with(target, lambda handle, content=exported.content: handle.write(content), sync=False)
        check = {"format": exported.format, "file": exported.name, "checkpoint": str(path.resolve()),
                 "epoch": checkpoint["epoch"] + 1, "checked_on": f"the run's {split} rows"} | exported.check
        write_json(folder / f"{exported.name}.check.json", check)
        written.append(target)
        print(_check_line(exported.format, target, check))
    if "safetensors" in formats:
        write_json(folder / NETWORK_CONFIG, record)
    write_json(folder / "preprocessing.json", describe(module.spec, record["config"]))
    print(f"preprocessing.json (inputs and outputs, for use without dltrain): {folder / 'preprocessing.json'}")
    return written


def _check_rows(datamodule):
    """The split an export is checked on, and its input rows: the test split, or the first non-empty one."""
    for split, dataset in (("test", datamodule.test_set), ("val", datamodule.val_set), ("train", datamodule.train_set)):
        if len(dataset):
            return split, dataset.features
    raise AssertionError("a data module always has training rows")


def _check_line(fmt: str, target: Path, check: dict) -> str:
    """One line saying what was written and what its check measured."""
    runtime = {"onnx": "onnxruntime", "torch_export": "torch.export.load",
               "safetensors": "the rebuilt network"}[fmt]
    extra = f" (opset {check['opset']})" if "opset" in check else ""
    same = check.get("same_class_rows")
    classes = f", the same class on {same}/{check['rows']} rows" if same is not None else ""
    return (f"{fmt}: {target}{extra}; run by {runtime} on {check['checked_on']} ({check['rows']}): largest "
            f"difference from the checkpoint {check['max_abs_difference']:.2g} (allowed {check['tolerance']:g})"
            f"{classes}")


def main() -> None:
    run_tool("dltrain-export", __doc__, KEYS, ("ckpt_path",), export, positional=("ckpt_path",))
