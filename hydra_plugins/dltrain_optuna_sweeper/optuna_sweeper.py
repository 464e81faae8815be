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
        from dltrain.errors import RunInterrupted
        from dltrain.sweeps import search, summary

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, space = search.search_space(parser.parse_overrides(
            [f"{key}={value}" for key, value in self.params.items()] + list(arguments)))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        study = search.open_study(storage, self.study_name, self.config.mode, self.sampler, self.pruner)
        job_overrides = [f"hydra.sweeper.storage='{storage}'", f"hydra.sweeper.study_name='{self.study_name}'"]

        def run(trials: list) -> None:
            """Launch the trials (numbers in a row) as jobs numbered like them, and tell the study each result."""
            for trial in trials:
                search.record_run_dir(study, trial.number, sweep_dir / str(trial.number))
            batch = [fixed + search.trial_overrides(trial) + job_overrides for trial in trials]
            # Job numbers are the trials' numbers, so a trial's job knows which trial it reports to.
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, returns):
                search.tell(study, trial, job)

        def summarize() -> dict[str, Any]:
            record = search.write_best(study, sweep_dir, fixed, self.config.monitor)
            summary.last_outcome = summary.write_summary(sweep_dir, self.config.monitor, self.config.mode,
                                                         search.trial_run_dirs(study))
            summary.summarized.add(sweep_dir)
            return record

        try:
            for trial in search.cut_off_trials(study):
                log.info(f"trial {trial.number} was cut off when the search last stopped: running it again")
                run([trial])
            while (remaining := self.n_trials - search.finished_trials(study)) > 0:
                run([study.ask(space) for _ in range(min(self.n_jobs, remaining))])
        except RunInterrupted as exc:
            summarize()
            again = "the same command" if self.storage else (
                f"the same command and hydra.sweeper.storage={storage} (this search's study is stored there)")
            stopped = RunInterrupted(
                f"{exc}. The search stopped: {search.finished_trials(study)} of {self.n_trials} trials finished, "
                f"the cut-off one runs again when you continue with {again}; summary: {sweep_dir / 'summary.md'}",
                exc.exit_code)
            stopped.summarized = True
            raise stopped from None
        return summarize()
