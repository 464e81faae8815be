"""Optuna search, the parts the sweeper plugin uses: the search space, the study, and the best result."""

from __future__ import annotations

import logging
import math
import os
import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dltrain.errors import ConfigError
from dltrain.rundir.files import write_atomic
from dltrain.sweeps.storage import CUT_OFF, DEVICES, TRIAL_PROCESS, WORKER, SharedStudy, shown, this_worker

log = logging.getLogger("dltrain")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUN_DIR = "run_dir_"  # study user attribute prefix: trial number -> the folder its job ran in


def check_settings(sweeper: Any) -> None:
    """The sweeper's own keys, refused in one line when they cannot be meant."""
    counts = {"n_trials": sweeper.n_trials, "n_jobs": sweeper.n_jobs, "heartbeat_interval": sweeper.heartbeat_interval}
    for key, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value!r}: give a whole number of at least 1")
    if not isinstance(sweeper.retries, int) or sweeper.retries < 0:
        raise ConfigError(f"hydra.sweeper.retries={sweeper.retries!r}: give 0 (never run a trial again) or more")
    if not isinstance(sweeper.grace_period, int) or sweeper.grace_period <= sweeper.heartbeat_interval:
        raise ConfigError(f"hydra.sweeper.grace_period={sweeper.grace_period!r}: give a whole number of seconds above "
                          f"heartbeat_interval ({sweeper.heartbeat_interval}), e.g. three times it")
    storage = sweeper.storage
    if storage is not None and not str(storage).startswith(("sqlite:///", "journal://", "postgresql", "mysql")):
        raise ConfigError(f"hydra.sweeper.storage={shown(str(storage))}: give sqlite:///<file>, journal:///<file on a shared "
                          "folder>, postgresql://user:password@host/db or mysql://user:password@host/db")


def search_space(overrides: list[Override]) -> tuple[list[str], dict[str, BaseDistribution]]:
    """Split overrides into the fixed ones (key=value) and the searched ones (choice, range, interval)."""
    fixed, space = [], {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = _distribution(key, override.value())
        else:
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    if not space:
        raise ConfigError("hparams_search: nothing to search; give hydra.sweeper.params, e.g. "
                          "optimizer.lr='tag(log, interval(1e-4, 1e-1))' or model.dropout=choice(0.0,0.3)")
    return fixed, space


def _distribution(key: str, sweep: Any) -> BaseDistribution:
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution([v if isinstance(v, (bool, int, float)) else str(v) for v in sweep.list])
    if isinstance(sweep, RangeSweep) and all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        values = range(sweep.start, sweep.stop, sweep.step)
        return IntDistribution(min(values), max(values), step=abs(sweep.step))
    if isinstance(sweep, RangeSweep):
        return CategoricalDistribution(list(sweep))
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if "int" in sweep.tags:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return FloatDistribution(sweep.start, sweep.end, log=log_scale)
    raise ConfigError(f"hparams_search: {key} is a {type(sweep).__name__} sweep; a search takes "
                      "choice(a,b), range(start,stop[,step]), interval(low,high), tag(log, interval(low,high))")


def open_study(shared: SharedStudy, mode: str, sampler: DictConfig, pruner: DictConfig) -> optuna.Study:
    """Create the study, or load it from storage to continue it (or to join the workers already on it).

    The pruner is a config; the sampler (a config too) is made afresh for each trial asked, see next_trial.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # dltrain logs each trial itself
    direction = "minimize" if mode == "min" else "maximize"
    with shared.lock():
        study = optuna.create_study(storage=shared.storage, study_name=shared.study_name, pruner=instantiate(pruner),
                                    direction=direction, load_if_exists=True)
    shared.study, shared.sampler = study, sampler
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {shared.study_name!r} in {shown(shared.url)} is set to {study.direction.name.lower()}, "
                          f"but mode={mode} asks to {direction}: use another hydra.sweeper.study_name or storage")
    done = finished_trials(study.get_trials(deepcopy=False))
    if done and not os.environ.get(TRIAL_PROCESS):
        log.info(f"study {shared.study_name!r} in {shown(shared.url)}: {done} trial(s) already finished, continuing")
    return study


def retried(trials: list[FrozenTrial]) -> dict[int, int]:
    """Failed trials that were queued to run again: trial number -> the number of its retry."""
    return {number: t.number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def trials_used(trials: list[FrozenTrial]) -> int:
    """Trials that count towards n_trials: every trial of the study but a failed one that runs again (its retry
    counts in its place)."""
    return len(trials) - len(retried(trials))


def finished_trials(trials: list[FrozenTrial]) -> int:
    """Trials that ended (completed, pruned or failed), a failed one that runs again not counted."""
    return sum(t.state in FINISHED for t in trials) - len(retried(trials))


def cut_off(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials a stop (Ctrl-C, SIGTERM) cut off: still RUNNING, to be taken over under their own numbers."""
    return [t for t in trials if t.state == TrialState.RUNNING and t.system_attrs.get(CUT_OFF)]


def waiting(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials queued to run again (the retries of failed ones)."""
    return [t for t in trials if t.state == TrialState.WAITING]


def unfinished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials of dltrain workers still to end: waiting to run (retries), or running in some worker."""
    return waiting(trials) + [t for t in trials if t.state == TrialState.RUNNING and WORKER in t.system_attrs]


def next_trial(shared: SharedStudy, space: dict[str, BaseDistribution], n_trials: int
               ) -> optuna.Trial | optuna.trial.FrozenTrial | None:
    """Under the study's lock: this worker's next trial, or None when none is left for it. First a trial cut
    off by a stop (Ctrl-C, SIGTERM), run again under its number; then a failed trial queued to run again;
    then a new one while the study holds fewer than n_trials."""
    study = shared.study
    with shared.lock():
        stopped = cut_off(study.get_trials(deepcopy=False))
        if stopped:
            shared.beat(stopped[0].number)  # alive again before the stale check below could fail it
        shared.fail_stale()
        trials = study.get_trials(deepcopy=False)  # with the retries the stale check may have queued
        if stopped:
            trial = stopped[0]
        elif waiting(trials) or trials_used(trials) < n_trials:
            trial = _ask(study, shared.sampler, space, len(trials))  # a waiting trial first
        else:
            return None
        # Who runs it, and on which GPUs (a trial process of n_jobs sees one), kept in the study.
        shared.set_attrs(trial.number, **{WORKER: this_worker(), CUT_OFF: False,
                                          DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES")})
        shared.beat(trial.number)
    return trial


def _ask(study: optuna.Study, sampler: DictConfig, space: dict[str, BaseDistribution], held: int) -> optuna.Trial:
    """study.ask with a sampler seeded by the `held` trials the study holds: a continued study, or a second
    worker, draws new parameters rather than the ones the first start drew, and a search is the same for one
    seed."""
    seed = sampler.get("seed")
    study.sampler = instantiate(sampler, **({} if seed is None else {"seed": seed + held}))
    with warnings.catch_warnings():  # its advice to use Study.optimize: dltrain beats for each trial itself
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask(space)


def record_run_dir(study: optuna.Study, number: int, run_dir: Path) -> None:
    """Where trial `number` runs, kept in the study (which may span several sweep folders) for its summary."""
    study.set_user_attr(f"{RUN_DIR}{number}", str(Path(run_dir).resolve()))


def trial_rows(study: optuna.Study, monitor: str) -> list[dict[str, Any]]:
    """The summary's rows: one per trial of the study, from its run folder where this machine has it, else
    from what the study holds (a trial another machine ran)."""
    from dltrain.sweeps.summary import job_rows

    trials, attrs = study.get_trials(deepcopy=False), study.user_attrs
    again = retried(trials)
    rows = []
    for trial in (t for t in trials if t.state != TrialState.WAITING):
        run_dir = Path(attrs.get(f"{RUN_DIR}{trial.number}", ""))
        if f"{RUN_DIR}{trial.number}" in attrs and run_dir.is_dir():
            (row,) = job_rows([(trial.number, run_dir)], monitor)
        else:
            row = {"job": trial.number, "overrides": trial_overrides(trial), "task": None,
                   "status": STATUS.get(trial.state, "running"), f"best_{monitor}": trial.value,
                   "run_dir": f"{trial.system_attrs.get(WORKER, '?').split(':')[0]}:{run_dir}"}
        if trial.number in again:
            row |= {"status": "retried", "error": f"its worker stopped; run again as trial {again[trial.number]}"}
        rows.append(row)
    return rows


STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def trial_overrides(trial: optuna.Trial) -> list[str]:
    return [f"{key}={value}" for key, value in trial.params.items()]


def tell(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, job: JobReturn) -> None:
    """Tell the study how a trial's job ended: its monitored value, pruned, or failed."""
    try:
        result = job.return_value
    except Exception as exc:  # a job that raised is a failed trial, not a failed search
        result = {"status": "failed", "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    result = result if isinstance(result, dict) else {"status": "failed", "error": "the job returned no results"}
    params = " ".join(trial_overrides(trial))
    value = result.get("best_val")
    if result.get("status") == "completed" and value is not None and math.isfinite(value):
        study.tell(trial.number, value)
        log.info(f"trial {trial.number}: {value:.4f} with {params}")
    elif result.get("status") == "pruned":
        study.tell(trial.number, state=TrialState.PRUNED)
        log.info(f"trial {trial.number}: pruned with {params}")
    else:
        study.tell(trial.number, state=TrialState.FAIL)
        log.info(f"trial {trial.number}: {result.get('status')} with {params}: {result.get('error', '')}")


def write_best(study: optuna.Study, sweep_dir: Path, fixed: list[str], monitor: str) -> dict[str, Any]:
    """Write search_results.yaml (best value, parameters and a ready-to-run command) and say it."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    counts = {state.name.lower(): sum(t.state == state and t.number not in again for t in trials) for state in FINISHED}
    counts["retried"] = len(again)  # failed when their worker stopped, and run again as another trial
    record: dict[str, Any] = {"study_name": study.study_name, "direction": study.direction.name.lower(),
                              "monitor": monitor, "trials": counts}
    if counts["complete"]:
        best = study.best_trial
        command = "dltrain " + " ".join(shlex.quote(o) for o in fixed + trial_overrides(best))
        record |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params,
                   "command": command}
        log.info(f"best trial {best.number}: {monitor} {best.value:.4f}; run it with:\n  {command}")
    else:
        log.warning("no trial completed, so there is no best value")
    write_atomic(sweep_dir / "search_results.yaml", OmegaConf.to_yaml(record))
    return record
