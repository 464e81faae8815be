"""What a task (multi-class, binary, regression) means for outputs and metrics (the loss: dltrain.training.losses)."""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor

from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION, DataSpec


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
