"""Small data files in the real on-disk formats, generated for the tests."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_mnist(root: Path, folder: str = "MNIST", train: int = 120, test: int = 40, seed: int = 0) -> None:
    """IDX files as torchvision's MNIST reads them from root/<folder>/raw: each class a bright block."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = (rng.random((count, 28, 28)) * 60).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label: 2 * label + 6, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, count) + labels.astype(np.uint8).tobytes())


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> None:
    """The pickled batches torchvision's CIFAR10 reads from root/cifar-10-batches-py."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(rng.integers(0, 10, per_batch))
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        with (folder / name).open("wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


def write_image_folder(root: Path, per_class: int = 12, size: int = 10, grayscale: bool = False) -> None:
    """PNG images in one folder per class: 'dark' and 'light' (RGB, or one band with grayscale=True)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, base in (("dark", 30), ("light", 220)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 20, (size, size) if grayscale else (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{i}.png")


def write_table(path: Path, rows: int = 300, seed: int = 0) -> None:
    """A CSV with numbers, a text category, a missing value, and a text class target that depends on them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    size = rng.normal(10, 3, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    noise = rng.normal(0, 1, rows)
    label = np.where(size + 4 * (colour == "red") > 11, "big", "small")
    frame = pd.DataFrame({"size": size, "colour": colour, "noise": noise, "label": label})
    frame.loc[5, "noise"] = np.nan
    frame.to_csv(path, index=False)


def write_reviews(path: Path, rows: int = 600, seed: int = 1) -> None:
    """A CSV of short reviews (dltrain's synthetic ones) with a text column and a positive/negative label."""
    import pandas as pd

    from dltrain.data.embedded import review_texts

    texts, labels = review_texts(rows, seed)
    pd.DataFrame({"text": texts, "label": np.where(labels == 1, "positive", "negative")}).to_csv(path, index=False)
