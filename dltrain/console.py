"""What a run shows on the terminal: the setup at the start and a table of results at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

log = logging.getLogger("dltrain")
_console = Console(highlight=False)


def show_start(cfg: DictConfig, run_dir: Path, datamodule, summary, trainer) -> None:
    """Run directory, device, data sizes and model size, as log lines (they go to the run's log too)."""
    spec = datamodule.spec
    device = trainer.strategy.root_device
    sizes = f"train {len(datamodule.train_set)} / val {len(datamodule.val_set)} / test {len(datamodule.test_set)}"
    choices = OmegaConf.select(cfg, "model.name")
    log.info(f"run directory: {run_dir}")
    log.info(f"device: {device.type}{'' if device.index is None else f':{device.index}'} ({trainer.num_devices} device(s))")
    log.info(f"data: {spec.name} ({spec.task}, input {tuple(spec.input_shape)}, outputs {spec.num_outputs}), {sizes}")
    log.info(f"model: {choices}, {summary.total_parameters:,} parameters ({summary.trainable_parameters:,} trainable)")


def show_metrics(metrics: dict[str, float], title: str) -> None:
    """A two-column table of metric values."""
    table = Table(title=title, min_width=44)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    _console.print(table)


def show_results(results: dict[str, Any], run_dir: Path) -> None:
    """A table of the test metrics, then where the run's files are."""
    show_metrics(results["test"], "test metrics of the best checkpoint")
    stopped = ", stopped early" if results["early_stopped"] else ""
    log.info(f"{results['epochs_run']} epochs{stopped} in {results['wall_time_s']:.1f}s; best {results['monitor']} {results['best_val']:.4f}")
    log.info(f"best checkpoint: {run_dir / results['best_checkpoint']}")
    log.info(f"run directory: {run_dir}")


def show_sweep(rows: list[dict[str, Any]], monitor: str, sweep_dir: Path) -> None:
    """The sweep's jobs as a table, best first, then the best job and where the summary is."""
    table = Table(title=f"sweep summary (best first by {monitor})")
    rows = [row | {"overrides": label} for row, label in zip(rows, varying_overrides(rows))]
    tests = [k for k in (rows[0] if rows else {}) if k.startswith("test/")][:2]
    columns = ("job", "overrides", "status", f"best_{monitor}", *tests, "epochs")
    for column in columns:
        table.add_column(column, justify="left" if column in ("overrides", "status") else "right")
    for row in rows:
        cells = (row.get(column) for column in columns)
        table.add_row(*("" if c is None else f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells))
    _console.print(table)
    best = rows[0] if rows and rows[0]["status"] == "completed" else None
    if best is not None:
        log.info(f"best job: #{best['job']} {best['overrides']} (best {monitor} {best[f'best_{monitor}']:.4f}) in {best['run_dir']}")
    log.info(f"sweep summary: {sweep_dir / 'summary.md'} (and summary.csv, summary.png)")


def varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Each job's overrides without those every job shares: what tells the jobs apart."""
    shared = set.intersection(*(set(row["overrides"].split()) for row in rows)) if rows else set()
    return [" ".join(o for o in row["overrides"].split() if o not in shared) for row in rows]
