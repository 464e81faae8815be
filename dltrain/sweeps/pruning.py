"""Pruning inside a search trial: report the monitored metric each epoch and stop a clearly bad trial."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from dltrain.errors import RunStopped

log = logging.getLogger("dltrain")
OPTUNA_SWEEPER = "hydra_plugins.dltrain_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def trial_pruning(hydra_cfg: Any, cfg: DictConfig) -> list[pl.Callback]:
    """The pruning callback when this job is a trial of dltrain's Optuna sweeper, else nothing."""
    sweeper = hydra_cfg.sweeper
    if sweeper.get("_target_") != OPTUNA_SWEEPER or not sweeper.get("storage"):
        return []
    if cfg.trainer.get("strategy") not in (None, "auto") or cfg.trainer.get("num_nodes", 1) != 1:
        # The other ranks of a DDP trial run outside the sweep and could not stop with rank zero.
        log.warning("pruning is off for trials that train in several processes; each trial runs to its end")
        return []
    return [TrialPruning(sweeper.storage, sweeper.study_name, int(hydra_cfg.job.num), cfg.monitor)]


class TrialPruning(pl.Callback):
    """Reports `monitor` to the trial after each validation and ends the run when the pruner says so.

    Written here rather than taken from optuna-integration: its callback is built on the `lightning`
    package, and dltrain's Trainer is `pytorch_lightning`'s, which it does not accept.
    """

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str) -> None:
        import optuna

        from dltrain.sweeps.storage import open_storage, trial_id

        shared = open_storage(storage)
        study = optuna.load_study(study_name=study_name, storage=shared)
        self.trial = optuna.trial.Trial(study, trial_id(shared, study_name, trial_number))
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise RunStopped(f"trial {self.trial.number} pruned after epoch {epoch + 1} "
                             f"({self.monitor} {float(value):.4f} is worse than the pruner allows)", status="pruned")
