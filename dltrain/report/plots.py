"""Plots written into run and sweep directories, drawn from the CSV and JSON files there (matplotlib, no GUI).

`plot_run(run_dir)` draws a run's plots again at any time from metrics.csv, test_predictions.csv and
results.json alone.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltrain.report.job_names import swept_values, varying_overrides
from dltrain.rundir.files import read_record, write_with
from dltrain.rundir.layout import RunDir


def save_figure(figure: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically, cropped to what it shows.

    Figures keep matplotlib's default spacing and are cropped by bbox_inches="tight" rather than laid out
    by layout="constrained", which draws every text once more to place it.
    """
    write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def plot_run(run_dir: Path, results: dict[str, Any] | None = None) -> list[Path]:
    """Draw curves.png, and confusion_matrix.png (classes) or predictions.png (values) from the test
    predictions; returns their paths. `results`: the record's monitor and best_epoch, where results.json
    does not hold them yet (a run drawing its plots before it writes its record)."""
    run = RunDir(run_dir)
    written_results, config = _read_run_record(run)
    results = written_results if results is None else results
    written = []
    if run.metrics.exists():
        best = results.get("best_epoch") if results.get("monitor") else None
        figure = curves_figure(pd.read_csv(run.metrics), best_epoch=best, monitor=results.get("monitor"))
        written.append(_saved(figure, run.plot("curves")))
    if run.test_predictions.exists():
        predictions = pd.read_csv(run.test_predictions)
        if any(column.startswith("prob_") for column in predictions):  # a classification's predictions
            written.append(_saved(confusion_figure(predictions), run.plot("confusion_matrix")))
        else:
            target = (config.get("data") or {}).get("target") or "target"  # a table's column; embedded sets name none
            written.append(_saved(regression_figure(predictions, str(target)), run.plot("predictions")))
    return written


def _read_run_record(run: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """results.json and config.yaml of a run, read as data ({} where missing or unreadable)."""
    results, config = read_record(run.results), read_record(run.config)
    return (results if isinstance(results, dict) else {}), (config if isinstance(config, dict) else {})


# The panels' titles, in the order drawn; a metric not named here gets a panel titled by its name.
TITLES = {"loss": "loss", "acc": "accuracy", "f1": "macro F1", "r2": "R²", "mae": "mean absolute error",
          "mse": "mean squared error"}
NOT_METRICS = ("epoch", "step", "lr", "epoch_time_s")


def curves_figure(metrics: pd.DataFrame, best_epoch: int | None = None, monitor: str | None = None) -> Figure:
    """A panel per metric the run logged (training and validation per epoch, epochs counted from 1), the
    best checkpoint's epoch marked on each."""
    names = list(dict.fromkeys(column.split("_", 1)[1] for column in metrics
                               if column not in NOT_METRICS and column.startswith(("train_", "val_"))))
    names.sort(key=lambda name: list(TITLES).index(name) if name in TITLES else len(TITLES))
    columns = min(len(names), 3) or 1
    rows = math.ceil(len(names) / columns) or 1
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows))
    axes = list(figure.subplots(rows, columns, squeeze=False, gridspec_kw={"wspace": 0.3, "hspace": 0.45}).flat)
    epochs = metrics["epoch"] + 1
    for ax, name in zip(axes, names):
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{name}"
            if column in metrics and metrics[column].notna().any():
                ax.plot(epochs, metrics[column], style, marker="o", markersize=3,
                        label="training" if split == "train" else "validation")
        if best_epoch:
            ax.axvline(best_epoch, color="tab:green", linewidth=1, alpha=0.7,
                       label=f"best epoch ({monitor})" if monitor else "best epoch")
        title = TITLES.get(name, name)
        ax.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch")
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(names):]:  # panels the grid has beyond the metrics
        figure.delaxes(ax)
    return figure


def _epoch_axis(ax, epochs: pd.Series) -> None:
    """Whole epochs, half an epoch of margin either side: a one-epoch run shows one tick, 1."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if len(epochs):
        ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)


def confusion_figure(predictions: pd.DataFrame) -> Figure:
    """The test split's confusion matrix (true class by row, predicted by column), with the counts that are
    not zero: the mistakes stand out, and the empty cells cost no text to draw."""
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = sorted(set(predictions["true"].astype(str)) | set(predictions["prediction"].astype(str)), key=_natural)
    size = min(4 + 0.45 * len(labels), 14)
    figure = Figure(figsize=(size, size * 0.85))
    ax = figure.subplots()
    display = ConfusionMatrixDisplay.from_predictions(
        predictions["true"].astype(str), predictions["prediction"].astype(str), labels=labels, ax=ax,
        colorbar=False, cmap="Blues")
    for text, count in zip(display.text_.flat, display.confusion_matrix.flat):
        text.set_visible(bool(count))
    accuracy = (predictions["true"].astype(str) == predictions["prediction"].astype(str)).mean()
    ax.set_title(f"test confusion matrix ({len(predictions)} rows, accuracy {accuracy:.3f})")
    return figure


def reliability_diagram(before: Any, after: Any, targets: Any, temperature: float, path: Path, bins: int = 15) -> None:
    """calibration.png: in each of `bins` bins of the top probability, how often the class was right against how
    sure the model was, before and after temperature scaling (a calibrated model's points lie on the diagonal)."""
    import numpy as np

    figure = Figure(figsize=(5.2, 4.8))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    truth = np.asarray(targets).reshape(-1).astype(int)
    edges = np.linspace(0, 1, bins + 1)
    for probs, label, marker in ((before, "before", "o"), (after, f"after (temperature {temperature:.2f})", "s")):
        probs = np.asarray(probs)
        confidence, right = probs.max(axis=1), probs.argmax(axis=1) == truth
        where = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        used = [b for b in range(bins) if (where == b).any()]
        ax.plot([confidence[where == b].mean() for b in used], [right[where == b].mean() for b in used],
                marker=marker, label=label)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"test reliability ({len(truth)} rows)")
    ax.legend(loc="upper left")
    save_figure(figure, path)


SCATTER_ROWS = 50_000  # the most test rows drawn as points (a seeded sample; R² is computed on every row)


def regression_figure(predictions: pd.DataFrame, target: str = "target") -> Figure:
    """Predicted against true values of `target` on the test split, with the line of perfect predictions."""
    figure = Figure(figsize=(5.5, 5))
    ax = figure.subplots()
    true, predicted = predictions["true"], predictions["prediction"]
    shown = predictions.sample(SCATTER_ROWS, random_state=0) if len(predictions) > SCATTER_ROWS else predictions
    label = "test rows" if len(shown) == len(predictions) else f"{len(shown):,} of {len(predictions):,} test rows"
    ax.scatter(shown["true"], shown["prediction"], s=10, alpha=0.6, label=label)
    low, high = min(true.min(), predicted.min()), max(true.max(), predicted.max())
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
    r2 = 1 - ((true - predicted) ** 2).sum() / max(((true - true.mean()) ** 2).sum(), 1e-12)
    ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title=f"test predictions of {target} (R² {r2:.3f})")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def _natural(label: str) -> tuple:
    """Sort class labels as numbers when they are numbers."""
    return (0, float(label), "") if label.lstrip("-").replace(".", "", 1).isdigit() else (1, 0.0, label)


def _saved(figure: Figure, path: Path) -> Path:
    save_figure(figure, path)
    return path


def plot_lr_find(path: Path, lrs: list[float], losses: list[float], suggestion: float | None, used: float) -> Path:
    """lr_find.png: the training loss at each learning rate tune=lr tried, the suggestion and the rate used marked."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.plot(lrs, losses, "-", marker="o", markersize=2, label="training loss (smoothed)")
    if suggestion is not None:
        nearest = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(suggestion)))
        ax.plot([lrs[nearest]], [losses[nearest]], "o", color="tab:red", markersize=8,
                label=f"suggestion {suggestion:.3g}")
    ax.axvline(used, color="tab:green", linewidth=1, alpha=0.7, label=f"used {used:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="learning-rate finder (Tuner.lr_find)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _saved(figure, path)


def plot_folds(run_dir: Path, folds: list[dict[str, Any]], monitor: str) -> Path:
    """Write folds_figure as cv_curves.png in the run directory."""
    return _saved(folds_figure(run_dir, folds, monitor), RunDir(run_dir).plot("cv_curves"))


def folds_figure(run_dir: Path, folds: list[dict[str, Any]], monitor: str) -> Figure:
    """A cross-validated run's folds in one panel: the monitored metric per epoch of every fold, each fold's best
    epoch marked, and the folds' mean per epoch where every fold reached it."""
    figure = Figure(figsize=(7, 4.2))
    ax = figure.subplots()
    curves = []
    for fold in folds:
        metrics_file = RunDir(run_dir / fold["run_dir"]).metrics
        if not metrics_file.exists():
            continue
        metrics = pd.read_csv(metrics_file)
        if monitor not in metrics or not len(metrics):
            continue
        series = metrics.set_index(metrics["epoch"] + 1)[monitor]
        curves.append(series)
        line, = ax.plot(series.index, series, marker="o", markersize=3, alpha=0.7, label=f"fold {fold['fold']}")
        best = fold["metrics"].get(f"best_{monitor}")
        if best is not None and (series == best).any():
            ax.plot(series.index[series == best][:1], [best], "*", markersize=11, color=line.get_color())
    if curves:
        mean = pd.concat(curves, axis=1).dropna().mean(axis=1)
        ax.plot(mean.index, mean, "k-", linewidth=2, label="mean of the folds")
        _epoch_axis(ax, pd.Series(pd.concat(curves).index))
    ax.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch, {len(folds)} folds (★ each fold's best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return figure


def plot_sweep(rows: list[dict[str, Any]], monitor: str, path: Path) -> None:
    """Write sweep_figure as a PNG at path."""
    save_figure(sweep_figure(rows, monitor), path)


def sweep_figure(rows: list[dict[str, Any]], monitor: str) -> Figure:
    """Two panels: the monitored metric per epoch of every job, and each job's best value as a bar (the best
    of each task in green: jobs of different tasks are ranked only among their own)."""
    labels = [textwrap.fill(f"#{r['job']} " + " ".join(f"{k}={v}" for k, v in job.items()), 48,
                            subsequent_indent="   ")
              for r, job in zip(rows, swept_values(varying_overrides(rows)))]
    lines = sum(label.count("\n") + 1 for label in labels)
    figure = Figure(figsize=(13, 1.5 + 0.3 * max(lines, 8)), layout="constrained")
    curves, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for row in sorted(rows, key=lambda r: r["job"]):
        metrics_file = RunDir(row["run_dir"]).metrics
        if metrics_file.exists():
            metrics = pd.read_csv(metrics_file)
            if monitor in metrics and len(metrics):
                curves.plot(metrics["epoch"] + 1, metrics[monitor], marker="o", markersize=3, label=f"#{row['job']}")
    curves.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    curves.grid(alpha=0.3)
    if curves.get_legend_handles_labels()[0]:
        curves.legend(fontsize="small", ncol=2)

    best = f"best_{monitor}"
    values = [r[best] if r[best] is not None and math.isfinite(r[best]) else 0.0 for r in rows]
    leaders = {next((i for i, r in enumerate(rows) if r.get("task") == task and r["status"] == "completed"), None)
               for task in {r.get("task") for r in rows}}
    colors = ["tab:green" if i in leaders else "tab:blue" if r["status"] == "completed" else "lightgray"
              for i, r in enumerate(rows)]
    positions = range(len(rows))
    bars.barh(positions, values, color=colors)
    for y, row, value in zip(positions, rows, values):
        bars.text(value, y, f" {value:.4f}" if row["status"] == "completed" else f" {row['status']}",
                  va="center", fontsize="small")
    bars.set_yticks(list(positions), labels, fontsize="small")
    bars.invert_yaxis()  # best (first row) on top
    tasks = list(dict.fromkeys(r.get("task") for r in rows if r.get("task")))
    bars.set(xlabel=f"best {monitor}", title="jobs, best first" if len(tasks) < 2 else
             f"jobs, best first within each task ({', '.join(tasks)})")
    bars.margins(x=0.2)  # room for the value printed after each bar
    return figure
