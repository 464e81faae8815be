"""LitData (data=streaming, a folder dltrain-prepare wrote) against the plain streamed loader (streamed_loader:
torchdata's StatefulDataLoader over the image files, each decoded and resized per sample), on one generated
folder of JPEGs, with the same workers, batch size and output (float batches of the same size).

Printed: the one-time conversion (dltrain-prepare) and each loader's images a second over a shuffled epoch (the
second epoch, once workers and caches are warm), their ratio, and the prepared folder's size on disk beside the
JPEGs'. LitData stores the resized pixels (uint8), so it skips the decoding and resizing each epoch and reads
more bytes.

Run: python benchmarks/litdata_streaming.py [--images 2000] [--side 256] [--size 224] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def write_jpegs(root: Path, images: int, side: int) -> None:
    """`images` random JPEGs of side x side in two class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


class ImageFiles:
    """Map-style: each image read, converted and resized as dltrain reads images in memory."""

    def __init__(self, root: Path, size: int) -> None:
        from torchvision import datasets

        from dltrain.data.images import image_transform

        self.samples = datasets.ImageFolder(str(root)).samples
        self.transform = image_transform([size, size], 3)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        file, label = self.samples[index]
        with Image.open(file) as image:
            return self.transform(image.convert("RGB")), label


def images_per_second(loader, epochs: int = 2) -> float:
    """Images a second over the last of `epochs` epochs."""
    for _ in range(epochs):
        started, count = time.perf_counter(), 0
        for x, _ in loader:
            count += len(x)
    return count / (time.perf_counter() - started)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from dltrain.data.litdata_source import PreparedDataModule, prepared
    from dltrain.data.litdata_writer import prepare
    from dltrain.data.streaming import streamed_loader
    from dltrain.quiet import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "jpegs", Path(tmp) / "prepared"
        write_jpegs(root, args.images, args.side)
        started = time.perf_counter()
        prepare({"_target_": "dltrain.data.images.image_folder", "path": str(root), "image_size": [args.size] * 2,
                 "channels": 3, "val_fraction": 0.01, "test_fraction": 0.01}, 0, out)
        converted = time.perf_counter() - started
        module = PreparedDataModule(prepared(str(out)), batch_size=args.batch_size, num_workers=args.workers,
                                    pin_memory=False)
        lit = images_per_second(module.train_dataloader())
        plain = images_per_second(streamed_loader(ImageFiles(root, args.size), batch_size=args.batch_size,
                                                  num_workers=args.workers, pin_memory=False, shuffle=True))
        print(f"{args.images} JPEGs {args.side}x{args.side} -> {args.size}x{args.size}, {args.workers} workers, "
              f"batch {args.batch_size}")
        print(f"dltrain-prepare (once): {converted:.1f} s; on disk {folder_bytes(out) / 2**20:.0f} MiB "
              f"(the JPEGs: {folder_bytes(root) / 2**20:.0f} MiB)")
        print(f"LitData (data=streaming):        {lit:8.0f} images/s")
        print(f"streamed_loader over the files:  {plain:8.0f} images/s")
        print(f"ratio LitData / streamed_loader: {lit / plain:.2f}")


if __name__ == "__main__":
    main()
