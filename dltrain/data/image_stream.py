"""Image folders streamed: the folder listed (not decoded), each image read and transformed per sample in
DataLoader workers, the splits those of the in-memory path (the same seeded, stratified split of the labels)."""

from __future__ import annotations

import gc
import logging
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, RandomSampler, SequentialSampler

from dltrain.data.batches import joined
from dltrain.data.spec import BINARY, IMAGE, MULTICLASS, DataSpec
from dltrain.data.splits import SplitLoaders, loss_class_weights, split_rows
from dltrain.data.streaming import choose_stream, streamed_loader, worker_count
from dltrain.errors import ConfigError, DataError

IMAGE_FOLDER = "dltrain.data.images.image_folder"
CHANNEL_SAMPLE = 1000  # channels=auto reads at most this many images' headers (spread over the folder)
HEAD_ROWS = 512  # the most rows head() decodes of a split (export's check on the run's rows)


@dataclass
class ImageFiles:
    """An image folder as listed: one file per sample and its class, nothing decoded."""

    name: str
    files: list[str]
    targets: np.ndarray
    class_names: list[str]
    channels: int
    image_size: list[int]
    task: str
    kind: str = IMAGE
    split: None = None  # no part is fixed by the folder: all drawn as for the in-memory path
    notes: list[tuple[int, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def listed_image_folder(data_cfg: dict[str, Any], stored: DataSpec | None = None) -> tuple[ImageFiles | None, str]:
    """data=image_folder listed, and whether it streams: (its files, the start line) where it does, (None, the
    line) where it is held in memory. A stored spec's channels are taken (dltrain-eval on a run)."""
    root, files, targets, classes = list_folder(str(data_cfg["path"]))
    channels, notes = data_cfg.get("channels", "auto"), []
    if stored is not None:
        channels = stored.input_shape[0]
    elif channels == "auto":
        channels, said = sampled_channels(files)
        notes.append((logging.INFO, f"data.channels=auto: {said}"))
    size = list(data_cfg.get("image_size") or [32, 32])
    decoded = len(files) * int(channels) * size[0] * size[1] * 4
    streamed, line = choose_stream(data_cfg.get("stream", "auto"), decoded, f"data={root.name} ({len(files):,} "
                                   "images)")
    if not streamed:
        return None, line
    task = BINARY if len(classes) == 2 else MULTICLASS
    return ImageFiles(root.name, files, np.asarray(targets, dtype=np.int64), classes, int(channels), size, task,
                      notes=[*notes, (logging.INFO, line)], facts={"data_path": {"streamed": True, "why": line}}), line


def list_folder(path: str) -> tuple[Path, list[str], list[int], list[str]]:
    """The files and class numbers of a folder with one sub-folder per class, in torchvision ImageFolder's order
    (so the split is the in-memory path's), with a progress bar when the listing takes more than a second."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension, make_dataset
    from tqdm import tqdm

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: no such folder {root} (expected one sub-folder of images per class)")
    try:
        classes, index = find_classes(str(root))
        with tqdm(desc=f"listing {root}", unit=" files", delay=1.0, leave=False) as bar:
            def counted(file: str) -> bool:
                bar.update()
                return has_file_allowed_extension(file, IMG_EXTENSIONS)

            samples = make_dataset(str(root), index, is_valid_file=counted)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: {exc} (expected one sub-folder of images per class)") from None
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folder(s); classification needs at least 2")
    return root, [file for file, _ in samples], [label for _, label in samples], classes


def sampled_channels(files: list[str]) -> tuple[int, str]:
    """channels=auto from at most CHANNEL_SAMPLE images' headers spread over the folder: 1 where each is
    grayscale, else 3; and the words saying so."""
    from dltrain.data.images import is_grayscale

    step = max(1, len(files) // CHANNEL_SAMPLE)
    sample = files[::step][:CHANNEL_SAMPLE]
    of = "" if len(sample) == len(files) else f", judged from {len(sample):,} of the {len(files):,} images"
    if all(is_grayscale(file) for file in sample):
        return 1, f"1 (every image is grayscale{of})"
    return 3, f"3 (RGB{of})"


def image_pipeline(image_size: list[int], channels: int, augment: dict[str, Any] | None = None,
                   normalize: dict[str, list[float]] | None = None) -> Callable[[Any], Tensor]:
    """A pillow RGB image to the model's input: resized and to `channels` as the in-memory path reads it
    (dltrain.data.images.image_transform), then training's per-image `augment` steps, scaled to [0, 1], and
    normalized where the spec says."""
    from torchvision.transforms import transforms, v2

    from dltrain.data.augment import random_image_steps

    steps = [v2.Resize(tuple(image_size))] + ([v2.Grayscale(1)] if channels == 1 else [])
    steps += random_image_steps(augment or {}, image_size) + [transforms.ToTensor()]
    if normalize:
        steps.append(v2.Normalize(normalize["mean"], normalize["std"]))
    return v2.Compose(steps)


def normalization(augment: dict[str, Any] | None, kind: str, shape: tuple[int, ...]
                  ) -> dict[str, list[float]] | None:
    """The spec's normalize of data.augment.normalize for data of `kind` whose rows have `shape`: ImageNet's
    per-channel statistics (their mean for grayscale), or None."""
    from dltrain.data.augment import NORMALIZATION

    choice = (augment or {}).get("normalize") or "none"
    if choice == "none":
        return None
    if kind != IMAGE:
        raise ConfigError(f"data.augment.normalize={choice} is for images, and this data is a {kind}: set it to none")
    mean, std = NORMALIZATION[choice]
    if shape[-3] == 1:
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    return {"mean": list(mean), "std": list(std)}


def normalized(images: np.ndarray, normalize: dict[str, list[float]]) -> np.ndarray:
    """(N, C, H, W) images with each channel's mean subtracted and divided by its std."""
    shape = (1, len(normalize["mean"]), 1, 1)
    mean, std = (np.asarray(normalize[key], dtype=np.float32).reshape(shape) for key in ("mean", "std"))
    return (images - mean) / std


class BadSample(DataError):
    """An image that cannot be read, met while streaming. torch re-raises a worker's error in the main process
    as its type called with the worker's whole traceback: the message kept is the original (its last line)."""

    def __init__(self, message: str) -> None:
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


class ImageFileDataset(Dataset):
    """(image, class) per sample, each image decoded when asked (in a DataLoader worker). An unreadable one is
    an error naming it (on_bad_sample=error) or skipped (None, dropped by collate_images) and marked in
    `bad`, shared memory that every worker writes: the module's skipped() counts each file once, however many
    epochs. `batch_size` is the run's: labelled_batches' batches go through the network whole after training
    (test predictions, calibration), and a batch the training took fits in memory, on the CPU or a GPU."""

    def __init__(self, files: list[str], targets: np.ndarray, transform: Callable[[Any], Tensor], task: str,
                 on_bad_sample: str = "error", num_workers: int = 0, batch_size: int = 64) -> None:
        self.files, self.transform, self.on_bad_sample = files, transform, on_bad_sample
        self.targets = torch.from_numpy(targets) if task == MULTICLASS else torch.from_numpy(targets).float()
        self.bad = multiprocessing.RawArray("b", max(1, len(files)))
        self.num_workers, self.batch_size = num_workers, batch_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | None:
        from dltrain.data.images import read_rgb

        try:
            with read_rgb(self.files[index], self.files[index]) as image:
                return self.transform(image), self.targets[index]
        except DataError as exc:
            if self.on_bad_sample == "error":
                raise BadSample(f"{exc} (data.on_bad_sample=skip skips and counts such images)") from None
            self.bad[index] = 1
            return None

    def labelled_batches(self, rows: int | None = None, batch_size: int | None = None
                         ) -> Iterator[tuple[Tensor, Tensor]]:
        """The first `rows` samples (all when None) in order, decoded in batches (the run's size unless given)
        by the split's workers."""
        from torch.utils.data import DataLoader, Subset

        batch_size = batch_size or self.batch_size
        subset = Subset(self, range(len(self) if rows is None else min(rows, len(self))))
        workers = self.num_workers if len(subset) > batch_size else 0  # a batch or less: no processes to start
        with forked_without_gc_copies():
            batches = iter(DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_images))
        yield from batches

    def labelled_head(self, rows: int | None) -> tuple[Tensor, Tensor]:
        """The inputs and targets of the first `rows` samples, at most HEAD_ROWS (a streamed split is never
        decoded whole)."""
        return joined(self.labelled_batches(HEAD_ROWS if rows is None else min(rows, HEAD_ROWS)))


@contextmanager
def forked_without_gc_copies() -> Iterator[None]:
    """Fork DataLoader workers with the parent's objects frozen (gc.freeze), as Python's gc documentation advises:
    a worker's garbage collections then leave the pages of the objects it inherited alone. Unfrozen, each
    collection wrote to every object and so copied the parent's whole heap into each worker: after training,
    calibration's two workers grew the run from 1.2 to 3.5 GB (16,000 images of 224x224)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def collate_images(samples: list[tuple[Tensor, Tensor] | None]) -> tuple[Tensor, Tensor]:
    """A batch of the samples read (those skipped as unreadable left out)."""
    from torch.utils.data import default_collate

    kept = [sample for sample in samples if sample is not None]
    if not kept:
        raise BadSample(f"a whole batch of {len(samples)} images was unreadable (data.on_bad_sample=skip): "
                        "check the folder")
    return default_collate(kept)


class StreamedImageDataModule(SplitLoaders):
    """Train, validation and test splits of an image folder, each image read from its file in the workers:
    training's with the per-image augmentation, the others without."""

    augments_images = True  # each training image is augmented in the loader's workers

    def __init__(self, data: ImageFiles, *, batch_size: int = 64, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, seed: int = 0, num_workers: int = 0, pin_memory: bool | str = "auto",
                 class_weights: str | list[float] | None = None, augment: dict[str, Any] | None = None,
                 on_bad_sample: str = "error", rows: tuple[np.ndarray, ...] | None = None,
                 stored: DataSpec | None = None) -> None:

        super().__init__()
        self.batch_size, self.workers_setting = batch_size, num_workers
        self.num_workers = worker_count(num_workers, streamed=True)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        train, val, test = rows if rows is not None else split_rows(data, val_fraction, test_fraction, seed)
        self.notes, self.facts = list(data.notes), dict(data.facts)
        shape = (data.channels, *data.image_size)
        normalize = stored.normalize if stored is not None else normalization(augment, IMAGE, shape)
        self.spec = DataSpec(data.name, data.task, shape, len(data.class_names), kind=IMAGE,
                             class_names=data.class_names, normalize=normalize,
                             class_weights=loss_class_weights(class_weights, data, data.targets[train],
                                                              len(data.class_names)))
        plain = image_pipeline(data.image_size, data.channels, None, normalize)
        training = image_pipeline(data.image_size, data.channels, augment, normalize)
        self.train_set, self.val_set, self.test_set = (
            ImageFileDataset([data.files[i] for i in part], data.targets[part], transform, data.task,
                             on_bad_sample, self.num_workers, batch_size)
            for part, transform in ((train, training), (val, plain), (test, plain)))
        self.notes.append((logging.INFO, f"{self.num_workers} DataLoader worker(s) read and transform the images "
                                         f"(data.num_workers={num_workers}; the cores shared among DDP ranks on a "
                                         f"machine){', into pinned memory' if self.pin_memory else ''}"))

    def setup(self, stage: str) -> None:
        """The workers of each of the ranks on this machine, once the trainer knows how many there are."""
        self.num_workers = worker_count(self.workers_setting, streamed=True, ranks=self.trainer.num_devices)
        for part in (self.train_set, self.val_set, self.test_set):
            part.num_workers = self.num_workers

    def _loader(self, dataset: ImageFileDataset, shuffle: bool):
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        trainer = self.trainer
        if shuffle:  # under DDP Lightning puts its DistributedSampler in its place: each rank its share
            sampler = RandomSampler(dataset)
        elif trainer is not None and trainer.world_size > 1:  # evaluation: each image exactly once
            sampler = UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
        else:
            sampler = SequentialSampler(dataset)
        return streamed_loader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                               pin_memory=self.pin_memory, sampler=sampler, collate_fn=collate_images)

    def skipped(self) -> list[str]:
        """Every file skipped as unreadable in any split so far, by any DDP rank: each rank's marks (those of its
        workers) summed over the ranks, on every rank at once (Lightning calls teardown on each)."""
        parts = (self.train_set, self.val_set, self.test_set)
        marks = torch.from_numpy(np.concatenate([np.frombuffer(part.bad, dtype=np.int8)[:len(part)]
                                                 for part in parts]).astype(np.int32))
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            marks = trainer.strategy.reduce(marks.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        files = [file for part in parts for file in part.files]
        return [files[i] for i in np.flatnonzero(marks.numpy())]

    def teardown(self, stage: str) -> None:
        """After training and after the test: the images skipped as unreadable, counted for results.json, and
        said once the test has read its split."""
        skipped = self.skipped()
        if self.train_set.on_bad_sample == "skip":
            self.facts["skipped_samples"] = {"count": len(skipped), "files": skipped[:20]}
        if skipped and stage == "test":
            shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            logging.getLogger("dltrain").warning(f"data: {len(skipped)} unreadable image(s) skipped "
                                                 f"(data.on_bad_sample=skip; results.json lists them): {shown}")
