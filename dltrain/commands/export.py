"""`dltrain-export ckpt_path=<checkpoint or run dir> format=onnx|onnx_int8|torch_export|safetensors [output=<dir>]`: the model, for use elsewhere.

onnx: one self-contained .onnx file (torch's dynamo exporter, a dynamic batch dimension, input "input",
output "logits" or "output"); torch_export: a .pt2 that torch.export.load runs without dltrain; safetensors:
the network's weights plus model_config.json, which rebuilds it with dltrain; onnx_int8: model.int8.onnx,
the ONNX file with int8 weights (onnxruntime's dynamic quantization of the dense layers). Several formats:
format=[onnx,safetensors] or format=all (every one). Each file is run on the run's test rows by its own runtime
right after it is made and must give the checkpoint's outputs (within 1e-5) and classes on every row; the int8
file instead may cost at most max_accuracy_drop points of test accuracy (default 1; a regression: its RMSE's
rise in hundredths of the target's standard deviation), and its size and onnxruntime latency are measured
against the float file's. The figures are printed and written beside each file (<file>.check.json). preprocessing.json beside them says what an input must be and what the
outputs mean, and manifest.json, written last, each file's SHA-256. The set is written into a hidden sibling
folder and renamed into place whole (an older export there is replaced), so a killed export never leaves a
part of a set; the next export clears its leftovers. Default output: <run>/export.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dltrain.commands.shared import listed, run_tool

KEYS = {"ckpt_path": None, "format": "onnx", "output": None, "trust": None, "max_accuracy_drop": "1.0"}


def export(ckpt_path: str, format: str = "onnx", output: str | None = None, trust: str | None = None,
           max_accuracy_drop: str | float = "1.0") -> list[Path]:
    """Write the checkpoint's network in each of `format`'s formats to `output`; returns the files written."""
    from dltrain.checkpoints.header import checkpoint_file
    from dltrain.errors import ConfigError
    from dltrain.inference.formats import FORMATS, missing_packages

    try:
        bound = float(max_accuracy_drop)
    except ValueError:
        bound = float("nan")
    if not 0 <= bound <= 100:  # NaN too
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop} is not valid: expected points of accuracy the "
                          "int8 file may lose, a number from 0 to 100 (default 1)")

    formats = list(FORMATS) if format == "all" else listed(format)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"format={format} is not valid: expected {' | '.join(FORMATS)}, several as "
                          f"format=[onnx,safetensors], or all")
    if output:
        check_folder(Path(output).expanduser())
    lacking = missing_packages(formats)
    if lacking:
        raise ConfigError(f"format={','.join(formats)} needs the package {lacking[0]}, which is not installed: "
                          f"pip install \"dltrain[export]\"")
    checkpoint_file(ckpt_path)
    if "onnx_int8" in formats and "onnx" not in formats:  # the int8 file is written beside its float one
        formats.insert(formats.index("onnx_int8"), "onnx")
    return _write(ckpt_path, list(dict.fromkeys(formats)), output, trust, bound)


def _write(ckpt_path: str, formats: list[str], output: str | None, trust: str | None, bound: float) -> list[Path]:
    from dltrain.collection import resume_collections
    from dltrain.training.restore import open_checkpoint
    from dltrain.quiet import quiet_libraries

    quiet_libraries()
    path, run_dir, checkpoint, module = open_checkpoint(ckpt_path, trust)  # a refused file costs no Lightning import
    resume_collections()  # the libraries are imported (dltrain.collection)

    from dltrain.data.datamodule import stored_datamodule
    from dltrain.inference.formats import NETWORK_CONFIG, export_network, with_temperature
    from dltrain.inference.preprocessing import describe
    from dltrain.rundir.files import write_json, write_with

    folder = Path(output).expanduser() if output else run_dir / "export"
    check_folder(folder)
    record = {"config": module.hparams.config, "data_spec": module.hparams.data_spec}
    if module.temperature != 1.0:  # the calibration's, inside every file (see formats.Calibrated)
        record["temperature"] = module.temperature
    lines = []
    with staged(folder) as stage:  # every file in a hidden sibling folder, renamed into place once all are there
        split, rows, targets = _check_rows(stored_datamodule(record["config"], module.spec))
        made = export_network(with_temperature(module.model, module.temperature), module.spec, record, formats, rows,
                              tuple(listed(trust)), targets, bound)
        for exported in made:
            write_with(stage / exported.name, lambda handle, content=exported.content: handle.write(content),
                       sync=False)
            check = {"format": exported.format, "file": exported.name, "checkpoint": str(path.resolve()),
                     "epoch": checkpoint["epoch"] + 1, "checked_on": f"the run's {split} rows"} | exported.check
            write_json(stage / f"{exported.name}.check.json", check)
            lines.append(_check_line(exported.format, folder / exported.name, check))
        if "safetensors" in formats:
            write_json(stage / NETWORK_CONFIG, record)
        write_json(stage / "preprocessing.json", describe(module.spec, record["config"], module.temperature))
        write_manifest(stage, {"checkpoint": str(path.resolve()), "epoch": checkpoint["epoch"] + 1,
                               "formats": formats})
    from dltrain.rundir.layout import RunDir

    if RunDir(run_dir).model_card.is_file():  # a completed run's card: it names its export's checks too
        from dltrain.report.model_card import write_model_card

        lines.append(f"model card updated: {write_model_card(run_dir, folder)}")
    print("\n".join(lines))
    print(f"preprocessing.json (inputs and outputs, for use without dltrain): {folder / 'preprocessing.json'}")
    print(f"{MANIFEST} (each file's SHA-256; written last, so a set without it is incomplete): {folder / MANIFEST}")
    return [folder / exported.name for exported in made]


MANIFEST = "manifest.json"
_EXPORT_FILES = {"model.onnx", "model.int8.onnx", "model.pt2", "model.safetensors", "model_config.json", "preprocessing.json", MANIFEST}


def check_folder(folder: Path) -> None:
    """Refuse, in one line naming it, an output folder that cannot be made or written: below a file, in a
    read-only or missing place, or one holding files that are not an export's (an export replaces its folder
    whole, so that a killed export never leaves half a set)."""
    from dltrain.errors import ConfigError

    if folder.is_file():
        raise ConfigError(f"output={folder} is a file: an export is a folder of files (give a folder's path)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output={folder}: cannot make this folder, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK) or (existing == folder and not os.access(folder.parent, os.W_OK)):
        place = existing if existing != folder else folder.parent
        raise ConfigError(f"output={folder}: cannot write in {place} (read-only, or not yours); choose a folder "
                          "you may write to")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in _EXPORT_FILES
                         and not p.name.endswith(".check.json") and not p.name.startswith("."))
        if foreign:
            raise ConfigError(f"output={folder} holds files that are not an export's ({', '.join(foreign[:5])}); an "
                              "export replaces its folder whole: give a new or an export's folder")


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A hidden sibling folder to write an export into, renamed to `folder` once every file is there (an older
    export moved aside first, then deleted): a kill at any point leaves the old set or the new one whole, and
    only hidden leftovers, which the next export to `folder` deletes first."""
    from dltrain.errors import ConfigError, disk_error, is_disk_error

    for leftover in folder.parent.glob(f".{folder.name}.export-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    stage = folder.parent / f".{folder.name}.export-{os.getpid()}-new"
    aside = folder.parent / f".{folder.name}.export-{os.getpid()}-old"
    try:
        stage.mkdir(parents=True)
    except OSError as exc:  # /proc, a missing mount, a read-only or full file system
        raise ConfigError(f"output={folder}: cannot make this folder ({exc.strerror or type(exc).__name__}: "
                          f"{exc.filename}); choose a folder you may write to") from None
    try:
        yield stage
        if folder.exists():
            os.rename(folder, aside)
        os.rename(stage, folder)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if aside.exists() and not folder.exists():
            os.rename(aside, folder)
        if is_disk_error(exc):
            raise disk_error(exc, "cannot write the export", folder) from None
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_manifest(folder: Path, facts: dict) -> None:
    """manifest.json, written last: each file of the set with its size and SHA-256, so a user (or a loader)
    can tell a whole, unaltered set."""
    from dltrain.rundir.files import write_json

    files = {p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_json(folder / MANIFEST, facts | {"files": files})


def _check_rows(datamodule):
    """The split an export is checked on, its input rows and their targets (as the module reads them): the test
    split, or the first non-empty one."""
    for split, dataset in (("test", datamodule.test_set), ("val", datamodule.val_set), ("train", datamodule.train_set)):
        if len(dataset):
            return split, *dataset.labelled_head(None)
    raise AssertionError("a data module always has training rows")


def _check_line(fmt: str, target: Path, check: dict) -> str:
    """One line saying what was written and what its check measured (the int8 file: three)."""
    if fmt == "onnx_int8":
        timed = check["latency_ms"]
        return (f"onnx_int8: {target}; run by onnxruntime on {check['checked_on']} ({check['rows']}): "
                f"{check['metric']} {check['float']:g} (float) -> {check['int8']:g} (int8), a cost of "
                f"{check['drop_points']:.2f} points (allowed {check['max_accuracy_drop']:g})\n"
                f"  size: {check['int8_bytes']:,} bytes against the float file's {check['float_bytes']:,} "
                f"({check['size_ratio']:.2f}x)\n"
                f"  onnxruntime latency, median ms: batch of 1 {timed['int8_ms_batch_1']:.3f} (float "
                f"{timed['float_ms_batch_1']:.3f}), batch of 256 {timed['int8_ms_batch_256']:.3f} (float "
                f"{timed['float_ms_batch_256']:.3f})")
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
