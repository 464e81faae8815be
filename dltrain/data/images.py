"""Image data: the user's image folders and torchvision's MNIST, Fashion-MNIST and CIFAR-10 files."""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from dltrain.data.arrays import TEST, TRAIN, ArrayData
from dltrain.data.vision_sets import VISION_SETS, files_not_found
from dltrain.data.spec import BINARY, IMAGE, MULTICLASS
from dltrain.errors import DataError
from dltrain.config.schema import ImageSize

def image_transform(image_size: list[int], channels: int) -> Callable[[Any], Any]:
    """Resize to `image_size`, to 1 (grayscale) or 3 (RGB) channels, and scale to [0, 1]."""
    from torchvision import transforms

    steps = [transforms.Resize(tuple(image_size))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    elif channels != 3:
        raise DataError(f"data.channels={channels} is not valid: expected 1 (grayscale) or 3 (RGB)")
    return transforms.Compose(steps + [transforms.ToTensor()])


def load_images(files: list[str] | list[bytes], transform: Callable[[Any], Any], channels: int, image_size: list[int],
                names: list[str] | None = None) -> np.ndarray:
    """The images of `files` (paths, or the encoded files' bytes) as one (N, C, H, W) float32 array; an
    unreadable one is named (by its path, or by `names`)."""
    images = np.empty((len(files), channels, *image_size), dtype=np.float32)
    for i, file in enumerate(files):
        with read_rgb(file, names[i] if names else file) as image:
            images[i] = transform(image).numpy()
    return images


def read_rgb(file: str | bytes, name: str):
    """An image file (a path, or its encoded bytes) read by pillow as torchvision's default loader reads it (to
    RGB); unreadable, DataError naming it by `name`.

    pillow's decompression-bomb limit is kept on, and past it refused: an image over Image.MAX_IMAGE_PIXELS
    (pillow only warns between one and two times the limit) would take gigabytes.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is None:  # switched off by some library: back to pillow's own limit
        Image.MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as image:
                return image.convert("RGB")
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise DataError(f"{name}: refused, an image larger than pillow's limit of "
                            f"{Image.MAX_IMAGE_PIXELS:,} pixels ({exc}); shrink or remove it") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{name}: not a readable image ({type(exc).__name__}); expected a PNG or JPEG file "
                            "pillow can read") from None


def image_folder(path: str, image_size: ImageSize = (32, 32),
                 channels: Literal["auto", 1, 3] = "auto") -> ArrayData:
    """One sub-folder per class; every image resized to `image_size` and scaled to [0, 1], all held in memory.
    channels="auto": 1 where every image is grayscale, else 3 (RGB)."""
    root, folder, channels, notes = list_image_folder(path, channels)
    files = [file for file, _ in folder.samples]
    images = load_images(files, image_transform(image_size, channels), channels, image_size)
    targets = np.asarray(folder.targets, dtype=np.int64)
    task = BINARY if len(folder.classes) == 2 else MULTICLASS
    return ArrayData(root.name, images, targets, task, IMAGE, class_names=list(folder.classes), notes=notes)


def list_image_folder(path: str, channels: Literal["auto", 1, 3]) -> tuple[Path, Any, int, list[tuple[int, str]]]:
    """An image folder's root, its torchvision ImageFolder listing (files and classes, nothing decoded), its
    channels (auto: 1 where every image is grayscale, else 3) and the note saying what auto chose."""
    from torchvision import datasets

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: no such folder {root} (expected one sub-folder of images per class)")
    if channels not in ("auto", 1, 3):
        raise DataError(f"data.channels={channels} is not valid: expected auto, 1 (grayscale) or 3 (RGB)")
    try:
        folder = datasets.ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: {exc} (expected one sub-folder of images per class)") from None
    if len(folder.classes) < 2:
        raise DataError(f"{root}: found {len(folder.classes)} class folder(s); classification needs at least 2")
    notes = []
    if channels == "auto":
        channels = 1 if all(is_grayscale(file) for file, _ in folder.samples) else 3
        said = "1 (every image is grayscale)" if channels == 1 else "3 (RGB)"
        notes.append((logging.INFO, f"data.channels=auto: {said}"))
    return root, folder, channels, notes


def is_grayscale(file: str) -> bool:
    """Whether the image's mode has one band (PIL reads only the header here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return image.mode in ("1", "L", "LA", "I", "I;16", "F")
    except (UnidentifiedImageError, OSError):
        return False  # load_images names the file


def vision_set(name: str, root: str, download: bool = False) -> ArrayData:
    """A torchvision set read from `root` (torchvision's own layout), its official test split kept."""
    from torchvision import datasets

    class_name, folder, origin = VISION_SETS[name]
    base = Path(root).expanduser()
    parts = []
    for train in (True, False):
        try:
            if name == "cifar10":
                parts.append(_cifar10(base, train, download))
            else:
                parts.append(getattr(datasets, class_name)(str(base), train=train, download=download))
        except RuntimeError as exc:
            if download:
                raise DataError(f"data={name}: download into {base} failed ({exc})") from None
            raise DataError(files_not_found(name, base)) from None
    images = [np.asarray(p.data) for p in parts]
    if images[0].ndim == 3:  # MNIST-like: (N, H, W) uint8
        images = [i[:, None] for i in images]
    else:  # CIFAR: (N, H, W, C) uint8
        images = [i.transpose(0, 3, 1, 2) for i in images]
    features = (np.concatenate(images) / np.float32(255)).astype(np.float32)
    targets = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    split = np.concatenate([np.full(len(parts[0].targets), TRAIN), np.full(len(parts[1].targets), TEST)])
    return ArrayData(name, features, targets, MULTICLASS, IMAGE, split=split, class_names=list(parts[0].classes))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles containers, bytes and numpy arrays, and refuses every other global: CIFAR-10's python
    batches are pickles, which torchvision's CIFAR10 unpickles in full (any code a crafted file names would
    run). The restriction is the one the Python docs give ("Restricting Globals")."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               *((package, name) for package in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for name in ("_reconstruct", "scalar")),
               *((package, "_frombuffer") for package in ("numpy.core.numeric", "numpy._core.numeric"))}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is not an array")


def _unpickle_arrays(file: Path) -> dict:
    """A CIFAR-10 batch file's dict of arrays and lists, read by _ArraysOnly."""
    try:
        with file.open("rb") as handle:
            entry = _ArraysOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{file}: refused, not a CIFAR-10 batch of arrays ({exc}); replace it with the "
                        "official file") from None
    if not isinstance(entry, dict):
        raise DataError(f"{file}: refused, not a CIFAR-10 batch (a {type(entry).__name__} where a dict belongs)")
    return entry


def _cifar10(base: Path, train: bool, download: bool) -> SimpleNamespace:
    """CIFAR-10's train or test part from torchvision's layout under `base` (downloaded there with
    torchvision's own utility when asked), as torchvision's CIFAR10 holds it: data (N, 32, 32, 3) uint8,
    targets and classes. A missing file raises RuntimeError, as torchvision does."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    folder = base / CIFAR10.base_folder
    files = [folder / name for name, _ in (CIFAR10.train_list if train else CIFAR10.test_list)]
    meta = folder / CIFAR10.meta["filename"]
    if download and not all(f.is_file() for f in (*files, meta)):
        download_and_extract_archive(CIFAR10.url, str(base), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    missing = [f for f in (*files, meta) if not f.is_file()]
    if missing:
        raise RuntimeError(f"{missing[0]} not found")
    data, targets = [], []
    for file in files:
        entry = _unpickle_arrays(file)
        try:
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            targets.extend(int(t) for t in entry.get("labels", entry.get("fine_labels", [])))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{file}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    classes = [str(c) for c in _unpickle_arrays(meta).get(CIFAR10.meta["key"], [])]
    return SimpleNamespace(data=np.vstack(data).transpose(0, 2, 3, 1), targets=targets, classes=classes)
