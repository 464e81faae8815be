"""`dltrain-predict ckpt_path=<checkpoint or run dir> input=<table, image folder or array file>`.

New inputs get exactly the preprocessing of training (the table encoding and image size stored in the
checkpoint); the predictions (class and probabilities, or value) go to a CSV, one row per input row or file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dltrain.tools import run_tool

KEYS = {"ckpt_path": None, "input": None, "output": None, "batch_size": "1024", "trust": None,
        "on_unknown_category": "error"}
UNKNOWN_CATEGORY = ("error", "zeros")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def read_inputs(source: Path, spec, missing: str = "impute", on_unknown: str = "zeros"
                ) -> tuple[np.ndarray, dict[str, list]]:
    """Model-ready features of `source` and the columns that identify each row (row number or file). A table's
    rows follow training's rules (`missing`: its data.missing; see TableEncoder.check)."""
    from dltrain.data.encoding import TableEncoder
    from dltrain.data.images import image_transform, load_images
    from dltrain.data.tables import read_frame
    from dltrain.errors import DataError

    if source.is_dir():
        if spec.kind != "image":
            raise DataError(f"input={source} is a folder of images, but the checkpoint was trained on a {spec.kind}")
        from torchvision.datasets.folder import IMG_EXTENSIONS

        files = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DataError(f"input={source}: no image files found")
        channels, *size = spec.input_shape
        return load_images(files, image_transform(size, channels), channels, size), {"file": files}
    if source.suffix.lower() in TABLE_SUFFIXES:
        if spec.encoder is None:
            raise DataError(f"input={source} is a table, but the checkpoint was trained on a {spec.kind}")
        frame = read_frame(source, "input")
        encoder = TableEncoder.from_dict(spec.encoder)
        lacking = [c["name"] for c in encoder.columns if c["name"] not in frame.columns]
        if lacking:
            raise DataError(f"input={source}: missing columns {', '.join(lacking)} (the model was trained on them)")
        encoder.check(frame, missing, on_unknown, str(source))
        features = encoder.transform(frame)
        return features, {"row": list(range(1, len(frame) + 1))}
    if source.suffix.lower() in (".npy", ".npz"):
        if not source.is_file():
            raise DataError(f"input: no such file {source}")
        try:  # no pickles: an array of Python objects is refused, never unpickled
            loaded = np.load(source, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):  # the features are its first array
                with loaded:
                    loaded = loaded[loaded.files[0]]
        except (OSError, ValueError) as exc:
            raise DataError(f"input={source}: cannot be read as a numpy array file of numbers ({exc})") from None
        features = np.asarray(loaded, dtype=np.float32)
        if tuple(features.shape[1:]) != tuple(spec.input_shape):
            raise DataError(f"input={source} has rows of shape {tuple(features.shape[1:])}, but the checkpoint "
                            f"was trained on {tuple(spec.input_shape)}")
        if spec.encoder is not None:  # a table given as an array: standardize as training did
            import pandas as pd

            names = [c["name"] for c in spec.encoder["columns"]]
            encoder, frame = TableEncoder.from_dict(spec.encoder), pd.DataFrame(features, columns=names)
            encoder.check(frame, missing, on_unknown, str(source))
            features = encoder.transform(frame)
        return features, {"row": list(range(1, len(features) + 1))}
    raise DataError(f"input={source}: expected a table (.csv, .parquet), an image folder, or a .npy/.npz array")


def prediction_table(module, features, batch_size: int = 1024):
    """A DataFrame of the module's predictions: the class and each class's probability, or the value."""
    import pandas as pd
    import torch

    from dltrain.tasks import BINARY, MULTICLASS

    spec = module.spec
    was_training = module.training
    module.eval()
    with torch.no_grad():
        outputs = torch.cat([module(batch.to(module.device)).float().cpu() for batch in features.split(batch_size)])
    module.train(was_training)
    table = pd.DataFrame(index=range(len(outputs)))
    if spec.task == MULTICLASS:
        probabilities = torch.softmax(outputs, dim=1).numpy()
    elif spec.task == BINARY:
        positive = torch.sigmoid(outputs[:, 0]).numpy()
        probabilities = np.stack([1 - positive, positive], axis=1)
    else:
        table["prediction"] = (outputs[:, 0] * spec.target_std + spec.target_mean).numpy()
        return table
    names = class_names(spec)
    table["prediction"] = [names[i] for i in probabilities.argmax(axis=1)]
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probabilities[:, i]
    return table


def class_names(spec) -> list[str]:
    """The classes' names as the data gave them, or their numbers."""
    return spec.class_names or [str(i) for i in range(max(spec.num_classes, 2))]


def labelled_predictions(module, dataset):
    """Predictions on a split (features, targets) with the true class or value beside each."""
    import pandas as pd

    from dltrain.tasks import REGRESSION

    spec, targets = module.spec, dataset.targets.cpu().numpy()
    if spec.task == REGRESSION:
        true = targets * spec.target_std + spec.target_mean
    else:
        names = class_names(spec)
        true = [names[int(t)] for t in targets]
    return pd.concat([pd.DataFrame({"true": true}), prediction_table(module, dataset.features)], axis=1)


def predict(ckpt_path: str, input: str, output: str | None = None, batch_size: str = "1024",
            trust: str | None = None, on_unknown_category: str = "error") -> Path:
    """Write one prediction per input row or file to a CSV (`output`, a file or a folder); returns its path."""
    import pandas as pd
    import torch

    from dltrain.checkpoints import open_checkpoint
    from dltrain.errors import ConfigError
    from dltrain.run_files import write_atomic

    if not batch_size.isdigit() or int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} is not valid: expected an integer > 0")
    if on_unknown_category not in UNKNOWN_CATEGORY:
        raise ConfigError(f"on_unknown_category={on_unknown_category} is not valid: expected error or zeros")
    path, run_dir, _, module = open_checkpoint(ckpt_path, trust)
    module.eval()
    source = Path(input).expanduser()
    missing = (module.hparams.config.get("data") or {}).get("missing", "impute")
    features, ids = read_inputs(source, module.spec, missing, on_unknown_category)
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
