"""data=csv/parquet's two paths: the choice between them (data.stream), and the data module of the streamed one.

Streamed, the table is surveyed once (dltrain.data.table_survey) and served by TableBatches; the module offers
what the in-memory ArrayDataModule offers the rest of dltrain: the data spec, the lines and facts to say, the
splits' sizes, the first rows (the model's dry run) and the test rows in order (test_predictions.csv).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from dltrain.data.arrays import TEST, TRAIN, VAL, ArrayData
from dltrain.data.batches import joined
from dltrain.data.spec import REGRESSION, TABLE, DataSpec
from dltrain.data.splits import SplitLoaders
from dltrain.data.streaming import choose_stream, streamed_loader
from dltrain.data.table_loader import TableBatches
from dltrain.data.table_source import TableSource, decoded_size, table_files
from dltrain.data.table_survey import Survey, open_table, survey
from dltrain.data.encoding import TableEncoder
from dltrain.data.targets import class_weights_of
from dltrain.config.instantiate import build
from dltrain.errors import ConfigError

TABLE_SOURCE = "dltrain.data.tables.table"


def load_table(data_cfg: dict[str, Any], source: dict[str, Any], whole: bool = False) -> ArrayData | TableSource:
    """A data=csv/parquet table read whole, or opened to be streamed (data.stream; `whole`: cross-validation
    needs it in memory); a start line says which path and why, the decoded size estimated from the files'
    metadata and sizes, reading no rows."""
    files = table_files(source["path"])
    for key in ("val_path", "test_path"):
        if source.get(key):
            files += table_files(source[key], f"data.{key}")
    stream, line = choose_stream(data_cfg.get("stream", "auto"), decoded_size(files), str(source["path"]))
    if stream and whole:
        raise ConfigError(f"cross-validation holds the table in memory, and {line}: set data.stream=false, or "
                          "train once (cv.folds=0)")
    if not stream:
        data = build(source, "data", _convert_="all")
        data.notes.insert(0, (logging.INFO, line))
        data.facts["data_path"] = {"streamed": False, "why": line}
        return data
    table = open_table(source, data_cfg["val_fraction"], data_cfg["test_fraction"],
                       data_cfg.get("on_bad_sample", "error"))
    table.notes.insert(0, (logging.INFO, line))
    table.facts["data_path"] = {"streamed": True, "why": line}
    return table


HELD_BYTES = 256 * 2**20  # the most a process holds of the validation split's encoded rows (StreamedTableModule)
CHECK_ROWS = 4096  # the most rows labelled_head() reads of a split (export's check on the run's rows)


class StreamedSplit:
    """A split of a streamed table: its rows (len), and batches of them for a rank."""

    def __init__(self, module: StreamedTableModule, part: int) -> None:
        self.module, self.part = module, part

    def __len__(self) -> int:
        return self.module.survey.total(self.part)

    def batches(self, batch_size: int, shuffle: bool = False, rank: int = 0, world: int = 1, epoch: int = 0,
                read_ahead: bool = False, hold: bool = False) -> TableBatches:
        module = self.module
        return TableBatches(module.source, module.survey, module.spec, self.part, batch_size=batch_size,
                            seed=module.seed, shuffle=shuffle, rank=rank, world=world, first_epoch=epoch,
                            read_ahead=read_ahead, hold=hold)

    def labelled_head(self, rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets of the split's first `rows` rows, at most CHECK_ROWS (a streamed split is never
        held whole)."""
        return joined(self.labelled_batches(CHECK_ROWS if rows is None else min(rows, CHECK_ROWS)))

    def labelled_batches(self, rows: int | None = None, batch_size: int = 8192
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split's rows in file order, `batch_size` at a time (its first `rows` only, when given)."""
        left = len(self) if rows is None else rows
        for x, y in self.batches(batch_size):
            if left <= 0:
                return
            yield x[:left], y[:left]
            left -= len(y)


class StreamedTableModule(SplitLoaders):
    """A table too large to hold, read from its files while training (see dltrain.data.table_loader)."""

    def __init__(self, source: TableSource, *, batch_size: int = 64, seed: int = 0,
                 num_workers: int | str = "auto", pin_memory: bool | str = "auto",
                 class_weights: str | list[float] | None = None, stored: DataSpec | None = None, **_: Any) -> None:
        super().__init__()
        self.source, self.seed, self.batch_size, self.num_workers = source, seed, batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.survey = found = survey(source, seed)
        encoder = TableEncoder.from_dict(stored.encoder) if stored is not None and stored.encoder else found.encoder
        lines, warnings = encoder.describe(found.total(TRAIN))
        reading = ("read by each training process (data.num_workers=auto), ahead on a thread where a core is spare "
                   "for it: training on a GPU, or more cores than torch's threads" if num_workers == "auto"
                   else f"read in {num_workers} DataLoader worker process(es) per training process")
        held = ("held in memory once read (later epochs' validation reads no file)"
                if self._held(found.total(VAL), 1, encoder.num_features)
                else f"read from the files each epoch (more than {HELD_BYTES // 2**20} MB encoded)")
        self.notes = [*found.notes, (logging.INFO, f"table batches {reading}; validation rows {held}"),
                      *[(logging.INFO, text) for text in lines], *[(logging.WARNING, text) for text in warnings]]
        self.facts = found.facts
        mean, std = ((stored.target_mean, stored.target_std) if stored is not None
                     else (found.target_mean, found.target_std))
        self.spec = DataSpec(source.name, found.task, (encoder.num_features,),
                             0 if found.task == REGRESSION else len(found.class_names), mean, std, kind=TABLE,
                             class_names=found.class_names,
                             encoder=encoder.to_dict() | {"excluded_columns": source.facts["excluded_columns"]},
                             class_weights=_class_weights(class_weights, found))
        self.train_set, self.val_set, self.test_set = (StreamedSplit(self, part) for part in (TRAIN, VAL, TEST))

    def _loader(self, split: StreamedSplit, shuffle: bool):
        trainer = self.trainer
        rank, world, epoch = ((trainer.global_rank, trainer.world_size, trainer.current_epoch) if trainer is not None
                              else (0, 1, 0))
        # auto: no worker process. A table's batch is a slice of a window that this process reads (TableBatches);
        # passing each batch from a worker process cost more than the slice on 2 cores.
        workers = 0 if self.num_workers == "auto" else int(self.num_workers)
        hold = split is self.val_set and self._held(len(split), world, self.spec.input_shape[0])
        dataset = split.batches(self.batch_size, shuffle, rank, world, epoch, read_ahead=_core_spare(trainer),
                                hold=hold)
        return streamed_loader(dataset, batch_size=None, num_workers=max(0, min(workers, len(dataset))),
                               pin_memory=self.pin_memory)

    @staticmethod
    def _held(rows: int, world: int, features: int) -> bool:
        """Whether a process's share of the validation rows, encoded, fits HELD_BYTES: validation reads the same
        rows every epoch, and a split's rows are a part of every piece, so each pass would read the whole table."""
        return rows / world * (features * 4 + 8) <= HELD_BYTES


def _core_spare(trainer: Any) -> bool:
    """Whether a core is left for reading ahead: the model trains on an accelerator, or this machine's training
    processes (torch's threads each) leave a core free."""
    from dltrain.distributed import cpu_cores

    if trainer is not None and trainer.strategy.root_device.type != "cpu":
        return True
    return cpu_cores() > torch.get_num_threads() * (trainer.num_devices if trainer is not None else 1)


def _class_weights(choice: str | list[float] | None, found: Survey) -> list[float] | None:
    """data.class_weights as the in-memory path reads it, balanced from the survey's training counts."""
    return class_weights_of(choice, found.task, found.class_counts, "this table")
