"""Temperature scaling (Guo et al., 2017): after training, one number T fitted on the validation split divides a
classifier's logits, so that its probabilities say how often it is right. argmax(z / T) = argmax(z): the classes,
and so accuracy, stay as they were. The test split measures what it did: expected calibration error (torchmetrics'
CalibrationError, 15 bins) and Brier score before and after, and a reliability diagram (calibration.png).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dltrain.data.spec import BINARY, MULTICLASS, DataSpec
from dltrain.errors import ConfigError
from dltrain.rundir.layout import RunDir

log = logging.getLogger("dltrain")
BINS = 15


def calibration_method(choice: str, spec: DataSpec) -> str | None:
    """What `calibration` does for this task: "temperature", or None; temperature on a regression is refused."""
    classifier = spec.task in (MULTICLASS, BINARY)
    if choice == "temperature" and not classifier:
        raise ConfigError(f"calibration=temperature calibrates a classifier's probabilities, and data={spec.name} is a "
                          f"{spec.task} task: set calibration=auto or none")
    return "temperature" if classifier and choice in ("auto", "temperature") else None


def logits_of(module: Any, dataset: Any, rows: int | None = None) -> tuple[Tensor, Tensor]:
    """The module's raw outputs (the network's logits, no temperature) and the targets of a split (its first
    `rows` rows: those a batch limit covered; all: None)."""
    was_training = module.training
    module.eval()
    outputs, targets = [], []
    with torch.inference_mode():
        for x, y in dataset.labelled_batches(rows):
            outputs.append(module(x.to(module.device)).float().cpu())
            targets.append(y)
    module.train(was_training)
    return torch.cat(outputs), torch.cat(targets)


def fit_temperature(logits: Tensor, targets: Tensor, task: str) -> float:
    """The T > 0 that minimizes the negative log-likelihood of logits / T (LBFGS on log T, from T = 1)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimizer.zero_grad()
        value = _nll(logits / log_t.exp(), targets, task)
        value.backward()
        return value

    optimizer.step(loss)
    temperature = float(log_t.detach().exp())
    return temperature if math.isfinite(temperature) and temperature > 0 else 1.0


def _nll(logits: Tensor, targets: Tensor, task: str) -> Tensor:
    if task == MULTICLASS:
        return torch.nn.functional.cross_entropy(logits, targets.long())
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], targets.float().reshape(-1))


def probabilities(logits: Tensor, task: str, temperature: float = 1.0) -> Tensor:
    """Rows x classes probabilities of logits / temperature (a binary task's two columns: negative, positive)."""
    if task == MULTICLASS:
        return torch.softmax(logits / temperature, dim=1)
    positive = torch.sigmoid(logits[:, 0] / temperature)
    return torch.stack([1 - positive, positive], dim=1)


def scores(probs: Tensor, targets: Tensor) -> dict[str, float]:
    """Expected calibration error (torchmetrics, BINS equal-width bins of the top probability) and Brier score
    (the mean over rows of the squared distance between the probabilities and the one-hot answer)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    classes = targets.long().reshape(-1)
    ece = multiclass_calibration_error(probs, classes, num_classes=probs.shape[1], n_bins=BINS, norm="l1")
    one_hot = torch.nn.functional.one_hot(classes, probs.shape[1]).float()
    return {"ece": float(ece), "brier": float(((probs - one_hot) ** 2).sum(dim=1).mean())}


def calibrated_figures(module: Any, batches: Any) -> dict[str, float]:
    """dltrain-eval's figures of a calibrated checkpoint on labelled `batches`: its temperature, and the loss
    (negative log-likelihood), ECE and Brier score of its calibrated probabilities beside the network's own."""
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        pairs = [(module(x.to(module.device)).float().cpu(), y) for x, y in batches]
    module.train(was_training)
    logits, targets = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    task, temperature = module.spec.task, module.temperature
    own, calibrated = (scores(probabilities(logits, task, t), targets) for t in (1.0, temperature))
    return {"temperature": temperature, "loss": float(_nll(logits / temperature, targets, task)),
            "ece": round(calibrated["ece"], 6), "brier": round(calibrated["brier"], 6),
            "uncalibrated_ece": round(own["ece"], 6), "uncalibrated_brier": round(own["brier"], 6)}


def calibrate(module: Any, datamodule: Any, choice: str, run_dir: Path | None,
              rows: dict[str, int | None] | None = None) -> dict[str, Any] | None:
    """Fit the temperature on the validation split, put it into `module` (module.temperature: every prediction
    reads it), measure the test split before and after, draw calibration.png into `run_dir`; the record for
    results.json, or None where `choice` calibrates nothing for this task. `rows`: the validation and test rows
    the run's batch limits covered ({"val": n, "test": n}; a split not named is read whole)."""
    spec = module.spec
    method = calibration_method(choice, spec)
    if method is None:
        return None
    if not len(datamodule.val_set):
        log.warning("calibration: no validation rows to fit a temperature on; the probabilities stay uncalibrated")
        return {"method": None, "why": "no validation rows"}
    rows = rows or {}
    val_logits, val_targets = logits_of(module, datamodule.val_set, rows.get("val"))
    right = probabilities(val_logits, spec.task).argmax(dim=1) == val_targets.long().reshape(-1)
    if bool(right.all()):  # the likelihood then grows as T falls to 0: no temperature is the fitted one
        log.warning(f"calibration: every one of the {len(right)} validation rows is classified right, so no "
                    "temperature can be fitted on them; the probabilities stay the network's own")
        return {"method": None, "why": "every validation row classified right"}
    temperature = fit_temperature(val_logits, val_targets, spec.task)
    module.temperature = temperature
    record: dict[str, Any] = {"method": method, "temperature": round(temperature, 6), "fitted_on": "val",
                              "val_rows": len(val_targets)}
    if len(datamodule.test_set):
        logits, targets = logits_of(module, datamodule.test_set, rows.get("test"))
        before, after = (scores(probabilities(logits, spec.task, t), targets) for t in (1.0, temperature))
        record["test"] = {"rows": len(targets), "ece_before": round(before["ece"], 6),
                          "ece_after": round(after["ece"], 6),
                          "brier_before": round(before["brier"], 6), "brier_after": round(after["brier"], 6)}
        if run_dir is not None:
            from dltrain.report.plots import reliability_diagram

            reliability_diagram(probabilities(logits, spec.task), probabilities(logits, spec.task, temperature),
                                targets, temperature, RunDir(run_dir).plot("calibration"))
            record["plot"] = "calibration.png"
    on_test = record.get("test")
    log.info(f"calibration: temperature {temperature:.3f} fitted on the validation split ({len(val_targets)} rows)"
             + (f"; test ECE ({on_test['rows']} rows) {on_test['ece_before']:.4f} -> {on_test['ece_after']:.4f}, "
                f"Brier {on_test['brier_before']:.4f} -> {on_test['brier_after']:.4f}" if on_test else "")
             + "; the classes, and so accuracy, unchanged")
    return record
