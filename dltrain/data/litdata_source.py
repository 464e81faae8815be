"""data=streaming: a folder dltrain-prepare wrote in LitData's optimized format (local, or an s3:// URL), read
while training by LitData's StreamingDataset and StreamingDataLoader.

The folder holds train/, val/ and test/ (each LitData's index.json and chunks) and dltrain.json, what training
needs to know: the data spec (task, classes, input shape, the table encoding fitted on the training rows), the
rows of each split, and the image pipeline. Everything in it is data: dltrain.json is JSON, and a chunk's
fields are read only by LitData's tensor and number serializers (a field its index.json declares in any other
format, pickle among them, is refused before a sample is read). On one process LitData shards the chunks over
DataLoader workers itself, and its loader's position is saved in checkpoints by Lightning (exact resume). Under
DDP, LitData would give every rank the same number of whole batches and leave the rows that fill none out of the
epoch, so there the training rows are read by index from LitData's StreamingDataset in dltrain's shares
(PreparedBatches): every row in exactly one batch an epoch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from dltrain.data.batches import joined
from dltrain.data.rank_batches import RankBatches, batch_bounds
from dltrain.data.spec import MULTICLASS, DataSpec
from dltrain.data.spec_check import checked_spec
from dltrain.errors import CheckpointError, DataError

DESCRIPTION = "dltrain.json"  # beside the splits' folders
FORMAT = "dltrain-prepared/1"
SPLITS = ("train", "val", "test")
# LitData's formats of the fields dltrain-prepare writes (tensors and numbers): the only ones read back.
SAFE_FORMATS = ("no_header_tensor", "tensor", "int", "float")
UNPICKLING_FORMATS = ("pickle", "graph")
HEAD_ROWS = 512  # the most rows labelled_head reads of a split (export's check on the run's rows)


@dataclass
class PreparedData:
    """A prepared folder as its dltrain.json describes it (data=streaming's source; nothing read from chunks yet)."""

    path: str
    spec: DataSpec
    rows: dict[str, int]
    pipeline: dict[str, Any]
    chunks: dict[str, list[int]]  # the rows of each chunk of a split (its index.json)
    notes: list[tuple[int, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind


def prepared(path: str) -> PreparedData:
    """data=streaming's source: the folder (or s3:// URL) dltrain-prepare wrote, described by its dltrain.json."""
    path = str(path).rstrip("/")
    if "://" in path and not path.startswith("s3://"):
        raise DataError(f"data.path={path}: data=streaming reads a local folder or an s3:// URL")
    description = _read_json(f"{path}/{DESCRIPTION}",
                             f"data.path={path}: no {DESCRIPTION} there (expected a folder dltrain-prepare wrote: "
                             f"dltrain-prepare data=<source> data.path=... output={path})")
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise DataError(f"{path}/{DESCRIPTION}: not a description dltrain-prepare writes (format {FORMAT})")
    try:
        spec = DataSpec.from_dict(checked_spec(description.get("spec") or {}))
    except CheckpointError as exc:
        raise DataError(f"{path}/{DESCRIPTION}: {exc}".replace("the checkpoint's data spec", "its spec")) from None
    rows = description.get("rows")
    if not isinstance(rows, dict) or not all(isinstance(rows.get(s), int) and rows[s] >= 0 for s in SPLITS) \
            or rows["train"] == 0:
        raise DataError(f"{path}/{DESCRIPTION}: rows={rows!r}: expected a count of train (at least 1), val and test")
    chunks = {split: chunk_rows(f"{path}/{split}", rows[split]) for split in SPLITS if rows[split]}
    pipeline = description.get("pipeline") if isinstance(description.get("pipeline"), dict) else {}
    said = ", ".join(f"{split} {rows[split]}" for split in SPLITS)
    notes = [(logging.INFO, f"data=streaming: {path} read while training with LitData ({said} rows)")]
    return PreparedData(path, spec, rows, pipeline, chunks, notes)


def _read_json(url: str, missing: str) -> Any:
    """A JSON file of a local folder, or of object storage (fetched by LitData's own S3 client)."""
    try:
        if url.startswith("s3://"):
            return json.loads(_fetch(url))
        with open(url) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(missing) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{url}: not readable as JSON ({type(exc).__name__}: {exc})") from None


def _fetch(url: str) -> bytes:
    """An s3:// file's bytes; any failure of the storage client (credentials, network, no such key) named."""
    import tempfile

    from litdata.streaming.fs_provider import S3FsProvider

    with tempfile.TemporaryDirectory() as folder:
        local = f"{folder}/file"
        try:
            S3FsProvider().download_file(url, local)
        except Exception as exc:  # noqa: BLE001 - boto3 raises its own types for every cause
            raise DataError(f"{url}: could not be read from object storage ({type(exc).__name__}: {exc})") from None
        with open(local, "rb") as handle:
            return handle.read()


def chunk_rows(folder: str, rows: int) -> list[int]:
    """The rows of each chunk of a split, in LitData's order of its index.json, which must hold `rows` rows; a
    split whose index.json declares a field LitData would read with anything but its tensor and number
    serializers is refused (pickle would run the code a crafted chunk names)."""
    index = _read_json(f"{folder}/index.json", f"{folder}: no index.json (expected LitData's optimized format, "
                                               "as dltrain-prepare writes it)")
    formats = (index.get("config") or {}).get("data_format") if isinstance(index, dict) else None
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise DataError(f"{folder}/index.json: no list of field formats (config.data_format)")
    unsafe = [f for f in formats if f.split(":")[0] not in SAFE_FORMATS]
    if unsafe:
        raise DataError(f"{folder}/index.json: fields stored as {', '.join(unsafe)}; refused: data=streaming reads "
                        f"only {', '.join(SAFE_FORMATS)} fields (what dltrain-prepare writes), never objects")
    sizes = [chunk.get("chunk_size") if isinstance(chunk, dict) else None for chunk in index.get("chunks") or []]
    if not all(isinstance(size, int) and size > 0 for size in sizes) or sum(sizes) != rows:
        raise DataError(f"{folder}/index.json: its chunks hold {sum(s for s in sizes if isinstance(s, int))} rows, "
                        f"and {DESCRIPTION} says {rows}: prepare the folder again")
    return sizes


class _Refused:
    """A LitData serializer slot that never deserializes anything."""

    def setup(self, data_format: str) -> None:
        raise DataError(f"a field stored as {data_format}: data=streaming reads only tensors and numbers")

    def deserialize(self, data: bytes) -> Any:
        raise DataError("data=streaming reads only tensors and numbers")


def safe_serializers() -> dict[str, Any]:
    """LitData's serializers that unpickle (pickle; graph's fallback) replaced by _Refused, should an index.json
    change after chunk_rows read it."""
    return {name: _Refused() for name in UNPICKLING_FORMATS}


class Collate:
    """Samples to a batch as the module takes it: images stored as uint8 scaled to [0, 1] (as torchvision's
    ToTensor scales them in memory), class numbers as integers for multiclass, every other target a float."""

    def __init__(self, task: str) -> None:
        self.task = task

    def __call__(self, samples: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([sample["x"] for sample in samples])
        if x.dtype == torch.uint8:
            x = x.float().div(255)
        y = torch.tensor([sample["y"] for sample in samples])
        return x, (y.long() if self.task == MULTICLASS else y.float())


class PreparedSplit:
    """One split of a prepared folder: its row count, and a StreamingDataset over it for each loader;
    labelled_batches reads the run's `batch_size` at a time (a batch the training took fits in memory)."""

    def __init__(self, path: str, rows: int, task: str, shuffle: bool, seed: int, batch_size: int = 64) -> None:
        self.path, self.rows, self.task, self.shuffle, self.seed = path, rows, task, shuffle, seed
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.rows

    def dataset(self, shuffle: bool | None = None, drop_last: bool | None = None):
        from litdata import StreamingDataset

        return StreamingDataset(self.path, shuffle=self.shuffle if shuffle is None else shuffle, seed=self.seed,
                                drop_last=drop_last, serializers=safe_serializers())

    def labelled_batches(self, rows: int | None = None, batch_size: int | None = None
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split's first `rows` rows (all: None) in their stored order, in batches: read by index, so in one
        process of several too (a loader would give it its share only)."""
        wanted, batch_size = self.rows if rows is None else min(rows, self.rows), batch_size or self.batch_size
        dataset, collate = self.dataset(shuffle=False, drop_last=False), Collate(self.task)
        for start in range(0, wanted, batch_size):
            yield collate([dataset[row] for row in range(start, min(start + batch_size, wanted))])

    def labelled_head(self, rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets of the first `rows` rows, at most HEAD_ROWS (a streamed split is never read
        whole)."""
        return joined(self.labelled_batches(HEAD_ROWS if rows is None else min(rows, HEAD_ROWS)))


class PreparedDataModule(pl.LightningDataModule):
    """The splits of a prepared folder through StreamingDataLoaders: training shuffled by LitData (seeded, per
    epoch), validation and test in order with no row dropped."""

    augments_images = False  # LitData's samples come as prepared: the module augments whole batches

    def __init__(self, data: PreparedData, *, batch_size: int = 64, num_workers: int = 0,
                 pin_memory: bool | str = "auto", seed: int = 0, class_weights: Any = None,
                 stored: DataSpec | None = None) -> None:
        super().__init__()
        if stored is not None and (stored.encoder, stored.class_names, tuple(stored.input_shape)) != \
                (data.spec.encoder, data.spec.class_names, tuple(data.spec.input_shape)):
            raise DataError(f"data.path={data.path}: its encoding, classes or input shape differ from the "
                            "checkpoint's (the folder was prepared again since): prepare it as the run read it")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        weights = stored.class_weights if stored is not None else _class_weights(class_weights, data)
        self.spec = replace(data.spec, class_weights=weights)
        self.notes, self.chunks = list(data.notes), data.chunks
        self.facts = {"streamed": {"engine": "litdata", "path": data.path, "rows": dict(data.rows)}}
        self.train_set, self.val_set, self.test_set = (
            PreparedSplit(f"{data.path}/{split}", data.rows[split], data.spec.task, split == "train", seed,
                          batch_size)
            for split in SPLITS)

    def _loader(self, split: PreparedSplit, drop_last: bool | None):
        ranks = self.trainer.world_size if self.trainer is not None else 1
        if ranks > 1 and split.rows < ranks * self.batch_size:  # Lightning stops at a rank with no batch
            name = split.path.rstrip("/").rsplit("/", 1)[-1]
            raise DataError(f"data=streaming: the {name} split's {split.rows} rows make fewer batches of "
                            f"data.batch_size={self.batch_size} than the {ranks} processes (LitData gives each "
                            f"whole batches): set data.batch_size to at most {max(1, split.rows // ranks)}")
        workers = {"persistent_workers": True, "prefetch_factor": 4} if self.num_workers > 0 else {}
        return resuming_loader()(split.dataset(drop_last=drop_last), batch_size=self.batch_size,
                                 num_workers=self.num_workers, pin_memory=self.pin_memory,
                                 collate_fn=Collate(split.task), **workers)

    def train_dataloader(self):
        """LitData's loader on one process; under DDP, PreparedBatches in dltrain's stateful loader (LitData's
        drop_last would leave rows out of every epoch)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self._loader(self.train_set, None)
        from dltrain.data.streaming import streamed_loader

        if self.train_set.rows < trainer.world_size:
            raise DataError(f"data=streaming: the train split's {self.train_set.rows} rows are fewer than the "
                            f"{trainer.world_size} processes: train on fewer processes (trainer.devices)")
        batches = PreparedBatches(self.train_set, self.chunks["train"], trainer.global_rank, trainer.world_size,
                                  trainer.current_epoch)
        return streamed_loader(batches, batch_size=None, num_workers=min(self.num_workers, len(batches)),
                               pin_memory=self.pin_memory)

    def val_dataloader(self):
        return self._loader(self.val_set, False)

    def test_dataloader(self):
        return self._loader(self.test_set, False)


class PreparedBatches(RankBatches):
    """The training split of a prepared folder for one of several DDP ranks, shared as
    dltrain.data.rank_batches shares a split (every row in exactly one batch an epoch, the same steps on every
    rank, the position in checkpoints), its rows read by index from LitData's StreamingDataset (LitData's
    format, chunk cache and object-storage reads). An epoch's order: the chunks shuffled (seeded by the seed and
    the epoch) and the rows within each chunk, so that a worker's contiguous run of batches reads few chunks."""

    def __init__(self, split: PreparedSplit, chunks: list[int], rank: int, world: int, first_epoch: int) -> None:
        super().__init__(batch_bounds(split.rows, rank, world, split.batch_size, equal=True), first_epoch)
        self.split, self.chunks = split, chunks
        self._dataset = None  # LitData's, made in the process that reads (each DataLoader worker its own)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order of the split's rows (their indices in LitData's stored order)."""
        rng = np.random.default_rng([self.split.seed, epoch])
        starts = np.concatenate([[0], np.cumsum(self.chunks)])
        return np.concatenate([starts[c] + rng.permutation(self.chunks[c]) for c in rng.permutation(len(self.chunks))])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine, skip = self.next_pass()
        order = self.order(self.epoch)
        if self._dataset is None:
            self._dataset = self.split.dataset(shuffle=False, drop_last=False)
        collate = Collate(self.split.task)
        for batch in mine[skip:]:
            rows = order[self.bounds[batch]:self.bounds[batch + 1]]
            self.done += 1
            yield collate([self._dataset[int(row)] for row in rows])


def resuming_loader() -> type:
    """LitData's StreamingDataLoader, whose restored position serves the one epoch it was saved in.

    LitData clears its `restore` flag only when an epoch's iterator runs out, and Lightning stops at the epoch's
    known length without asking for more: a loader restored from a checkpoint would replay the resumed epoch's
    order at every later epoch. Here the first iteration after load_state_dict continues the saved position,
    and every later one starts a new epoch, as in a run never stopped."""
    from litdata import StreamingDataLoader

    class ResumingLoader(StreamingDataLoader):
        def load_state_dict(self, obj: dict[str, Any]) -> None:
            super().load_state_dict(obj)
            self.resumed_epoch_started = False

        def __iter__(self) -> Any:
            if self.restore and getattr(self, "resumed_epoch_started", True):
                self.restore = False
            self.resumed_epoch_started = True
            return super().__iter__()

    return ResumingLoader


def _class_weights(choice: Any, data: PreparedData) -> list[float] | None:
    """data.class_weights from the training split's class counts, which dltrain-prepare recorded."""
    if choice is None:
        return None
    import numpy as np

    from dltrain.data.arrays import ArrayData
    from dltrain.data.splits import loss_class_weights

    counts = data.pipeline.get("train_class_counts") or []
    if not all(isinstance(n, int) and n >= 0 for n in counts) or sum(counts) != data.rows["train"]:
        raise DataError(f"{data.path}/{DESCRIPTION}: train_class_counts={counts!r} are not counts of the "
                        f"{data.rows['train']} training rows; prepare the folder again")
    targets = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    stand_in = ArrayData(data.name, np.zeros((len(targets), 0)), targets, data.spec.task)  # the counts as rows
    return loss_class_weights(choice, stand_in, targets, data.spec.num_classes)


def prepared_datamodule(data: PreparedData, options: dict[str, Any], seed: int, rows: Any = None,
                        stored: DataSpec | None = None) -> PreparedDataModule:
    """data=streaming's data module (datamodule.build_datamodule's branch): its loader keys, workers as
    data.num_workers says (auto: the cores); the split is the folder's (config.checks refuses cv.folds)."""
    from dltrain.data.streaming import worker_count

    assert rows is None, "cross-validation folds of data=streaming are refused by the config's checks"
    options = {key: value for key, value in options.items() if key not in ("val_fraction", "test_fraction")}
    options["num_workers"] = worker_count(options.get("num_workers", "auto"), streamed=True)
    return PreparedDataModule(data, seed=seed, stored=stored, **options)
