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

from dltrain.console import swept_values, varying_overrides
from dltrain.run_files import write_with


def save_figure(figure: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically, cropped to what it shows.

    Figures keep matplotlib's default spacing and are cropped by bbox_inches="tight" rather than laid out
    by layout="constrained", which draws every text once more to place it (about half a second a run).
    """
    write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def plot_run(run_dir: Path) -> list[Path]:
    """Draw curves.png, and confusion_matrix.png (classes) or predictions.png (values) from the test
    predictions; returns their paths."""
    run_dir = Path(run_dir)
    written = []
    if (run_dir / "metrics.csv").exists():
        written.append(plot_curves(pd.read_csv(run_dir / "metrics.csv"), run_dir / "curves.png"))
    if (run_dir / "test_predictions.csv").exists():
        predictions = pd.read_csv(run_dir / "test_predictions.csv")
        if any(column.startswith("prob_") for column in predictions):  # a classification's predictions
            written.append(plot_confusion(predictions, run_dir / "confusion_matrix.png"))
        else:
            written.append(plot_regression(predictions, run_dir / "predictions.png"))
    return written


def plot_curves(metrics: pd.DataFrame, path: Path) -> Path:
    """Training and validation loss per epoch, and beside it the main metric (accuracy, or R2)."""
    main = next((m for m in ("acc", "r2", "mae") if f"val_{m}" in metrics or f"train_{m}" in metrics), None)
    figure = Figure(figsize=(11 if main else 6, 4))
    axes = figure.subplots(1, 2 if main else 1, squeeze=False, gridspec_kw={"wspace": 0.25})[0]
    titles = {"loss": "loss", "acc": "accuracy", "r2": "R²", "mae": "mean absolute error"}
    for ax, name in zip(axes, ["loss", main]):
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{name}"
            if column in metrics and metrics[column].notna().any():
                ax.plot(metrics["epoch"] + 1, metrics[column], style, marker="o", markersize=3,
                        label="training" if split == "train" else "validation")
        ax.set(xlabel="epoch", ylabel=titles[name], title=f"{titles[name]} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _saved(figure, path)


def plot_confusion(predictions: pd.DataFrame, path: Path) -> Path:
    """Write confusion_figure as a PNG at path."""
    return _saved(confusion_figure(predictions), path)


def confusion_figure(predictions: pd.DataFrame) -> Figure:
    """The test split's confusion matrix (true class by row, predicted by column), with the counts that are
    not zero: the mistakes stand out, and the empty cells cost no text to draw (~0.15 s for ten classes)."""
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


def plot_regression(predictions: pd.DataFrame, path: Path) -> Path:
    """Predicted against true values on the test split, with the line of perfect predictions."""
    figure = Figure(figsize=(5.5, 5))
    ax = figure.subplots()
    true, predicted = predictions["true"], predictions["prediction"]
    ax.scatter(true, predicted, s=10, alpha=0.6, label="test rows")
    low, high = min(true.min(), predicted.min()), max(true.max(), predicted.max())
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
    r2 = 1 - ((true - predicted) ** 2).sum() / max(((true - true.mean()) ** 2).sum(), 1e-12)
    ax.set(xlabel="true value", ylabel="predicted value", title=f"test predictions (R² {r2:.3f})")
    ax.grid(alpha=0.3)
    ax.legend()
    return _saved(figure, path)


def _natural(label: str) -> tuple:
    """Sort class labels as numbers when they are numbers."""
    return (0, float(label), "") if label.lstrip("-").replace(".", "", 1).isdigit() else (1, 0.0, label)


def _saved(figure: Figure, path: Path) -> Path:
    save_figure(figure, path)
    return path


def plot_sweep(rows: list[dict[str, Any]], monitor: str, path: Path) -> None:
    """Two panels: the monitored metric per epoch of every job, and each job's best value as a bar."""
    figure = Figure(figsize=(13, 1.5 + 0.3 * max(len(rows), 8)), layout="constrained")
    curves, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for row in sorted(rows, key=lambda r: r["job"]):
        metrics_file = Path(row["run_dir"]) / "metrics.csv"
        if metrics_file.exists():
            metrics = pd.read_csv(metrics_file)
            if monitor in metrics and len(metrics):
                curves.plot(metrics["epoch"], metrics[monitor], marker="o", markersize=3, label=f"#{row['job']}")
    curves.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.grid(alpha=0.3)
    if curves.get_legend_handles_labels()[0]:
        curves.legend(fontsize="small", ncol=2)

    labels = [textwrap.shorten(f"#{r['job']} " + " ".join(f"{k}={v}" for k, v in job.items()), 60, placeholder=" …")
              for r, job in zip(rows, swept_values(varying_overrides(rows)))]
    best = f"best_{monitor}"
    values = [r[best] if r[best] is not None and math.isfinite(r[best]) else 0.0 for r in rows]
    colors = ["tab:green" if i == 0 and r["status"] == "completed" else
              "tab:blue" if r["status"] == "completed" else "lightgray" for i, r in enumerate(rows)]
    positions = range(len(rows))
    bars.barh(positions, values, color=colors)
    for y, row, value in zip(positions, rows, values):
        bars.text(value, y, f" {value:.4f}" if row["status"] == "completed" else f" {row['status']}",
                  va="center", fontsize="small")
    bars.set_yticks(list(positions), labels, fontsize="small")
    bars.invert_yaxis()  # best (first row) on top
    bars.set(xlabel=f"best {monitor}", title="jobs, best first")
    bars.margins(x=0.2)  # room for the value printed after each bar
    save_figure(figure, path)
