"""explain=true: why the trained model decides as it does, on the test split.

Tables: permutation importance of each input column, what the test metric loses when that column's values are
shuffled among the rows (mean and spread over repeats), as importance.csv and importance.png. The few lines are
dltrain's own: scikit-learn's permutation_importance shuffles one encoded feature at a time, and a text
column's one-hot features must move together to stand for the column. Images: integrated gradients (captum)
of the predicted class for a few test images, as attributions.png.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dltrain.data.spec import BINARY, IMAGE, MULTICLASS, TABLE, DataSpec
from dltrain.errors import ConfigError
from dltrain.rundir.layout import RunDir

log = logging.getLogger("dltrain")
REPEATS = 5  # shuffles of each column
IMAGES = 4  # test images explained
TOP = 5  # columns named on the terminal and in results.json
SAMPLE_ROWS = 20_000  # the most test rows permutation importance shuffles: a seeded sample of a larger split


def check_explainable(spec: DataSpec) -> None:
    """Refuse explain=true, before training, for data it has no explanation for, or without captum for images."""
    if spec.kind not in (TABLE, IMAGE):
        raise ConfigError(f"explain=true explains tables (permutation importance) and images (integrated "
                          f"gradients), and data={spec.name} is {spec.kind} data: set explain=false")
    if spec.kind == IMAGE:
        from dltrain.config.checks import installed

        if not installed("captum"):
            raise ConfigError("explain=true on images needs the package captum, which is not installed: "
                              "pip install \"dltrain[explain]\"")


def explain(module: Any, test_set: Any, run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Write the run's explanation files; returns results.json's "explanations" record."""
    if not len(test_set):
        log.warning("explain=true: the test split is empty, so nothing was explained")
        return {"method": None, "why": "no test rows"}
    if module.spec.kind == IMAGE:
        return _image_attributions(module, test_set.labelled_head(IMAGES)[0], run_dir)
    rows, targets = test_rows(test_set, seed)
    return _permutation_importance(module, rows, targets, run_dir, seed, len(test_set))


def test_rows(test_set: Any, seed: int) -> tuple[Tensor, Tensor]:
    """The test split's rows and targets, or a seeded sample of SAMPLE_ROWS of them where it has more (read a
    batch at a time: a streamed split is never held whole; every row equally likely, whatever the file's order)."""
    total = len(test_set)
    keep = None
    if total > SAMPLE_ROWS:
        keep = torch.zeros(total, dtype=torch.bool)
        keep[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:SAMPLE_ROWS]] = True
    xs, ys, start = [], [], 0
    for x, y in test_set.labelled_batches(None):
        chosen = slice(None) if keep is None else keep[start:start + len(y)]
        xs.append(x[chosen])
        ys.append(y[chosen])
        start += len(y)
    return torch.cat(xs), torch.cat(ys)


def column_groups(spec: DataSpec) -> list[tuple[str, list[int]]]:
    """Each input column of a table with the encoded features it became (a numeric column one, a text column
    one per category), in input order."""
    columns = (spec.encoder or {}).get("columns") if isinstance(spec.encoder, dict) else None
    if not columns:
        return [(f"x{i}", [i]) for i in range(spec.input_shape[0])]
    groups, start = [], 0
    for column in columns:
        width = 1 if column["kind"] == "numeric" else len(column["categories"])
        groups.append((column["name"], list(range(start, start + width))))
        start += width
    return groups


def score(module: Any, rows: Tensor, targets: Tensor) -> float:
    """The test metric permutation importance reads: accuracy of a classifier, RMSE of a regression (target units)."""
    spec = module.spec
    with torch.inference_mode():
        outputs = torch.cat([module(chunk.to(module.device)).float().cpu() for chunk in rows.split(4096)])
    if spec.task == MULTICLASS:
        return float((outputs.argmax(dim=1) == targets.long()).float().mean())
    if spec.task == BINARY:
        return float(((outputs[:, 0] > 0).float() == targets.float().reshape(-1)).float().mean())
    error = (outputs[:, 0] - targets.float().reshape(-1)) * spec.target_std
    return float(error.pow(2).mean().sqrt())


def _permutation_importance(module: Any, rows: Tensor, targets: Tensor, run_dir: Path, seed: int, total: int
                            ) -> dict[str, Any]:
    spec = module.spec
    classifier = spec.task in (MULTICLASS, BINARY)
    metric = "accuracy drop" if classifier else "RMSE rise (target units)"
    was_training = module.training
    module.eval()
    base = score(module, rows, targets)
    generator = torch.Generator().manual_seed(seed)
    found = []
    for name, features in column_groups(spec):
        losses = []
        for _ in range(REPEATS):
            shuffled = rows.clone()
            order = torch.randperm(len(rows), generator=generator)
            shuffled[:, features] = rows[order][:, features]
            after = score(module, shuffled, targets)
            losses.append(base - after if classifier else after - base)
        found.append((name, float(np.mean(losses)), float(np.std(losses))))
    module.train(was_training)
    found.sort(key=lambda item: -item[1])
    _write_importance(found, metric, base, run_dir)
    top = [{"column": name, "mean": round(mean, 6), "std": round(std, 6)} for name, mean, std in found[:TOP]]
    which = f"a seeded sample of {len(rows)} of the {total}" if total > len(rows) else f"the {len(rows)}"
    log.info(f"explanations: permutation importance on {which} test rows ({metric}, {REPEATS} shuffles "
             f"each), top: " + ", ".join(f"{t['column']} {t['mean']:.4f} +- {t['std']:.4f}" for t in top)
             + f"; {RunDir(run_dir).importance}")
    return {"method": "permutation importance", "metric": metric, "baseline": round(base, 6), "repeats": REPEATS,
            "rows": len(rows), "test_rows": total, "top": top, "files": ["importance.csv", "importance.png"]}


def _write_importance(found: list[tuple[str, float, float]], metric: str, base: float, run_dir: Path) -> None:
    import pandas as pd
    from matplotlib.figure import Figure

    from dltrain.report.plots import save_figure
    from dltrain.rundir.files import write_atomic

    frame = pd.DataFrame(found, columns=["column", "importance_mean", "importance_std"])
    frame["metric"], frame["repeats"] = metric, REPEATS
    write_atomic(RunDir(run_dir).importance, frame.to_csv(index=False))
    shown = frame.head(20)[::-1]
    figure = Figure(figsize=(6.4, 1.2 + 0.32 * len(shown)))
    ax = figure.subplots()
    ax.barh(shown["column"], shown["importance_mean"], xerr=shown["importance_std"], color="tab:blue")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"{metric} when the column is shuffled (baseline {base:.4f})")
    ax.set_title("permutation importance on the test split")
    save_figure(figure, RunDir(run_dir).plot("importance"))


def _image_attributions(module: Any, rows: Tensor, run_dir: Path) -> dict[str, Any]:
    """Integrated gradients (captum, a black image as the baseline) of the predicted class for the first test
    images, drawn beside each image as attributions.png."""
    from captum.attr import IntegratedGradients

    images = rows[:IMAGES].to(module.device)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        outputs = module(images)
    target = outputs.argmax(dim=1) if module.spec.task == MULTICLASS else None
    attributions = IntegratedGradients(module).attribute(images, baselines=torch.zeros_like(images), target=target,
                                                         n_steps=32).detach().cpu()
    module.train(was_training)
    labels = module.spec.labels()
    names = [labels[int(i)] if target is not None else f"{float(torch.sigmoid(o[0])):.2f}"
             for i, o in zip(target if target is not None else outputs, outputs)]
    _draw_attributions(images.cpu(), attributions, names, RunDir(run_dir).plot("attributions"))
    log.info(f"explanations: integrated gradients of the predicted class for {len(images)} test images; "
             f"{RunDir(run_dir).plot('attributions')}")
    return {"method": "integrated gradients (captum)", "images": len(images), "files": ["attributions.png"],
            "shape": list(attributions.shape[1:])}


def _draw_attributions(images: Tensor, attributions: Tensor, names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    from dltrain.report.plots import save_figure

    figure = Figure(figsize=(2.2 * len(images), 4.4))
    axes = figure.subplots(2, len(images), squeeze=False)
    for column, (image, attribution, name) in enumerate(zip(images, attributions, names)):
        shown = image.permute(1, 2, 0).numpy()
        axes[0, column].imshow(shown[..., 0] if shown.shape[2] == 1 else shown.clip(0, 1),
                               cmap="gray" if shown.shape[2] == 1 else None)
        axes[0, column].set_title(f"predicted {name}", fontsize=9)
        heat = attribution.abs().sum(dim=0).numpy()
        axes[1, column].imshow(heat, cmap="inferno")
        for row in (0, 1):
            axes[row, column].axis("off")
    axes[1, 0].set_title("integrated gradients", fontsize=9, loc="left")
    save_figure(figure, path)
