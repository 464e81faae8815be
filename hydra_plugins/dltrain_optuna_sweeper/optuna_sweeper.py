"""Optuna search as a Hydra sweeper: `dltrain -m hparams_search=<preset>`.

dltrain's own, rather than hydra-optuna-sweeper: that plugin pins optuna < 3, whose SQLite storage fails with
SQLAlchemy 2, so a study could not be stored and resumed. Optuna is imported only when a search runs:
Hydra imports every plugin module at each start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("dltrain")


class OptunaSweeper(Sweeper):
    """Asks Optuna for parameters, launches each trial as a dltrain job, and tells it the monitored metric."""

    def __init__(self, storage: str | None, study_name: str, n_trials: int, n_jobs: int,
                 sampler: Any, pruner: Any, params: dict[str, str] | None) -> None:
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.sampler, self.pruner = sampler, pruner
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        from dltrain.sweeps import search

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, space = search.search_space(parser.parse_overrides(
            [f"{key}={value}" for key, value in self.params.items()] + list(arguments)))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        study = search.open_study(storage, self.study_name, self.config.mode, self.sampler, self.pruner)
        job_overrides = [f"hydra.sweeper.storage='{storage}'", f"hydra.sweeper.study_name='{self.study_name}'"]
        while (remaining := self.n_trials - search.finished_trials(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = [fixed + search.trial_overrides(trial) + job_overrides for trial in trials]
            # Job numbers are the trials' numbers, so a trial's job knows which trial it reports to.
            assert [t.number for t in trials] == list(range(trials[0].number, trials[0].number + len(trials)))
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, returns):
                search.tell(study, trial, job)
        return search.write_best(study, sweep_dir, fixed, self.config.monitor)
