"""Image data: the user's image folders and torchvision's MNIST, Fashion-MNIST and CIFAR-10 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dltrain.data.arrays import IMAGE, TEST, TRAIN, ArrayData
from dltrain.errors import DataError
from dltrain.tasks import BINARY, MULTICLASS

# torchvision class, the folder it reads under data.root, and where to get the files
VISION_SETS = {
    "mnist": ("MNIST", "MNIST/raw", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", "https://github.com/zalandoresearch/fashion-mnist"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html"),
}


def image_transform(image_size: list[int], channels: int):
    """Resize to `image_size`, to 1 (grayscale) or 3 (RGB) channels, and scale to [0, 1]."""
    from torchvision import transforms

    steps = [transforms.Resize(tuple(image_size))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    elif channels != 3:
        raise DataError(f"data.channels={channels} is not valid: expected 1 (grayscale) or 3 (RGB)")
    return transforms.Compose(steps + [transforms.ToTensor()])


def load_images(files: list[str], transform, channels: int, image_size: list[int]) -> np.ndarray:
    """The images of `files` as one (N, C, H, W) float32 array; an unreadable file is named."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets.folder import default_loader

    images = np.empty((len(files), channels, *image_size), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            images[i] = transform(default_loader(file)).numpy()
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: not a readable image ({type(exc).__name__}); remove or replace it") from None
    return images


def image_folder(path: str, image_size: list[int] = (32, 32), channels: int = 3) -> ArrayData:
    """One sub-folder per class; every image resized to `image_size` and scaled to [0, 1], all held in memory."""
    from torchvision import datasets

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: no such folder {root} (expected one sub-folder of images per class)")
    transform = image_transform(image_size, channels)
    try:
        folder = datasets.ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: {exc} (expected one sub-folder of images per class)") from None
    if len(folder.classes) < 2:
        raise DataError(f"{root}: found {len(folder.classes)} class folder(s); classification needs at least 2")
    images = load_images([file for file, _ in folder.samples], transform, channels, image_size)
    targets = np.asarray(folder.targets, dtype=np.int64)
    task = BINARY if len(folder.classes) == 2 else MULTICLASS
    return ArrayData(root.name, images, targets, task, IMAGE, class_names=list(folder.classes))


def vision_set(name: str, root: str, download: bool = False) -> ArrayData:
    """A torchvision set read from `root` (torchvision's own layout), its official test split kept."""
    from torchvision import datasets

    class_name, folder, origin = VISION_SETS[name]
    base = Path(root).expanduser()
    parts = []
    for train in (True, False):
        try:
            parts.append(getattr(datasets, class_name)(str(base), train=train, download=download))
        except RuntimeError as exc:
            if download:
                raise DataError(f"data={name}: download into {base} failed ({exc})") from None
            raise DataError(
                f"data={name}: files not found in {base / folder}; set data.download=true to fetch them, "
                f"or put the files from {origin} there (data.root={base})"
            ) from None
    images = [np.asarray(p.data) for p in parts]
    if images[0].ndim == 3:  # MNIST-like: (N, H, W) uint8
        images = [i[:, None] for i in images]
    else:  # CIFAR: (N, H, W, C) uint8
        images = [i.transpose(0, 3, 1, 2) for i in images]
    features = (np.concatenate(images) / np.float32(255)).astype(np.float32)
    targets = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    split = np.concatenate([np.full(len(parts[0].targets), TRAIN), np.full(len(parts[1].targets), TEST)])
    return ArrayData(name, features, targets, MULTICLASS, IMAGE, split=split, class_names=list(parts[0].classes))
