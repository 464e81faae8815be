"""What the model and the training module need to know about the data: its task, its kind and the DataSpec.

Kept free of torch and torchmetrics, so that reading a checkpoint's data spec (and refusing a crafted one)
needs neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TABLE, IMAGE, SEQUENCE, TEXT = "table", "image", "sequence", "text"
KINDS = (TABLE, IMAGE, SEQUENCE, TEXT)
MULTICLASS, BINARY, REGRESSION = "multiclass", "binary", "regression"
TASKS = (MULTICLASS, BINARY, REGRESSION)


@dataclass(frozen=True)
class DataSpec:
    """What the model and the training module need to know about the data."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int = 0
    target_mean: float = 0.0
    target_std: float = 1.0
    kind: str = "table"  # table | image | sequence | text
    class_names: list[str] | None = None
    encoder: dict[str, Any] | None = None  # TableEncoder.to_dict() of a table, TextEncoder's of text,
    # SequenceScaler's of sequences (null in checkpoints older than it: not scaled)
    class_weights: list[float] | None = None  # the loss's weight of each class (data.class_weights)
    # images: each channel's {"mean": [...], "std": [...]} subtracted and divided after scaling to [0, 1], as
    # every image is read (data.augment.normalize); null: not normalized
    normalize: dict[str, list[float]] | None = None

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task == MULTICLASS else 1

    def labels(self) -> list[str]:
        """The classes' names as the data gave them, or their numbers, in output order."""
        return self.class_names or [str(i) for i in range(max(self.num_classes, 2))]

    def to_dict(self) -> dict:
        """Plain containers only, so a checkpoint loads with weights_only."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "DataSpec":
        return cls(**{**data, "input_shape": tuple(data["input_shape"])})
