"""The summary of a sweep: one row per job, sorted by the monitored metric, as CSV, Markdown and a plot.

A Hydra callback writes it when a multirun ends, from what each job left in its own directory, so it
works whatever launcher ran the jobs (in this process or in joblib workers).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dltrain.rundir.files import read_results, write_atomic
from dltrain.rundir.layout import RunDir

log = logging.getLogger("dltrain")


@dataclass
class SweepOutcome:
    """What the `dltrain` command needs after a sweep: where its summary is and which jobs failed."""

    sweep_dir: Path
    jobs: int
    failed: list[dict[str, Any]]
    error: str | None = None  # why the summary itself could not be written


class SweepIncomplete(BaseException):
    """A sweep or search ended with jobs that did not complete, or without its summary. A BaseException, so that
    it passes Hydra's callback runner (which turns a callback's Exception into a warning) and reaches the
    dltrain command, which says so and exits non-zero."""

    def __init__(self, outcome: SweepOutcome) -> None:
        super().__init__(outcome.error or f"{len(outcome.failed)} of {outcome.jobs} jobs did not complete")
        self.outcome = outcome


def end_sweep(outcome: SweepOutcome) -> None:
    """The end of a sweep or search whose summary is written: SweepIncomplete when it is not all done."""
    if outcome.error or outcome.failed:
        raise SweepIncomplete(outcome)


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise its jobs into the sweep directory (a search, whose
    sweeper says it `summarizes`, writes its own over every trial of its study)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_class

        if getattr(get_class(config.hydra.sweeper._target_), "summarizes", False):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            outcome = write_summary(sweep_dir, config.monitor, config.mode)
        except Exception as exc:
            log.exception("the sweep summary could not be written")
            outcome = SweepOutcome(sweep_dir, 0, [], error=f"{type(exc).__name__}: {exc}")
        end_sweep(outcome)


def sweep_jobs(sweep_dir: Path) -> list[tuple[int, Path]]:
    """(job number, folder) of each job a sweep folder holds."""
    return sorted((int(d.name), d) for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit())


def job_rows(jobs: list[tuple[int, Path]], monitor: str) -> list[dict[str, Any]]:
    """One row per job: its overrides (the list Hydra wrote), status, monitored value, final val and test
    metrics."""
    rows = []
    for number, job_dir in jobs:
        overrides_file = RunDir(job_dir).hydra_overrides
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        results = read_results(job_dir)
        row = {"job": number, "overrides": overrides, "task": results.get("task"),
               "status": results.get("status", "did not finish"), f"best_{monitor}": results.get("best_val")}
        row |= {f"val/{k.removeprefix('val_')}": v for k, v in results.get("val", {}).items()}
        row |= {f"test/{k.removeprefix('test_')}": v for k, v in results.get("test", {}).items()}
        row |= {"epochs": results.get("epochs_run"), "wall_time_s": results.get("wall_time_s"),
                "error": results.get("error", ""), "run_dir": str(job_dir)}
        rows.append(row)
    return rows


def sort_rows(rows: list[dict[str, Any]], monitor: str, mode: str) -> list[dict[str, Any]]:
    """Best first by the monitored metric, within each task where the sweep mixes tasks (a regression's loss
    does not rank against a classification's); jobs without a finite value last, in job order."""
    tasks = list(dict.fromkeys(row.get("task") for row in rows if row.get("task")))

    def key(row: dict[str, Any]) -> tuple:
        value = row[f"best_{monitor}"]
        if row["status"] != "completed" or value is None or not math.isfinite(value):
            return (len(tasks), 1, 0.0, row["job"])
        return (tasks.index(row["task"]) if row.get("task") in tasks else 0, 0, value if mode == "min" else -value,
                row["job"])

    return sorted(rows, key=key)


def write_summary(sweep_dir: Path, monitor: str, mode: str, rows: list[dict[str, Any]] | None = None
                  ) -> SweepOutcome:
    """Write summary.csv, summary.md and summary.png into the sweep directory and show the table: of `rows`
    (a search's every trial), or of the jobs in the folder."""
    import pandas as pd

    from dltrain.report.terminal import show_sweep
    from dltrain.report.plots import plot_sweep

    rows = sort_rows(job_rows(sweep_jobs(sweep_dir), monitor) if rows is None else rows, monitor, mode)
    if not rows:
        write_atomic(sweep_dir / "summary.md", f"# Sweep {sweep_dir}\n\nNo job ran.\n")
        log.info(f"no job ran; {sweep_dir / 'summary.md'} says so")
        return SweepOutcome(sweep_dir, 0, [])
    table = pd.DataFrame(rows).convert_dtypes()  # integer columns stay integers beside a failed job's gaps
    table["overrides"] = table["overrides"].map(" ".join)  # as typed on a command line, one cell
    write_atomic(sweep_dir / "summary.csv", table.to_csv(index=False))
    shown = table.drop(columns=["run_dir"]).astype(object).where(table.notna(), None)
    within = " within each task" if table["task"].nunique() > 1 else ""
    write_atomic(sweep_dir / "summary.md", f"# Sweep {sweep_dir}\n\nBest first by {monitor} ({mode}){within}.\n\n"
                                           + shown.to_markdown(index=False, missingval="") + "\n")
    plot_sweep(rows, monitor, sweep_dir / "summary.png")
    show_sweep(rows, monitor, sweep_dir)
    return SweepOutcome(sweep_dir, len(rows), [r for r in rows if r["status"] not in ("completed", "pruned", "retried")])
