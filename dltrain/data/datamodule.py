"""Split in-memory data (seeded, stratified), encode it with training statistics, and serve it in batches."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from dltrain.data.arrays import ArrayData
from dltrain.data.image_stream import (IMAGE_FOLDER, ImageFiles, StreamedImageDataModule, listed_image_folder,
                                       normalization, normalized)
from dltrain.data.batches import TensorBatchDataset, TensorBatchSampler, keep_batch
from dltrain.data.encoding import TableEncoder
from dltrain.data.scaling import SequenceScaler
from dltrain.data.streaming import refuse_stream, worker_count
from dltrain.data.table_module import TABLE_SOURCE, StreamedTableModule, load_table
from dltrain.data.table_source import TableSource
from dltrain.data.splits import Rows, SplitLoaders, loss_class_weights, split_rows
from dltrain.data.spec import MULTICLASS, REGRESSION, SEQUENCE, TABLE, TEXT, DataSpec
from dltrain.data.text import TextEncoder, tokenize
from dltrain.config.instantiate import build
from dltrain.config.schema import DataLoading

# Keys of a data config that shape the batches; every other key goes to the source (its _target_).
LOADER_KEYS = tuple(DataLoading.model_fields)
PREPARED = "dltrain.data.litdata_source.prepared"  # data=streaming's source


class ArrayDataModule(SplitLoaders):
    """Train, validation and test splits of an ArrayData, as whole tensors sliced into batches."""

    def __init__(
        self,
        data: ArrayData,
        *,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        class_weights: str | list[float] | None = None,
        rows: Rows | None = None,
        stored: DataSpec | None = None,
        augment: dict[str, Any] | None = None,
    ) -> None:
        """`rows` fixes the three parts (a cross-validation fold); by default they are drawn by split_rows.
        `stored`: a checkpoint's data spec, whose encoding and target scale are applied instead of fitting them
        on the training rows (the run's rows read as its training read them, whatever has changed since)."""
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        train, val, test = rows if rows is not None else split_rows(data, val_fraction, test_fraction, seed)
        self.notes = list(data.notes)  # what the source and the encoding inferred, shown once the run starts
        self.facts = dict(data.facts)  # the same for results.json (tables: columns left out, rows dropped)
        features, encoder, lines = encoded(data, train, stored.encoder if stored is not None else None)
        self.notes += lines
        normalize = stored.normalize if stored is not None else normalization(augment, data.kind, features.shape)
        if normalize:  # images: as the streamed path's pipeline and every later command read them
            features = normalized(features, normalize)
        y = data.targets
        num_classes = 0
        if data.task != REGRESSION:
            num_classes = len(data.class_names) if data.class_names else int(y.max()) + 1
        target_mean, target_std = target_scale(data, train, stored)
        self.spec = DataSpec(
            data.name, data.task, tuple(features.shape[1:]), num_classes, target_mean, target_std,
            kind=data.kind, class_names=data.class_names, encoder=encoder, normalize=normalize,
            class_weights=loss_class_weights(class_weights, data, y[train], num_classes),
        )
        self.train_set, self.val_set, self.test_set = (self._tensors(features, y, rows) for rows in (train, val, test))

    def _tensors(self, features: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> TensorBatchDataset:
        return tensor_dataset(features[rows], targets[rows], self.spec)

    def _loader(self, dataset: TensorBatchDataset, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        if shuffle:
            sampler = RandomSampler(dataset)
        elif trainer is not None and trainer.world_size > 1:
            # Evaluation over several processes: each row exactly once (Lightning's default sampler pads the
            # shards with repeated rows), so validation and test metrics are those of the whole split.
            sampler = UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
        else:
            sampler = SequentialSampler(dataset)
        return DataLoader(
            dataset,
            batch_sampler=TensorBatchSampler(sampler, self.batch_size, drop_last=False),
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )


def encoded(data: ArrayData, train: np.ndarray, kept: dict[str, Any] | None
            ) -> tuple[np.ndarray, dict[str, Any] | None, list[tuple[int, str]]]:
    """Every row of `data` as the model reads it, encoded with statistics of the `train` rows (or with `kept`,
    a checkpoint's stored encoding); the encoding as stored with the model, and the start lines saying it."""
    if data.kind == TEXT:
        tokens = tokenize(data.features[data.text["column"]], data.text["analyzer"])  # once, every row
        training = [tokens[row] for row in train]
        fitted = TextEncoder.from_dict(kept) if kept else TextEncoder.fit(training, **data.text)
        return fitted.ids(tokens), fitted.to_dict(), [(logging.INFO, line) for line in fitted.describe(training)]
    if data.kind == TABLE:
        fitted = TableEncoder.from_dict(kept) if kept else TableEncoder.fit(data.features.iloc[train])
        lines, warnings = fitted.describe(len(train))
        encoder = fitted.to_dict()
        if "excluded_columns" in data.facts:  # so the preprocessing says which columns the model never reads
            encoder["excluded_columns"] = data.facts["excluded_columns"]
        notes = [(logging.INFO, line) for line in lines] + [(logging.WARNING, line) for line in warnings]
        return fitted.transform(data.features), encoder, notes
    if data.kind == SEQUENCE:
        fitted = SequenceScaler.from_dict(kept) if kept else SequenceScaler.fit(data.features[train])
        return (fitted.transform(data.features, f"data={data.name}"), fitted.to_dict(),
                [(logging.INFO, fitted.describe())])
    return np.asarray(data.features, dtype=np.float32), None, []


def target_scale(data: ArrayData, train: np.ndarray, stored: DataSpec | None) -> tuple[float, float]:
    """The mean and standard deviation a regression target is standardized with: the training rows' (in
    float64: the variance of large float32 values overflows float32), or a checkpoint's stored ones."""
    if data.task != REGRESSION:
        return 0.0, 1.0
    if stored is not None:
        return stored.target_mean, stored.target_std
    numbers = data.targets[train].astype(np.float64)
    return float(numbers.mean()), float(numbers.std()) or 1.0


def load_data(data_cfg: dict[str, Any], stored: DataSpec | None = None, whole: bool = False
              ) -> ArrayData | ImageFiles | TableSource:
    """The whole data set from its source: `_target_` and every key but LOADER_KEYS; or, where the source
    streams (data.stream), its listing (`stored`: a checkpoint's spec, whose image channels are kept) or a table
    opened to be streamed, unless `whole` (cross-validation) needs it in memory."""
    source = {k: v for k, v in data_cfg.items() if k not in LOADER_KEYS}
    if data_cfg.get("_target_") == IMAGE_FOLDER:
        listed, line = listed_image_folder(data_cfg, stored)
        if listed is not None:
            return listed
        data = build(source, "data", _convert_="all")
        data.notes.append((logging.INFO, line))
        data.facts["data_path"] = {"streamed": False, "why": line}
        return data
    if source.get("_target_") == TABLE_SOURCE:
        return load_table(data_cfg, source, whole)
    if data_cfg.get("stream") is True and data_cfg.get("_target_") != PREPARED:
        refuse_stream(f"data={data_cfg['_target_'].rsplit('.', 1)[-1]}")
    return build(source, "data", _convert_="all")


def tensor_dataset(features: np.ndarray, targets: np.ndarray, spec: DataSpec) -> TensorBatchDataset:
    """Rows as the module takes them: class numbers (floats for binary), a regression target standardized
    with the training split's mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(features))
    y = torch.from_numpy(targets)
    if spec.task == REGRESSION:
        y = (y.float() - spec.target_mean) / spec.target_std
    elif spec.task != MULTICLASS:
        y = y.float()
    return TensorBatchDataset(x, y)


def evaluation_loader(dataset: TensorBatchDataset, batch_size: int) -> DataLoader:
    """Batches of `dataset` in order, one process (dltrain-eval on a new labelled file)."""
    return DataLoader(dataset, batch_sampler=TensorBatchSampler(SequentialSampler(dataset), batch_size, drop_last=False),
                      collate_fn=keep_batch)


def build_datamodule(data_cfg: dict[str, Any], seed: int, data: ArrayData | ImageFiles | TableSource | None = None,
                     rows: Rows | None = None, stored: DataSpec | None = None
                     ) -> ArrayDataModule | StreamedImageDataModule | StreamedTableModule:
    """The data module of a data config (of `data` already loaded, split into `rows`, when given)."""
    if data_cfg.get("_target_") == PREPARED:  # data=streaming: a folder dltrain-prepare wrote, read by LitData
        from dltrain.data.litdata_source import prepared_datamodule

        options = {k: v for k, v in data_cfg.items() if k in LOADER_KEYS and k not in ("augment", "stream", "on_bad_sample")}
        return prepared_datamodule(data if data is not None else load_data(data_cfg), options, seed, rows, stored)
    data = data if data is not None else load_data(data_cfg, stored)
    if isinstance(data, ImageFiles):
        options = {k: v for k, v in data_cfg.items() if k in LOADER_KEYS and k != "stream"}
        return StreamedImageDataModule(data, seed=seed, rows=rows, stored=stored, **options)
    options = {k: v for k, v in data_cfg.items() if k in LOADER_KEYS and k not in ("stream", "on_bad_sample")}
    if isinstance(data, TableSource):
        return StreamedTableModule(data, seed=seed, stored=stored, **{k: v for k, v in options.items() if k != "augment"})
    options["num_workers"] = worker_count(options.get("num_workers", 0), streamed=False)
    return ArrayDataModule(data, seed=seed, rows=rows, stored=stored, **options)


def stored_datamodule(config: dict[str, Any], spec: DataSpec) -> ArrayDataModule:
    """The data module of a run's stored config, with its checkpoint's encoding (`spec`), read as training read
    it and never downloading: a checkpoint does not send for files (dltrain-eval, and dltrain-export's check
    on the run's test rows)."""
    data = dict(config["data"]) | ({"download": False} if "download" in config["data"] else {})
    return build_datamodule(data, config["seed"], stored=spec)
