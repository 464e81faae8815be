"""dltrain-prepare's conversion: a data source written once into LitData's optimized format (litdata.optimize),
for data=streaming to read (dltrain.data.litdata_source describes the folder).

The split is decided here, as training in memory decides it (split_rows: the same seed, fractions and rows), and
written as train/, val/ and test/. An image folder is decoded file by file in optimize's worker processes
(resized as in memory, stored as uint8); any other source is read as training in memory reads it
(ArrayDataModule: tables encoded with the TableEncoder fitted on the training rows) and its rows written as
they are served. Each sample is {"x": tensor, "y": number}: data only.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltrain.data.litdata_source import DESCRIPTION, FORMAT, SPLITS
from dltrain.data.spec import BINARY, IMAGE, MULTICLASS, REGRESSION, DataSpec
from dltrain.errors import DataError

IMAGE_FOLDER = "dltrain.data.images.image_folder"
CHUNK_BYTES = 64 * 2**20  # the most a chunk holds
CHUNKS = 64  # the fewest chunks a split is cut into (rows allowing): LitData shares chunks among ranks and workers


def prepare(data_cfg: dict[str, Any], seed: int, output: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write data config `data_cfg` (a data preset's keys) into `output`; returns the description written as
    output/dltrain.json (last, so a folder without it is unfinished)."""
    from dltrain.rundir.files import write_json

    output = clear_output(Path(output).expanduser(), overwrite)
    if data_cfg.get("_target_") == IMAGE_FOLDER:
        spec, parts, pipeline = _image_folder(data_cfg, seed)
    else:
        spec, parts, pipeline = _in_memory(data_cfg, seed)
    for split, (sample, inputs) in zip(SPLITS, parts):
        print(f"dltrain-prepare: {split}: {len(inputs):,} rows -> {output / split}", flush=True)
        if len(inputs):
            _optimize(sample, inputs, output / split)
    description = {"format": FORMAT, "spec": spec.to_dict(), "rows": {s: len(p[1]) for s, p in zip(SPLITS, parts)},
                   "pipeline": pipeline | {"seed": seed, "val_fraction": data_cfg.get("val_fraction"),
                                           "test_fraction": data_cfg.get("test_fraction")}}
    write_json(output / DESCRIPTION, description)
    return description


def clear_output(output: Path, overwrite: bool) -> Path:
    """`output`, empty: refused where it holds files, unless overwrite=true and it is a folder this command
    wrote (its dltrain.json, or unfinished: the splits' folders only)."""
    if output.exists() and not output.is_dir():
        raise DataError(f"output={output} is a file: give a folder")
    held = sorted(p.name for p in output.iterdir()) if output.is_dir() else []
    if held and not overwrite:
        raise DataError(f"output={output} is not empty: give a new folder, or add overwrite=true to replace what "
                        "dltrain-prepare wrote there")
    if held and not set(held) <= {DESCRIPTION, *SPLITS}:
        raise DataError(f"output={output} holds files dltrain-prepare did not write ({', '.join(held[:3])}): "
                        "overwrite=true replaces only a prepared folder; give a new folder")
    for name in held:
        (shutil.rmtree if (output / name).is_dir() else os.remove)(output / name)
    output.mkdir(parents=True, exist_ok=True)
    return output


class ImageSample:
    """One image file, read and resized as training in memory reads it, stored as uint8 (0-255)."""

    def __init__(self, image_size: list[int], channels: int) -> None:
        self.image_size, self.channels = list(image_size), channels
        self.bytes = channels * image_size[0] * image_size[1]

    def __call__(self, item: tuple[str, int]) -> dict[str, Any]:
        from dltrain.data.images import image_transform, load_images

        torch.set_num_threads(1)  # each of optimize's worker processes takes one core (small tensors)
        file, label = item
        scaled = load_images([file], image_transform(self.image_size, self.channels), self.channels,
                             self.image_size)[0]
        return {"x": torch.from_numpy(np.rint(scaled * 255)).to(torch.uint8), "y": int(label)}


class RowSample:
    """One row of a split held as whole tensors (features as the module takes them, the target as it takes it)."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features, self.targets = features, targets
        self.bytes = features[0].numel() * features.element_size() if len(features) else 1

    def __call__(self, row: int) -> dict[str, Any]:
        return {"x": self.features[row].clone(), "y": self.targets[row].item()}


def _image_folder(data_cfg: dict[str, Any], seed: int):
    """An image folder's spec, its splits' files (each a (file, class) pair) and its pipeline."""
    from dltrain.data.arrays import ArrayData
    from dltrain.data.splits import split_rows
    from dltrain.data.images import list_image_folder

    image_size = list(data_cfg.get("image_size") or (32, 32))
    root, folder, channels, _ = list_image_folder(data_cfg["path"], data_cfg.get("channels", "auto"))
    targets = np.asarray(folder.targets, dtype=np.int64)
    task = BINARY if len(folder.classes) == 2 else MULTICLASS
    # the split training in memory draws from these targets (split_rows reads the targets only)
    stand_in = ArrayData(root.name, np.zeros((len(targets), 0)), targets, task, IMAGE, class_names=folder.classes)
    rows = split_rows(stand_in, data_cfg["val_fraction"], data_cfg["test_fraction"], seed)
    spec = DataSpec(root.name, task, (channels, *image_size), len(folder.classes), kind=IMAGE,
                    class_names=list(folder.classes))
    sample = ImageSample(image_size, channels)
    parts = [(sample, [(folder.samples[i][0], int(targets[i])) for i in part]) for part in rows]
    pipeline = {"source": str(root), "image_size": image_size, "channels": channels,
                "stored": "uint8 0-255 after resizing, read as value/255",
                "train_class_counts": np.bincount(targets[rows[0]], minlength=len(folder.classes)).tolist()}
    return spec, parts, pipeline


def _in_memory(data_cfg: dict[str, Any], seed: int):
    """Any other source read as training in memory reads it: its spec (the encoding fitted on the training
    rows), its splits' rows and its pipeline."""
    from dltrain.data.datamodule import ArrayDataModule, load_data

    data = load_data(data_cfg)
    module = ArrayDataModule(data, seed=seed, val_fraction=data_cfg["val_fraction"],
                             test_fraction=data_cfg["test_fraction"])
    sets = (module.train_set, module.val_set, module.test_set)
    parts = [(RowSample(part.features, part.targets), list(range(len(part)))) for part in sets]
    pipeline = {"source": data_cfg.get("path") or data.name,
                "stored": "features as the model reads them (float32), targets as the loss reads them"}
    if module.spec.task != REGRESSION:
        counts = np.bincount(sets[0].targets.numpy().astype(np.int64), minlength=max(module.spec.num_classes, 2))
        pipeline["train_class_counts"] = counts.tolist()
    return module.spec, parts, pipeline


def _optimize(sample: Any, inputs: list[Any], folder: Path) -> None:
    """litdata.optimize over `inputs` into `folder`, with its progress bar; a sample that cannot be read (a
    DataError in a worker, which LitData reports as a RuntimeError with its traceback) is named in one line."""
    from litdata import optimize

    from dltrain.distributed import cpu_cores

    cores = cpu_cores()
    rows_per_chunk = max(1, min(math.ceil(len(inputs) / CHUNKS), CHUNK_BYTES // sample.bytes))
    try:
        optimize(fn=sample, inputs=inputs, output_dir=str(folder), chunk_size=rows_per_chunk,
                 num_workers=max(1, min(cores, len(inputs) // 256)), reorder_files=False,
                 start_method="fork")  # spawn (its default) would import torch again in each worker
    except RuntimeError as exc:
        said = re.search(r"DataError: (.+)", str(exc))
        if said:
            raise DataError(said.group(1).strip()) from None
        raise
