"""Optuna search as a Hydra sweeper: `dltrain -m hparams_search=<preset>`.

dltrain's own, rather than hydra-optuna-sweeper: that plugin pins optuna < 3, whose SQLite storage fails with
SQLAlchemy 2, so a study could not be stored and resumed. Optuna is imported only when a search runs:
Hydra imports every plugin module at each start.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("dltrain")


class OptunaSweeper(Sweeper):
    """Takes trials from an Optuna study, runs each as a dltrain job, and tells the study its monitored metric.

    Any number of these (`dltrain -m hparams_search=...` on one machine or many, on one storage) are workers of
    one study. With n_jobs > 1 this process runs no trial itself: it keeps n_jobs trial processes going.
    """

    summarizes = True  # its summary covers the whole study: the SweepSummary callback leaves it be

    def __init__(self, *, storage: str | None, study_name: str, n_trials: int, n_jobs: int, sampler: Any, pruner: Any,
                 params: dict[str, str] | None, heartbeat_interval: int = 60, grace_period: int = 180,
                 retries: int = 1, gpus: Any = "auto") -> None:
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner = sampler, pruner
        self.params = dict(params or {})
        self.heartbeat_interval, self.grace_period, self.retries = heartbeat_interval, grace_period, retries
        self.gpus = gpus

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from dltrain.errors import RunInterrupted
        from dltrain.sweeps import search, summary
        from dltrain.sweeps.storage import CUT_OFF, TRIAL_PROCESS, SharedStudy

        search.check_settings(self)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, space = search.search_space(parser.parse_overrides(
            [f"{key}={value}" for key, value in self.params.items()] + list(arguments)))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        url = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        shared = SharedStudy(url, self.study_name, self.heartbeat_interval, self.grace_period, self.retries)
        study = search.open_study(shared, self.config.mode, self.sampler, self.pruner)
        one_trial = bool(os.environ.get(TRIAL_PROCESS))  # a trial process of an n_jobs search: one trial, no summary
        job_overrides = [f"hydra.sweeper.storage='{url}'", f"hydra.sweeper.study_name='{self.study_name}'"]

        def summarize() -> summary.SweepOutcome:
            search.write_best(study, sweep_dir, fixed, self.config.monitor)
            return summary.write_summary(sweep_dir, self.config.monitor, self.config.mode,
                                         search.trial_rows(study, self.config.monitor))

        trial = None
        try:
            if self.n_jobs > 1:
                from dltrain.sweeps.trial_processes import run_trial_processes

                run_trial_processes(shared, self.n_trials, self.n_jobs, self.gpus, sweep_dir, url)
            else:
                while True:
                    trial = search.next_trial(shared, space, self.n_trials)
                    if trial is None:
                        if one_trial or not search.unfinished(study.get_trials(deepcopy=False)):
                            break
                        time.sleep(shared.wait_s())  # trials other workers run: one may fail and come back
                        continue
                    search.record_run_dir(study, trial.number, sweep_dir / str(trial.number))
                    with shared.heartbeat(trial.number):
                        # The job's number is the trial's, so the job knows which trial it reports to.
                        (job,) = self.launcher.launch([fixed + search.trial_overrides(trial) + job_overrides],
                                                      initial_job_idx=trial.number)
                    search.tell(study, trial, job)
                    trial = None
                    if one_trial:
                        break
        except RunInterrupted as exc:
            if trial is not None:  # the next start (of any worker) takes it over, under its own number
                shared.set_attrs(trial.number, **{CUT_OFF: True})
            if one_trial:
                raise
            summarize()
            again = "the same command" if self.storage else (
                f"the same command and hydra.sweeper.storage={url} (this search's study is stored there)")
            done = search.finished_trials(study.get_trials(deepcopy=False))
            stopped = RunInterrupted(
                f"{exc}. The search stopped: {done} of {self.n_trials} trials finished, the cut-off one runs again "
                f"when you continue with {again}; summary: {sweep_dir / 'summary.md'}", exc.exit_code)
            stopped.summarized = True
            raise stopped from None
        if not one_trial:  # the search process that started a trial process writes the summary
            summary.end_sweep(summarize())
