"""What a task (multi-class, binary, regression) means for outputs and metrics (the loss: dltrain.losses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchmetrics
from torch import Tensor

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
    kind: str = "table"  # table | image | sequence
    class_names: list[str] | None = None
    encoder: dict[str, Any] | None = None  # TableEncoder.to_dict() of a table
    class_weights: list[float] | None = None  # the loss's weight of each class (data.class_weights)

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


def make_metrics(spec: DataSpec) -> torchmetrics.MetricCollection:
    """The task's metrics, keyed by their short names (acc, f1, auroc, mse, mae, r2).

    validate_args=False: the inputs come from shape_outputs/metric_inputs, and checking them again at
    every step (torch.unique over the batch) costs more than the update itself.
    """
    if spec.task == MULTICLASS:
        classes = {"task": "multiclass", "num_classes": spec.num_classes, "validate_args": False}
        metrics = {"acc": torchmetrics.Accuracy(**classes), "f1": torchmetrics.F1Score(**classes, average="macro")}
    elif spec.task == BINARY:
        binary = {"task": "binary", "validate_args": False}
        metrics = {"acc": torchmetrics.Accuracy(**binary), "auroc": torchmetrics.AUROC(**binary)}
    else:
        metrics = {
            "mse": torchmetrics.MeanSquaredError(),
            "mae": torchmetrics.MeanAbsoluteError(),
            "r2": torchmetrics.R2Score(),
        }
    return torchmetrics.MetricCollection(metrics)


def shape_outputs(spec: DataSpec, outputs: Tensor) -> Tensor:
    """Model outputs in the form the loss takes: (N, C) logits, or (N,) for binary and regression."""
    return outputs if spec.task == MULTICLASS else outputs.squeeze(-1)


def metric_inputs(spec: DataSpec, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Predictions and targets as the metrics take them; regression back in the data's own units."""
    if spec.task == BINARY:
        return torch.sigmoid(outputs), targets.long()
    if spec.task == REGRESSION:
        return outputs * spec.target_std + spec.target_mean, targets * spec.target_std + spec.target_mean
    return outputs, targets
