"""k-fold cross-validation: one training run per fold in <run>/fold_<k>/, then their metrics' mean and spread."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dltrain.report import terminal as console
from dltrain.data.datamodule import load_data
from dltrain.data.folds import Fold, fold_rows
from dltrain.distributed import is_rank_zero
from dltrain.report.plots import plot_folds
from dltrain.rundir.claim import claimed, holds_run, mark_running
from dltrain.rundir.files import read_results, write_atomic, write_json
from dltrain.rundir.layout import RunDir
from dltrain.training.train import train
from dltrain.training.preflight import ValidatedConfig, validate

log = logging.getLogger("dltrain")


def cross_validate(cfg: DictConfig | ValidatedConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train cfg.cv.folds models, each on its fold's split; results.json holds every fold's metrics and their
    mean and standard deviation. resume=True keeps completed folds and continues an interrupted one.
    `cfg`: a ValidatedConfig, or a config validated here; the folds are not validated again."""
    validated = cfg if isinstance(cfg, ValidatedConfig) else validate(cfg)
    run_dir = Path(run_dir)
    if not is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        return _cross_validate(validated, run_dir, resume)
    with claimed(run_dir, resume):
        return _cross_validate(validated, run_dir, resume)


def _cross_validate(validated: ValidatedConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    cfg = validated.cfg
    started = time.perf_counter()
    config = OmegaConf.to_container(cfg, resolve=True)
    data = load_data(config["data"], whole=True)
    splits = fold_rows(data, cfg.cv.folds, cfg.seed, cfg.data.val_fraction, cfg.data.test_fraction, cfg.cv.all_data)
    if is_rank_zero():  # once the data and its folds are known to be usable
        mark_running(run_dir)
        write_atomic(RunDir(run_dir).config, OmegaConf.to_yaml(config))
    records = []
    for number, rows in enumerate(splits, 1):
        fold_dir = RunDir(run_dir).fold(number).path
        earlier = read_results(fold_dir)
        if resume and earlier.get("status") == "completed":
            log.info(f"cross-validation fold {number}/{len(splits)} completed before: {fold_dir}")
            records.append(earlier)
            continue
        again = resume and holds_run(fold_dir)  # with no checkpoint yet, the fold starts again (see train)
        records.append(train(validated, fold_dir, resume=again, fold=Fold(data, rows, number, len(splits))))
    if not is_rank_zero():
        return {"status": "completed"}
    results = summarize(records, cfg, time.perf_counter() - started)
    results["plots"] = [str(plot_folds(run_dir, results["cv"]["folds"], cfg.monitor).relative_to(run_dir))]
    write_json(RunDir(run_dir).results, results)
    console.show_cross_validation(results, run_dir)
    return results


def summarize(records: list[dict[str, Any]], cfg: DictConfig, wall_time_s: float) -> dict[str, Any]:
    """The run's results.json: the folds' mean in the keys of a single run (so sweeps and searches read it
    the same way), and under `cv` each fold's metrics with their mean and sample standard deviation."""
    best = f"best_{cfg.monitor}"
    folds = [{"fold": n, "metrics": {best: r["best_val"], **r["test"]}, "status": r["status"],
              "epochs_run": r["epochs_run"], "still_improving": bool(r.get("still_improving")),
              "run_dir": RunDir.fold_name(n)} for n, r in enumerate(records, 1)]
    names = list(folds[0]["metrics"])
    values = {name: [f["metrics"][name] for f in folds] for name in names}
    mean = {name: statistics.fmean(v) for name, v in values.items()}
    first = records[0]
    return {
        "status": "completed" if all(r["status"] == "completed" for r in records) else "incomplete",
        "name": first.get("name"), "tags": first.get("tags", []),
        "model": first["model"], "data": first["data"], "task": first["task"],
        "monitor": cfg.monitor, "mode": cfg.mode,
        "best_val": mean[best],
        "val": {k: statistics.fmean(r["val"][k] for r in records) for k in first["val"]},
        "test": {k: mean[k] for k in first["test"]},
        "epochs_run": statistics.fmean(r["epochs_run"] for r in records),
        "max_epochs": first.get("max_epochs"),
        "still_improving": any(f["still_improving"] for f in folds),  # each fold's under cv.folds
        "wall_time_s": round(wall_time_s, 3),
        "loss": first["loss"], "class_weights": first["class_weights"],
        "seed": cfg.seed,
        "cv": {
            "folds": folds,
            "tested_on": "each fold's validation part" if cfg.cv.all_data else "the held-out test split",
            "mean": mean,
            "std": {name: statistics.stdev(v) for name, v in values.items()},
        },
    }

