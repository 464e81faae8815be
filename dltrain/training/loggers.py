"""The run's experiment logger (conf/logger): Lightning's own (TensorBoard, MLflow, Weights & Biases, Comet, or any
other given by its _target_), given the run's folder, name and tags where its config leaves them null, offline
unless the user gave a key or a server, and where each one wrote, for results.json and the terminal."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from dltrain.config.instantiate import build
from dltrain.rundir.layout import FOLD_PREFIX

log = logging.getLogger("dltrain")


def logger_kind(logger_cfg: Any) -> str:
    """A logger's short name, as its preset's: TensorBoardLogger -> tensorboard, WandbLogger -> wandb."""
    return str(logger_cfg["_target_"]).rsplit(".", 1)[-1].removesuffix("Logger").lower()


def _first_set(*names: str) -> str | None:
    """The first of these environment variables that is set (a key or a server given), or None."""
    return next((name for name in names if os.environ.get(name)), None)


def _wandb(logger_cfg: DictConfig, run_dir: Path, name: str, tags: list[str]) -> tuple[dict[str, Any], str]:
    given = _first_set("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE")
    arguments = {"save_dir": str(run_dir), "name": name, "tags": tags or None, "offline": given is None}
    said = "offline (none of WANDB_API_KEY, WANDB_BASE_URL, WANDB_MODE is set)" if given is None else \
        f"as wandb's own settings say ({given} is set)"
    return arguments, said if logger_cfg.get("offline") is None else ""


def _comet(logger_cfg: DictConfig, run_dir: Path, name: str, tags: list[str]) -> tuple[dict[str, Any], str]:
    """Offline through comet_ml's own setting (COMET_START_ONLINE): Lightning's online=False turns Comet off
    altogether (it writes nothing; Lightning issue 21617), so online stays null for comet_ml to decide."""
    arguments = {"offline_directory": str(run_dir / "comet"), "name": name, "tags": tags or None}
    if logger_cfg.get("online") is not None:
        return arguments, ""
    given = "logger.api_key" if logger_cfg.get("api_key") else _first_set("COMET_API_KEY", "COMET_URL_OVERRIDE",
                                                                          "COMET_START_ONLINE")
    if given is None:  # before comet_ml's import, which reads its settings: offline, and no error reports sent
        os.environ["COMET_START_ONLINE"] = "false"
        os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
        return arguments, "offline (none of COMET_API_KEY, COMET_URL_OVERRIDE, logger.api_key is set)"
    return arguments, f"as comet_ml's own settings say ({given} is set)"


def _mlflow(logger_cfg: DictConfig, run_dir: Path, name: str, tags: list[str]) -> tuple[dict[str, Any], str]:
    return {"run_name": name, "tags": {tag: "true" for tag in tags} or None}, ""


def _in_run_dir(logger_cfg: DictConfig, run_dir: Path, name: str, tags: list[str]) -> tuple[dict[str, Any], str]:
    """A logger whose files go under save_dir, in a folder of its name= (TensorBoard's, CSV's): no run name."""
    return {"save_dir": str(run_dir)}, ""


# logger kind -> (the run's arguments where its config leaves them null, and how it connects, in words)
RUN_ARGUMENTS: dict[str, Callable[[DictConfig, Path, str, list[str]], tuple[dict[str, Any], str]]] = {
    "tensorboard": _in_run_dir, "csv": _in_run_dir, "mlflow": _mlflow, "wandb": _wandb, "comet": _comet}


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The configured experiment logger writing for this run, if one is chosen: its folder the run directory,
    its run named by name= (else the folder's name) and tagged by tags=, as far as its config leaves them null."""
    logger_cfg = cfg.get("logger")
    if not logger_cfg:
        return []
    kind, tags = logger_kind(logger_cfg), [str(tag) for tag in cfg.get("tags") or []]
    name = cfg.get("name") or run_dir.name
    if cfg.get("name") and run_dir.name.startswith(FOLD_PREFIX):  # a cross-validation fold: baseline fold_2
        name = f"{name} {run_dir.name}"
    arguments, said = RUN_ARGUMENTS.get(kind, lambda *_: ({}, ""))(logger_cfg, run_dir, name, tags)
    logger = build(logger_cfg, "logger", _convert_="all", **{key: value for key, value in arguments.items()
                                                             if logger_cfg.get(key) is None})
    if said:
        log.info(f"logger={kind}: {said}")
    return [logger]


def end_tracking(loggers: list[Logger]) -> None:
    """End the tracked run where its logger leaves that to its user once training is over: Comet's experiment
    (Lightning only flushes it, so that it can be used on), whose offline archive is then written."""
    for logger in loggers:
        if logger_kind({"_target_": type(logger).__name__}) == "comet":
            logger.experiment.end()


def logger_locations(cfg: DictConfig, loggers: list[Logger]) -> dict[str, str]:
    """Where each logger wrote, for results.json and the terminal: a folder (resolved) or a tracking server."""
    where = {}
    for logger in loggers:
        kind = logger_kind({"_target_": type(logger).__name__})
        if kind == "mlflow":
            where[kind] = f"{cfg.logger.tracking_uri} (experiment {logger.experiment_id}, run {logger.run_id})"
        elif kind == "wandb":
            folder = Path(logger.experiment.dir).parent.resolve()  # <save_dir>/wandb/<offline-run-...>/files
            where[kind] = (f"{folder} (offline run {logger.version}: wandb sync <this folder> sends it)"
                           if logger.experiment.offline else f"{logger.experiment.url} (run {logger.version})")
        elif kind == "comet":
            archive = next(Path(logger.save_dir).resolve().glob(f"{logger.version}-*.zip"), None)
            where[kind] = (f"{archive} (offline experiment: comet upload <this file> sends it)" if archive
                           else f"Comet project {logger.name} (experiment {logger.version})")
        elif logger.log_dir or logger.save_dir:
            where[kind] = str(Path(logger.log_dir or logger.save_dir).resolve())
    return where
