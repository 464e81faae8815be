"""`dltrain-export ckpt_path=<checkpoint or run dir> format=onnx|torch_export|safetensors [output=<dir>]`: the model, for use elsewhere.

onnx: one self-contained .onnx file (torch's dynamo exporter, a dynamic batch dimension, input "input",
output "logits" or "output"); torch_export: a .pt2 that torch.export.load runs without dltrain; safetensors:
the network's weights plus model_config.json, which rebuilds it with dltrain. Several formats: format=[onnx,
safetensors] or format=all. Each file is run on the run's test rows by its own runtime right after it is made
and must give the checkpoint's outputs (within 1e-5) and classes on every row; the figures are printed and
written beside it (<file>.check.json). preprocessing.json beside them says what an input must be and what the
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

KEYS = {"ckpt_path": None, "format": "onnx", "output": None, "trust": None}


def export(ckpt_path: str, format: str = "onnx", output: str | None = None, trust: str | None = None) -> list[Path]:
    """Write the checkpoint's network in each of `format`'s formats to `output`; returns the files written."""
    from dltrain.checkpoints.header import checkpoint_file
    from dltrain.errors import ConfigError
    from dltrain.inference.formats import FORMATS, missing_packages

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
    return _write(ckpt_path, list(dict.fromkeys(formats)), output, trust)


def _write(ckpt_path: str, formats: list[str], output: str | None, trust: str | None) -> list[Path]:
    from dltrain.training.restore import open_checkpoint
    from dltrain.quiet import quiet_libraries

    quiet_libraries()
    path, run_dir, checkpoint, module = open_checkpoint(ckpt_path, trust)  # a refused file costs no Lightning import

    from dltrain.data.datamodule import stored_datamodule
    from dltrain.inference.formats import NETWORK_CONFIG, export_network
    from dltrain.inference.preprocessing import describe
    from dltrain.rundir.files import write_json, write_with

    folder = Path(output).expanduser() if output else run_dir / "export"
    check_folder(folder)
    record = {"config": module.hparams.config, "data_spec": module.hparams.data_spec}
    lines = []
    with staged(folder) as stage:  # every file in a hidden sibling folder, renamed into place once all are there
        split, rows = _check_rows(stored_datamodule(record["config"], module.spec))
        made = export_network(module.model, module.spec, record, formats, rows, tuple(listed(trust)))
        for exported in made:
            write_with(stage / exported.name, lambda handle, content=exported.content: handle.write(content),
                       sync=False)
            check = {"format": exported.format, "file": exported.name, "checkpoint": str(path.resolve()),
                     "epoch": checkpoint["epoch"] + 1, "checked_on": f"the run's {split} rows"} | exported.check
            write_json(stage / f"{exported.name}.check.json", check)
            lines.append(_check_line(exported.format, folder / exported.name, check))
        if "safetensors" in formats:
            write_json(stage / NETWORK_CONFIG, record)
        write_json(stage / "preprocessing.json", describe(module.spec, record["config"]))
        write_manifest(stage, {"checkpoint": str(path.resolve()), "epoch": checkpoint["epoch"] + 1,
                               "formats": formats})
    print("\n".join(lines))
    print(f"preprocessing.json (inputs and outputs, for use without dltrain): {folder / 'preprocessing.json'}")
    print(f"{MANIFEST} (each file's SHA-256; written last, so a set without it is incomplete): {folder / MANIFEST}")
    return [folder / exported.name for exported in made]


MANIFEST = "manifest.json"
_EXPORT_FILES = {"model.onnx", "model.pt2", "model.safetensors", "model_config.json", "preprocessing.json", MANIFEST}


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
    """The split an export is checked on, and its input rows: the test split, or the first non-empty one."""
    for split, dataset in (("test", datamodule.test_set), ("val", datamodule.val_set), ("train", datamodule.train_set)):
        if len(dataset):
            return split, dataset.head(None)
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
