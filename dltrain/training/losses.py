"""The loss of a run: a `loss` config (conf/loss/) checked against the data's task, with class weights applied."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION, DataSpec
from dltrain.errors import ConfigError
from dltrain.config.instantiate import build
from dltrain.config.schema import Fraction

# loss option -> the tasks it fits
FITS = {
    "mse": (REGRESSION,),
    "mae": (REGRESSION,),
    "huber": (REGRESSION,),
    "cross_entropy": (MULTICLASS,),
    "bce": (BINARY,),
    "kl_div": (MULTICLASS,),
}
# loss=auto: the task's own loss, and the class that computes it
AUTO = {MULTICLASS: "cross_entropy", BINARY: "bce", REGRESSION: "mse"}
AUTO_TARGETS = {"cross_entropy": "torch.nn.CrossEntropyLoss", "bce": "torch.nn.BCEWithLogitsLoss",
                "mse": "torch.nn.MSELoss"}
# loss option -> the keyword its class takes class weights by
WEIGHT_KEYWORDS = {"cross_entropy": "weight", "bce": "pos_weight"}


class SoftTargetKLDiv(nn.Module):
    """KL(target || softmax(logits)), averaged over the batch. Class labels become soft targets:
    (1 - smoothing) on the label plus smoothing / classes on every class; (N, C) probabilities are taken as they are.
    """

    def __init__(self, smoothing: Fraction = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.dim() < logits.dim():
            classes = logits.shape[-1]
            target = F.one_hot(target.long(), classes).to(logits.dtype) * (1 - self.smoothing) + self.smoothing / classes
        return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="batchmean")


def loss_name(loss_cfg: dict[str, Any] | None, task: str) -> str:
    """The loss option a run uses: the configured one, or the task's own for auto."""
    name = (loss_cfg or {}).get("name", "auto")
    return AUTO[task] if name == "auto" else name


def build_loss(loss_cfg: dict[str, Any] | None, spec: DataSpec) -> nn.Module:
    """The loss module; ConfigError (before any training) when it does not fit the task or the class weights."""
    name = loss_name(loss_cfg, spec.task)
    if name not in FITS:
        raise ConfigError(f"loss.name={name!r} is not a loss dltrain knows: expected auto | {' | '.join(FITS)}")
    if spec.task not in FITS[name]:
        fitting = " | ".join(n for n, tasks in FITS.items() if spec.task in tasks)
        raise ConfigError(f"loss={name} is for {' or '.join(FITS[name])} data, but data={spec.name} is {spec.task}: "
                          f"choose loss={fitting} (or loss=auto)")
    weights = {}
    if spec.class_weights:
        if name not in WEIGHT_KEYWORDS:
            raise ConfigError(f"data.class_weights works with loss=cross_entropy or loss=bce, not loss={name}: "
                              "drop data.class_weights or change the loss")
        w = torch.tensor(spec.class_weights, dtype=torch.float32)
        # BCE weighs the positive class against the negative: the ratio of the two class weights.
        weights[WEIGHT_KEYWORDS[name]] = w if name == "cross_entropy" else w[1:] / w[0]
    target = {k: v for k, v in (loss_cfg or {}).items() if k != "name"}
    if "_target_" not in target:
        target = {"_target_": AUTO_TARGETS[name]}
    return build(target, "loss", **weights)
