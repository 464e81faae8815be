"""Library chatter that does not help a dltrain user, silenced once by every command that trains or reads a run."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning's advice that fits other workloads (in-memory batches need no worker processes, metrics
# are logged per epoch so short epochs are fine) and deprecations inside Lightning a user cannot act on.
_UNHELPFUL_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's own use of a torch API
    r".*when logging on epoch level in distributed setting.*",  # values come reduced by torchmetrics
    r".*Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`.*",  # dltrain's repeats no row
    r".*Grad strides do not match bucket view strides.*",  # torch's DDP on CPU convolutions: nothing to change
    r".*The default weight initialization of .* will be changed.*",  # torchvision's future default, not the run's
    r".*Your `IterableDataset` has `__len__` defined.*",  # LitData's: it shards over workers itself
    r".*resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable.*",
    # dltrain's resume line says so in its words
    r".*'set_vital' is deprecated.*",  # torchdata's StatefulDataLoader calling torch's API, not the run
)


def quiet_libraries() -> None:
    """Silence library chatter that does not help a dltrain user."""
    for pattern in _UNHELPFUL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero", "mlflow", "alembic",
                 "litdata"):  # litdata: its cache size and file access, said at each loader
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its loggers' level when imported
    logging.getLogger("pytorch_lightning.loggers.mlflow").addFilter(_NotCreatingExperiment())


class _NotCreatingExperiment(logging.Filter):
    """MLFlowLogger's warning that it creates a missing experiment: what a first run should do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not found. Creating it" not in record.getMessage()
