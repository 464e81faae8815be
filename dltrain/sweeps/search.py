"""Optuna search, the parts the sweeper plugin uses: the search space, the study, and the best result."""

from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dltrain.errors import ConfigError
from dltrain.run_files import write_atomic

log = logging.getLogger("dltrain")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUN_DIR = "run_dir_"  # study user attribute prefix: trial number -> the folder its job ran in


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


def open_study(storage: str, name: str, mode: str, sampler: DictConfig, pruner: DictConfig) -> optuna.Study:
    """Create the study, or load it from storage to continue it.

    sampler and pruner are configs: a resumed study's sampler gets its seed plus the number of trials the
    study holds, so it goes on drawing new parameters rather than the ones its first start drew.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # dltrain logs each trial itself
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    direction = "minimize" if mode == "min" else "maximize"
    study = optuna.create_study(storage=storage, study_name=name, pruner=instantiate(pruner),
                                direction=direction, load_if_exists=True)
    held = len(study.get_trials(deepcopy=False))
    seed = {"seed": sampler.seed + held} if held and sampler.get("seed") is not None else {}
    study.sampler = instantiate(sampler, **seed)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {name!r} in {storage} is set to {study.direction.name.lower()}, but mode={mode} "
                          f"asks to {direction}: use another hydra.sweeper.study_name or storage")
    done = finished_trials(study)
    if done:
        log.info(f"study {name!r} in {storage}: {done} trial(s) already finished, continuing")
    return study


def cut_off_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials an earlier search left running when it stopped (Ctrl-C, SIGTERM, a kill): they run again under
    their own numbers, so the study ends with exactly n_trials trials. One search process per study: a
    trial RUNNING in storage belongs to no live process."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def finished_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: those that ended (completed, pruned or failed)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def record_run_dir(study: optuna.Study, number: int, run_dir: Path) -> None:
    """Where trial `number` runs, kept in the study (which may span several sweep folders) for its summary."""
    study.set_user_attr(f"{RUN_DIR}{number}", str(Path(run_dir).resolve()))


def trial_run_dirs(study: optuna.Study) -> list[tuple[int, Path]]:
    """(trial number, run directory) of every trial of the study that was launched, in trial order."""
    attrs = study.user_attrs
    return [(t.number, Path(attrs[f"{RUN_DIR}{t.number}"])) for t in study.get_trials(deepcopy=False)
            if f"{RUN_DIR}{t.number}" in attrs]


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
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in FINISHED}
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
