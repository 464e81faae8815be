"""New inputs for a trained model (prediction, evaluation on a new labelled file), read with exactly the
preprocessing training stored in the checkpoint: the table encoding, the image size and channels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dltrain.data.encoding import TableEncoder
from dltrain.data.scaling import SequenceScaler
from dltrain.data.spec import REGRESSION, SEQUENCE, TABLE, TEXT, DataSpec
from dltrain.data.text import TextEncoder
from dltrain.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
UNKNOWN_CATEGORY = ("error", "zeros")  # what a category training never saw does: refused, or all zeros


def missing_rule(config: dict) -> str:
    """What the run's data.missing did with empty cells (impute, the default, or drop): new rows follow it."""
    return (config.get("data") or {}).get("missing", "impute")


def check_unknown_category(value: str) -> None:
    from dltrain.errors import ConfigError

    if value not in UNKNOWN_CATEGORY:
        raise ConfigError(f"on_unknown_category={value} is not valid: expected {' or '.join(UNKNOWN_CATEGORY)}")


def check_keep_source(source: Path, keep: list[str]) -> None:
    """keep= names columns of a table: any other input is refused with it."""
    if keep and (source.is_dir() or source.suffix.lower() not in TABLE_SUFFIXES):
        raise DataError(f"keep={','.join(keep)} names columns to copy from a table, and input={source} is not one")


def is_image_input(source: Path) -> bool:
    """Whether an input is read as images: a folder, or a file with an image suffix."""
    return source.is_dir() or _is_image(source)


def read_inputs(source: Path, spec: DataSpec, missing: str = "impute", on_unknown: str = "zeros", keep: list[str] = ()
                ) -> tuple[np.ndarray, dict[str, list], dict[int, str]]:
    """Model-ready features of `source` (a table or an array file; images are read a batch at a time by
    dltrain.inference.image_predictions), the columns that identify each row (the row number, then a table's
    `keep` columns), and the rows that cannot be
    predicted ({row: why}): a table's rows follow training's rules row by row (`missing`: its data.missing;
    see TableEncoder.check), and an array's rows must be finite numbers."""
    check_keep_source(source, keep)
    if source.suffix.lower() in TABLE_SUFFIXES:
        from dltrain.data.tables import read_frame

        frame = read_frame(source, "input")
        check_kept_columns(frame, keep, source)
        faults: dict[int, str] = {}
        features = table_features(frame, spec, missing, on_unknown, source, faults=faults)
        return features, {"row": list(range(1, len(frame) + 1)), **{name: frame[name].tolist() for name in keep}}, \
            faults
    if source.suffix.lower() in (".npy", ".npz"):
        faults = {}
        features = _array_features(source, spec, missing, on_unknown, faults)
        return features, {"row": list(range(1, len(features) + 1))}, faults
    raise DataError(f"input={source}: expected a table (.csv, .parquet), an image folder or file, or a .npy/.npz "
                    "array")


def read_labelled(source: Path, spec: DataSpec, target: str | None, missing: str = "impute", on_unknown: str = "zeros"
                  ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Features and encoded targets of a new labelled `source`: a table holding the target column training
    used, or an image folder with one sub-folder per class. Targets are encoded as training encoded them
    (class names to the checkpoint's class numbers; a regression target as a number). The third value: the
    rows whose features cannot be predicted ({row: why}, as for read_inputs), to be left out of the score;
    a missing or unknown true value is the file's fault and refused."""
    if source.is_dir() and spec.kind == "image":
        from torchvision import datasets

        try:
            folder = datasets.ImageFolder(str(source))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"input={source}: {exc} (expected one sub-folder of images per class)") from None
        labels = [folder.classes[index] for _, index in folder.samples]
        return image_features([file for file, _ in folder.samples], spec), _class_numbers(labels, spec, source), {}
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"input={source}: expected a table with the target column (.csv, .parquet) or, for an "
                        "image model, a folder with one sub-folder of images per class")
    from dltrain.data.tables import read_frame

    frame = read_frame(source, "input")
    if target not in frame.columns:
        raise DataError(f"input={source} has no column '{target}', the target the model was trained on: scoring "
                        "needs the true values (dltrain-predict predicts without them)")
    truth = frame[target]
    if truth.isna().any():
        raise DataError(f"input={source} line {int(np.flatnonzero(truth.isna().to_numpy())[0]) + 2}: the target "
                        f"'{target}' is empty; every scored row needs its true value")
    faults: dict[int, str] = {}
    features = table_features(frame.drop(columns=[target]), spec, missing, on_unknown, source, faults=faults)
    if spec.task == REGRESSION:
        numbers = pd.to_numeric(truth, errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise DataError(f"input={source} line {row + 2}: target value {truth.iloc[row]!r} is not a number")
        return features, numbers.to_numpy(dtype=np.float32), faults
    return features, _class_numbers(truth.tolist(), spec, source), faults


def table_features(frame: pd.DataFrame, spec: DataSpec, missing: str, on_unknown: str, source: Path | str,
                   where: Callable[[int], str] | None = None, faults: dict[int, str] | None = None) -> np.ndarray:
    """A table's feature matrix, encoded as training encoded its columns; missing columns are refused, and
    rows training would have refused (TableEncoder.check, naming the row by `where`) too, unless `faults` is
    given: then each such row's fault is put in it ({row: why}) and its features are zeros, never predicted."""
    if spec.encoder is None or spec.kind not in (TABLE, TEXT):
        raise DataError(f"{_named(source)} is a table, but the checkpoint was trained on {spec.kind} data")
    if spec.kind == TEXT:
        return text_features(frame, spec, missing, source, where, faults)
    encoder = TableEncoder.from_dict(spec.encoder)
    lacking = [c["name"] for c in encoder.columns if c["name"] not in frame.columns]
    if lacking:
        raise DataError(f"{_named(source)}: missing columns {', '.join(lacking)} (the model was trained on them)")
    found = encoder.check(frame, missing, on_unknown, str(source), where, every=faults is not None)
    if not found:
        return encoder.transform(frame)
    for row, why in found.items():  # a fault the caller found first stays the row's reason
        faults.setdefault(row, why)
    good = np.ones(len(frame), dtype=bool)
    good[list(found)] = False
    features = np.zeros((len(frame), encoder.num_features), dtype=np.float32)
    features[good] = encoder.transform(frame[good])
    return features


def text_features(frame: pd.DataFrame, spec: DataSpec, missing: str, source: Path | str,
                  where: Callable[[int], str] | None = None, faults: dict[int, str] | None = None) -> np.ndarray:
    """A table's text column as the token ids training made of it (its vocabulary: a token it did not keep is
    the unknown id); an empty text is refused where training dropped such rows (data.missing=drop), or, with
    `faults`, put in it as that row's fault."""
    encoder = TextEncoder.from_dict(spec.encoder)
    if encoder.column not in frame.columns:
        raise DataError(f"{_named(source)}: no column '{encoder.column}', the text the model was trained on")
    texts = frame[encoder.column]
    if missing == "drop" and texts.isna().any():
        why = (f"the text '{encoder.column}' is empty, and training dropped such rows (data.missing=drop); give it "
               "a text")
        empty = np.flatnonzero(texts.isna().to_numpy())
        if faults is None:
            row = int(empty[0])
            raise DataError(f"{where(row) if where else f'{_named(source)} line {row + 2}'}: {why}")
        for row in empty:
            faults.setdefault(int(row), why)
        texts = texts.fillna("")
    return encoder.transform(texts)


def check_kept_columns(frame: pd.DataFrame, keep: list[str], source: Path | str) -> None:
    """The columns `keep=` copies beside the predictions are columns of the input."""
    lacking = [name for name in keep if name not in frame.columns]
    if lacking:
        raise DataError(f"keep: input={source} has no column '{lacking[0]}'; its columns are: "
                        f"{', '.join(map(str, frame.columns))}")


def _named(source: Path | str) -> str:
    """How a message names an input: a file as the input= key that gave it, anything else as given."""
    return f"input={source}" if isinstance(source, Path) else source


def _class_numbers(labels: list, spec, source: Path) -> np.ndarray:
    """Class labels as the checkpoint's class numbers; a class training never had is refused."""
    names = spec.labels()
    index = {name: number for number, name in enumerate(names)}
    unknown = next((label for label in labels if _label(label) not in index), None)
    if unknown is not None:
        raise DataError(f"input={source}: class {unknown!r} is not one the model was trained on "
                        f"({', '.join(names)})")
    return np.asarray([index[_label(label)] for label in labels], dtype=np.int64)


def _label(value) -> str:
    """A label as training named it: integers without a decimal point (a pandas column of 0/1 may be float)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _is_image(source: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return source.suffix.lower() in IMG_EXTENSIONS


def image_files(source: Path, spec: DataSpec) -> list[str]:
    """An image input's files: the file, or every image under the folder in sorted order."""
    if spec.kind != "image":
        raise DataError(f"input={source} is an image, but the checkpoint was trained on {spec.kind} data")
    if not source.exists():
        raise DataError(f"input: no such file or folder {source}")
    files = [str(source)] if source.is_file() else sorted(str(p) for p in source.rglob("*") if _is_image(p))
    if not files:
        raise DataError(f"input={source}: no image files found")
    return files


def _array_features(source: Path, spec, missing: str, on_unknown: str, faults: dict[int, str]) -> np.ndarray:
    """The first array of a .npy/.npz file, shaped as training's inputs; a table's standardized as training did."""
    if not source.is_file():
        raise DataError(f"input: no such file {source}")
    try:  # no pickles: an array of Python objects is refused, never unpickled
        loaded = np.load(source, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):  # the features are its first array
            with loaded:
                loaded = loaded[loaded.files[0]]
    except (OSError, ValueError) as exc:
        raise DataError(f"input={source}: cannot be read as a numpy array file of numbers ({exc})") from None
    with np.errstate(over="ignore"):  # a value beyond float32 becomes infinite: its row is refused below
        features = np.asarray(loaded, dtype=np.float32)
    return array_features(features, spec, missing, on_unknown, source, faults=faults)


def array_features(features: np.ndarray, spec: DataSpec, missing: str, on_unknown: str, source: Path | str,
                   where: Callable[[int], str] | None = None, faults: dict[int, str] | None = None) -> np.ndarray:
    """Float rows shaped as training's inputs (else refused, naming `source`); a table's standardized as
    training did. A row holding a value that is not finite (NaN, infinite, beyond float32) is refused, or,
    with `faults`, put in it ({row: why}) and zeroed."""
    if spec.encoder is not None and spec.kind != SEQUENCE:  # a table given as an array of its raw columns
        columns = spec.encoder.get("columns") if spec.kind != TEXT else None
        texts = [c["name"] for c in columns or [] if c["kind"] != "numeric"] or [spec.encoder.get("column")]
        if not columns or any(c["kind"] != "numeric" for c in columns):
            raise DataError(f"{_named(source)}: the model was trained on a table with text columns "
                            f"({', '.join(texts)}), which an array of numbers cannot hold; give a table (a CSV, or rows of column -> value)")
        names = [c["name"] for c in columns]
        if tuple(features.shape[1:]) != (len(names),):
            raise DataError(f"{_named(source)} has rows of shape {tuple(features.shape[1:])}, but the model takes "
                            f"rows of the table's {len(names)} columns ({', '.join(names)}), shape ({len(names)},)")
        frame = pd.DataFrame(features, columns=names)
        return table_features(frame, spec, missing, on_unknown, source, where, faults)
    if tuple(features.shape[1:]) != tuple(spec.input_shape):
        raise DataError(f"{_named(source)} has rows of shape {tuple(features.shape[1:])}, but the checkpoint "
                        f"was trained on {tuple(spec.input_shape)}")
    finite = np.isfinite(features.reshape(len(features), -1)).all(axis=1)
    if not finite.all():
        why = "holds a value that is not a finite float32 number (NaN, infinite, or beyond about 3.4e38)"
        if faults is None:
            row = int(np.flatnonzero(~finite)[0])
            raise DataError(f"{where(row) if where else f'{_named(source)} row {row + 1}'}: {why}")
        for row in np.flatnonzero(~finite):
            faults.setdefault(int(row), why)
        features = features.copy()
        features[~finite] = 0.0
    if spec.kind == SEQUENCE and spec.encoder is not None:  # standardized with the training split's statistics
        return SequenceScaler.from_dict(spec.encoder).transform(features, _named(source))
    return features


def image_features(images: list[str] | list[bytes], spec: DataSpec, names: list[str] | None = None) -> np.ndarray:
    """Image files (paths, or a request's encoded PNG/JPEG bytes) read as training read its images; an
    unreadable one is named by its path or by `names`."""
    if spec.kind != "image":
        raise DataError(f"{names[0] if names else 'images'}: images were sent, but the model was trained on "
                        f"{spec.kind} data")
    from dltrain.data.images import image_transform, load_images

    channels, *size = spec.input_shape
    features = load_images(images, image_transform(size, channels), channels, size, names)
    if spec.normalize:  # as training read them
        from dltrain.data.image_stream import normalized

        features = normalized(features, spec.normalize)
    return features
