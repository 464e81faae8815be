"""What a run shows on the terminal: the setup at the start and a table of results at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from dltrain.report.job_names import swept_values, varying_overrides

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.model_summary import ModelSummary

    from dltrain.data.datamodule import ArrayDataModule

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


def show_start(cfg: DictConfig, run_dir: Path, datamodule: ArrayDataModule, summary: ModelSummary, trainer: pl.Trainer,
               fold: str | None = None) -> None:
    """What the run is, in a few log lines (also in the run's log), once every check has passed (a mistake is
    one line): the set-up (show_setup), what the data source and encoding inferred, the run directory, device,
    data sizes, and the model's size and shapes; verbose=true adds the layer table (model_summary.txt in the run
    directory). A cross-validation fold (`fold` is "k/n") names itself."""
    if fold is None or fold.startswith("1/"):  # a cross-validation's set-up once, at its first fold
        show_setup(cfg)
    if fold is not None:
        log.info(f"cross-validation fold {fold}")
    for level, note in datamodule.notes:
        log.log(level, f"data: {note}")
    spec = datamodule.spec
    device = trainer.strategy.root_device
    sizes = f"train {len(datamodule.train_set)} / val {len(datamodule.val_set)} / test {len(datamodule.test_set)}"
    log.info(f"run directory: {run_dir}")
    import torch

    each = " each" if trainer.num_devices > 1 else ""
    threads = f", {torch.get_num_threads()} thread(s){each}" if device.type == "cpu" else ""
    log.info(f"device: {device.type}{'' if device.index is None else f':{device.index}'} ({trainer.num_devices} "
             f"device(s){threads})")
    log.info(f"data: {spec.name} ({spec.task}, input {tuple(spec.input_shape)}, outputs {spec.num_outputs}), {sizes}")
    layers = f"\n{summary}" if cfg.get("verbose") else f"; layers in {run_dir / 'model_summary.txt'}"
    chose = _choices().get("model") == "auto" and not cfg.get("resume")
    tuned = datamodule.facts.get("model_auto", {}).get("tuned", {})
    tuning = (f", with conf/tuning/{datamodule.facts['model_auto']['tuning']}.yaml's "
              f"{' '.join(f'{key}={value}' for key, value in tuned.items())}") if tuned else ""
    auto = f" (model=auto's choice for this data{tuning}; model=<name> picks another)" if chose else ""
    log.info(f"model: {cfg.model.name}{auto}, {summary.total_parameters:,} parameters "
             f"({summary.trainable_parameters:,} trainable), input {tuple(spec.input_shape)} -> "
             f"{spec.num_outputs} output(s){layers}")


def show_setup(cfg: DictConfig) -> None:
    """The preset of each config group, then the keys set on the command line: what sets this run apart from
    the defaults. verbose=true adds every value as a tree (config.yaml in the run directory holds them all)."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("resume"):  # the stored config's presets, not this command line's defaults
        log.info(f"resumed: the run's own config ({cfg.resume}/config.yaml)")
    elif HydraConfig.initialized():
        log.info(f"presets: {presets()}")
    if HydraConfig.initialized():
        keys = [o for o in HydraConfig.get().overrides.task
                if o.partition("=")[0].lstrip("+~") not in (*_choices(), "resume")]
        if keys:
            log.info(f"set: {' '.join(keys)}")
    if cfg.get("verbose"):
        show_config(cfg)


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def presets() -> str:
    """The chosen preset of each config group, as the command line would name them: data=digits model=auto ..."""
    return " ".join(f"{group}={choice}" for group, choice in _choices().items())


def _choices() -> dict[str, str]:
    """Hydra's chosen preset of each of dltrain's config groups, in the order of the defaults list."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    chosen = HydraConfig.get().runtime.choices.items()
    groups = {group: choice for group, choice in reversed(chosen) if not group.startswith("hydra") and choice}
    # conf/tuning is chosen after the others, by their choices, where it has a file for them: named last, if so
    tuning = groups.pop("tuning", None)
    if tuning and any((Path(source["path"]) / "tuning" / f"{tuning}.yaml").is_file()
                      for source in HydraConfig.get().runtime.config_sources if source["provider"] != "hydra"
                      and source["schema"] == "file"):
        groups["tuning"] = tuning
    return groups


def show_metrics(metrics: dict[str, float], title: str) -> None:
    """A two-column table of metric values."""
    table = Table(title=title, min_width=44)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    _console.print(table)


def show_results(results: dict[str, Any], run_dir: Path) -> None:
    """A table of the test metrics (a line in a sweep's job, which ends with the sweep's table), then where
    the run's files are."""
    if _in_sweep():
        log.info(f"test: {'  '.join(f'{name}={value:.4f}' for name, value in results['test'].items())}")
    else:
        show_metrics(results["test"], "test metrics of the best checkpoint" if results.get("tested") ==
                     "best checkpoint" else "test metrics")
    if results.get("tested", "best checkpoint") != "best checkpoint":
        log.info(f"tested: {results['tested']}")
    for line in limit_lines(results.get("limits") or {}):
        log.info(line)
    best = (f"; best {results['monitor']} {results['best_val']:.4f} at epoch {results['best_epoch']}"
            if results["best_val"] is not None and results.get("best_epoch") else "")
    if str(results.get("tested")).startswith("averaged weights") and results["best_val"] is not None:
        best = f"; {results['monitor']} of the averaged weights {results['best_val']:.4f}"
    log.info(f"{results['epochs_run']} epochs in {results['wall_time_s']:.1f}s{best}")
    if results["early_stopped"]:
        of = f" of {results['max_epochs']}" if (results["max_epochs"] or 0) > 0 else ""
        log.info(f"early stopping ended the run after epoch {results['epochs_run']}{of}: {results['stop_reason']}")
    if results.get("max_steps_reached"):
        log.info(f"trainer.max_steps={results['max_steps_reached']} ended the run in epoch {results['epochs_run']}")
    if results.get("still_improving"):
        log.warning(f"{results['monitor']} was still improving at epoch {results['epochs_run']} of "
                    f"{results['max_epochs']}: more epochs (trainer.max_epochs={2 * results['max_epochs']}) may help")
    if results["best_checkpoint"]:
        log.info(f"best checkpoint: {run_dir / results['best_checkpoint']}")
    if results.get("plots"):
        log.info(f"plots: {', '.join(str(run_dir / p) for p in results['plots'])}")
    for name, where in results.get("loggers", {}).items():
        log.info(f"{name}: {where}")
    if (run_dir / "model_card.md").is_file():
        log.info(f"model card (data fingerprint, test intervals, how to reproduce): {run_dir / 'model_card.md'}")
    log.info(f"run directory: {run_dir}")


def limit_lines(limits: dict[str, dict[str, Any]]) -> list[str]:
    """A line for each stage whose batch limit left rows out: what the limit is and what it covered."""
    words = {"train": "training covered {rows} of {of} training rows each epoch",
             "val": "validation covered {rows} of {of} validation rows",
             "test": "the test covered {rows} of {of} test rows (test metrics, test_predictions.csv and the "
                     "plots alike)"}
    lines = []
    for stage, limit in limits.items():
        (key, value), = ((k, v) for k, v in limit.items() if k not in ("rows", "of"))
        lines.append(f"{key if key == 'fast_dev_run' else 'trainer.' + key}={value}: "
                     + words[stage].format(**limit))
    return lines


def show_sweep(rows: list[dict[str, Any]], monitor: str, sweep_dir: Path) -> None:
    """The sweep's jobs as a table, best first, a column for each swept key; then the best job (its overrides
    in full) and where the summary is. Where the table would not fit the terminal, the headers fold and the
    second test metric is left out (summary.md has every column); values are never cut."""
    varying = varying_overrides(rows)
    swept = swept_values(varying)
    tests = [k for k in (rows[0] if rows else {}) if k.startswith("test/")][:2]
    status = [] if all(row["status"] == "completed" for row in rows) else ["status"]
    tasks = list(dict.fromkeys(row.get("task") for row in rows if row.get("task")))
    task = ["task"] if len(tasks) > 1 else []  # a mixed sweep ranks jobs within each task (sort_rows)
    table = _sweep_table(rows, swept, monitor, [*task, *status, f"best_{monitor}", *tests, "epochs"])
    unbounded = _console.options.update(max_width=10**6)  # a console's own measure stops at its width
    if Measurement.get(_console, unbounded, table).maximum > _console.width:
        table = _sweep_table(rows, swept, monitor, [*task, *status, f"best_{monitor}", *tests[:1], "epochs"],
                             compact=True)
    _console.print(table)
    for name in tasks or [None]:
        best = next((i for i, row in enumerate(rows) if row["status"] == "completed"
                     and (name is None or row.get("task") == name)), None)
        if best is not None:
            row = rows[best]
            log.info(f"best {name + ' ' if task else ''}job: #{row['job']} {' '.join(varying[best])} "
                     f"(best {monitor} {row[f'best_{monitor}']:.4f}) in {row['run_dir']}")
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
    improving = [str(fold["fold"]) for fold in cv["folds"] if fold.get("still_improving")]
    if improving:
        max_epochs = results.get("max_epochs") or 0
        more = f"trainer.max_epochs={2 * max_epochs}" if max_epochs > 0 else "trainer.max_epochs"
        log.warning(f"{results['monitor']} was still improving at the last epoch in {len(improving)} of "
                    f"{len(cv['folds'])} folds ({', '.join(improving)}): more epochs ({more}) may help")
    if results.get("plots"):
        log.info(f"plots: {', '.join(str(run_dir / p) for p in results['plots'])}")
    log.info(f"run directory: {run_dir}")
