"""Plots written into run and sweep directories, drawn from the CSV and JSON files there (matplotlib, no GUI)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltrain.console import varying_overrides
from dltrain.run_files import write_with


def save_figure(figure: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically."""
    write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


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

    labels = [f"#{r['job']} {label}"[:60] for r, label in zip(rows, varying_overrides(rows))]
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
