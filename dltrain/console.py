"""What a run shows on the terminal: the setup at the start and a table of results at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

log = logging.getLogger("dltrain")
_console = Console(highlight=False)


def show_config(cfg: DictConfig) -> None:
    """The composed config as a tree: a branch per group (with the class it builds), a leaf per key."""
    from rich.tree import Tree

    tree = Tree("[bold]config[/]", guide_style="dim")
    _add_branch(tree, OmegaConf.to_container(cfg, resolve=True))
    _console.print(tree)


def _add_branch(tree, node: dict[str, Any]) -> None:
    for key, value in node.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            target = f" [dim]({value['_target_']})[/]" if "_target_" in value else ""
            _add_branch(tree.add(f"[bold]{key}[/]{target}"), value)
        else:
            shown = f"[{', '.join(map(str, value))}]" if isinstance(value, list) else value
            tree.add(escape(f"{key}: {shown}"))


def show_start(cfg: DictConfig, run_dir: Path, datamodule, summary, trainer, fold: str | None = None) -> None:
    """Config tree, then run directory, device, data sizes and model size as log lines (also in the run's log).

    A cross-validation fold (`fold` is "k/n") names itself instead: the config tree was shown once for all.
    """
    if fold is None:
        show_config(cfg)
    else:
        log.info(f"cross-validation fold {fold}")
    spec = datamodule.spec
    device = trainer.strategy.root_device
    sizes = f"train {len(datamodule.train_set)} / val {len(datamodule.val_set)} / test {len(datamodule.test_set)}"
    choices = OmegaConf.select(cfg, "model.name")
    log.info(f"run directory: {run_dir}")
    log.info(f"device: {device.type}{'' if device.index is None else f':{device.index}'} ({trainer.num_devices} device(s))")
    log.info(f"data: {spec.name} ({spec.task}, input {tuple(spec.input_shape)}, outputs {spec.num_outputs}), {sizes}")
    log.info(f"model: {choices}, {summary.total_parameters:,} parameters ({summary.trainable_parameters:,} trainable)\n"
             f"{summary}")


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
    best = f"; best {results['monitor']} {results['best_val']:.4f}" if results["best_val"] is not None else ""
    log.info(f"{results['epochs_run']} epochs{stopped} in {results['wall_time_s']:.1f}s{best}")
    if results["best_checkpoint"]:
        log.info(f"best checkpoint: {run_dir / results['best_checkpoint']}")
    if results.get("plots"):
        log.info(f"plots: {', '.join(str(run_dir / p) for p in results['plots'])}")
    for name, where in results.get("loggers", {}).items():
        log.info(f"{name}: {where}")
    log.info(f"run directory: {run_dir}")


def show_sweep(rows: list[dict[str, Any]], monitor: str, sweep_dir: Path) -> None:
    """The sweep's jobs as a table, best first, a column for each swept key; then the best job (its overrides
    in full) and where the summary is. Where the table would not fit the terminal, the headers fold and the
    second test metric is left out (summary.md has every column); values are never cut."""
    varying = varying_overrides(rows)
    swept = swept_values(varying)
    tests = [k for k in (rows[0] if rows else {}) if k.startswith("test/")][:2]
    status = [] if all(row["status"] == "completed" for row in rows) else ["status"]
    table = _sweep_table(rows, swept, monitor, [*status, f"best_{monitor}", *tests, "epochs"])
    unbounded = _console.options.update(max_width=10**6)  # a console's own measure stops at its width
    if Measurement.get(_console, unbounded, table).maximum > _console.width:
        table = _sweep_table(rows, swept, monitor, [*status, f"best_{monitor}", *tests[:1], "epochs"], compact=True)
    _console.print(table)
    best = rows[0] if rows and rows[0]["status"] == "completed" else None
    if best is not None:
        log.info(f"best job: #{best['job']} {' '.join(varying[0])} (best {monitor} {best[f'best_{monitor}']:.4f}) "
                 f"in {best['run_dir']}")
    log.info(f"sweep summary: {sweep_dir / 'summary.md'} (and summary.csv, summary.png)")


def _sweep_table(rows: list[dict[str, Any]], swept: list[dict[str, str]], monitor: str, figures: list[str],
                 compact: bool = False) -> Table:
    """The table of show_sweep: job, the swept keys, the figures; compact: each column only as wide as its
    values (at least 6), its header folded to fit."""
    keys = list(dict.fromkeys(key for job in swept for key in job))
    cells = [[str(row["job"]), *(job.get(key, "") for key in keys),
              *("" if c is None else f"{c:.4f}" if isinstance(c, float) else str(c) for c in map(row.get, figures))]
             for row, job in zip(rows, swept)]
    # (header, right-aligned number?) of each column; "best val_loss" may fold at its space
    columns = [("job", True), *((key, False) for key in keys),
               *((figure.replace("_", " ", 1) if figure.startswith("best_") else figure, figure != "status")
                 for figure in figures)]
    table = Table(title=f"sweep summary (best first by {monitor})", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True)
    for i, (column, numbers) in enumerate(columns):
        width = max((len(row[i]) for row in cells), default=0)
        table.add_column(column, justify="right" if numbers else "left", overflow="fold",
                         min_width=min(width, 12), max_width=max(width, 6) if compact else None)
    for row in cells:
        table.add_row(*row)
    return table


def varying_overrides(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each job's overrides without those every job shares: what tells the jobs apart."""
    shared = set.intersection(*(set(row["overrides"]) for row in rows)) if rows else set()
    return [[o for o in row["overrides"] if o not in shared] for row in rows]


def swept_values(varying: list[list[str]]) -> list[dict[str, str]]:
    """Each job's varying overrides as {key: value} to show: a key by its last part where no other swept key
    ends the same (lr for optimizer.lr), floats to four significant digits."""
    keys = list(dict.fromkeys(o.partition("=")[0] for job in varying for o in job))
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    names = {key: leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)}
    return [{names[key]: _shown(value) for key, _, value in (o.partition("=") for o in job)} for job in varying]


def _shown(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("+-").isdigit() else f"{number:.4g}"


def show_cross_validation(results: dict[str, Any], run_dir: Path) -> None:
    """Each fold's metrics in a row, then their mean and standard deviation."""
    cv = results["cv"]
    names = list(cv["mean"])
    table = Table(title=f"{len(cv['folds'])}-fold cross-validation ({cv['tested_on']})")
    for column in ("fold", *names):
        table.add_column(column, justify="right")
    for fold in cv["folds"]:
        table.add_row(str(fold["fold"]), *(f"{fold['metrics'][n]:.4f}" for n in names))
    table.add_row("mean", *(f"{cv['mean'][n]:.4f}" for n in names), style="bold")
    table.add_row("std", *(f"{cv['std'][n]:.4f}" for n in names))
    _console.print(table)
    log.info(f"{len(cv['folds'])} folds in {results['wall_time_s']:.1f}s; folds in {run_dir}/fold_<k>/")
    log.info(f"run directory: {run_dir}")
