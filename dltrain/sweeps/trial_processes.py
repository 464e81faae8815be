"""`hydra.sweeper.n_jobs=K`: K trials at once on this machine, each in its own process.

Each trial process is this same command with n_jobs=1, told (by DLTRAIN_TRIAL_PROCESS) to take one trial
from the study and exit: so a crash or a CUDA error ends one trial, not the search, and the next trial
starts as soon as any one ends rather than when a batch of K has. The processes take their trials from
the study under its lock like any other worker, so n_trials stays exact. With GPUs, each process sees one
of them (CUDA_VISIBLE_DEVICES), in turn.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from dltrain.errors import ConfigError, RunInterrupted, Terminated
from dltrain.sweeps import search
from dltrain.sweeps.storage import CUT_OFF, TRIAL_PROCESS, WORKER, SharedStudy, this_worker

log = logging.getLogger("dltrain")
SET_HERE = ("hydra.sweeper.n_jobs=", "hydra.sweeper.storage=", "hydra.sweep.dir=")  # the parent decides these


def gpu_ids(gpus: Any) -> list[str]:
    """The GPUs the trial processes take in turn: `auto` (those this process sees: CUDA_VISIBLE_DEVICES, else
    every GPU torch finds), a list of ids, or null (no GPU given to any)."""
    if gpus is None:
        return []
    if gpus == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return [d.strip() for d in visible.split(",") if d.strip()]
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    if isinstance(gpus, (int, str)):
        gpus = [gpus]
    try:
        return [str(g) for g in gpus]
    except TypeError:
        raise ConfigError(f"hydra.sweeper.gpus={gpus!r}: give auto, null or a list of GPU ids such as [0,1]") from None


def trial_command(argv: list[str], sweep_dir: Path, url: str) -> list[str]:
    """This command again, for one trial: the same overrides, in the same sweep folder and study."""
    kept = [a for a in argv if not a.lstrip("+").startswith(SET_HERE)]
    return [sys.executable, "-m", "dltrain", *kept, "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage='{url}'",
            f"hydra.sweep.dir='{sweep_dir.resolve()}'"]


def run_trial_processes(shared: SharedStudy, n_trials: int, n_jobs: int, gpus: Any, sweep_dir: Path, url: str) -> None:
    """Keep up to n_jobs trial processes running until the study holds n_trials finished trials."""
    devices = gpu_ids(gpus)
    command = trial_command(sys.argv[1:], sweep_dir, url)
    running: dict[int, subprocess.Popen] = {}  # slot -> its trial process
    if devices:
        log.info(f"{n_jobs} trials at once, each on one GPU in turn of CUDA_VISIBLE_DEVICES {','.join(devices)}")
    next_check = 0.0
    try:
        while True:
            for slot, process in list(running.items()):
                if process.poll() is not None:
                    del running[slot]
                    _ended(shared, process)
            trials = shared.study.get_trials(deepcopy=False)
            claimed = {t.system_attrs.get(WORKER) for t in trials if t.state == TrialState.RUNNING}
            starting = sum(this_worker(p.pid) not in claimed for p in running.values())
            again = len(search.waiting(trials)) + len(search.cut_off(trials))  # retries, trials a stop cut off
            to_take = again + max(0, n_trials - search.trials_used(trials)) - starting
            for slot in (s for s in range(n_jobs) if s not in running):
                if to_take <= 0:
                    break
                running[slot] = _start(command, slot, devices, n_jobs)
                to_take -= 1
            if not running and to_take <= 0 and not search.unfinished(trials):
                return
            if not running and time.monotonic() > next_check:  # only other workers' trials are left
                with shared.lock():
                    shared.fail_stale()
                next_check = time.monotonic() + shared.wait_s()
            time.sleep(0.5)
    except (KeyboardInterrupt, Terminated) as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        for process in running.values():  # Ctrl-C reached them too (one process group); SIGTERM did not
            if name == "SIGTERM" and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running.values():
            _wait_through_signals(process)
            _ended(shared, process, stopping=True)
        raise RunInterrupted(f"interrupted by {name}", 143 if name == "SIGTERM" else 130) from None


def _start(command: list[str], slot: int, devices: list[str], n_jobs: int) -> subprocess.Popen:
    env = os.environ | {TRIAL_PROCESS: str(n_jobs)}  # it takes one trial, and a 1/n_jobs share of the cores
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    return subprocess.Popen(command, env=env)


def _wait_through_signals(process: subprocess.Popen) -> None:
    """Wait for a trial process to save and stop, whatever signal reaches this one meanwhile."""
    while True:
        try:
            process.wait()
            return
        except (KeyboardInterrupt, Terminated):
            continue


def _ended(shared: SharedStudy, process: subprocess.Popen, stopping: bool = False) -> None:
    """A trial process ended: a trial it left RUNNING without saying it was cut off (a crash, a kill) is failed
    and runs again, as a trial of a worker that stopped beating would. One that failed before taking a trial
    would fail again: the search stops."""
    worker = this_worker(process.pid)
    trials = shared.study.get_trials(deepcopy=False)
    if not stopping and process.returncode != 0 and not any(t.system_attrs.get(WORKER) == worker for t in trials):
        raise ConfigError(f"a trial process ended with exit code {process.returncode} before it took a trial (its "
                          "error is above); the search stopped rather than start it again")
    for trial in (t for t in trials if t.state == TrialState.RUNNING):
        if trial.system_attrs.get(WORKER) == worker and not trial.system_attrs.get(CUT_OFF):
            code = process.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
            log.warning(f"trial {trial.number}: its process {how} during the trial; it is marked failed and "
                        "runs again")
            with shared.lock():
                shared.fail_and_retry(trial)
