"""Many workers on one Optuna study: separate `dltrain -m` processes sharing a storage (a real PostgreSQL
server, a journal file), a worker killed mid-trial, and n_jobs trial processes on one machine."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from conftest import dltrain_command, free_port, read_metrics

SEARCH = ["-m", "hparams_search=mlp_digits", "trainer=cpu", "callbacks.early_stopping=null", "model.hidden_sizes=[16]"]
# Epochs of about a second and a half: long enough to see trials overlap, and to kill one mid-trial.
SLOW = ["data=linear", "data.n_samples=16000", "data.batch_size=32", "monitor=val_loss", "mode=min"]
COMPLETE = TrialState.COMPLETE


def worker(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """One `dltrain -m` worker, as a user starts it on a machine, its output into files in cwd."""
    cwd.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | (env or {})
    return subprocess.Popen([str(Path(sys.executable).with_name("dltrain")), *SEARCH, *args], cwd=cwd, env=full_env,
                            stdout=(cwd / "out.txt").open("w"), stderr=(cwd / "err.txt").open("w"))


def finished(process: subprocess.Popen, cwd: Path) -> str:
    process.wait(timeout=600)
    err = (cwd / "err.txt").read_text()
    assert process.returncode == 0, err[-3000:]
    return err


def sweep_dir(cwd: Path) -> Path:
    (found,) = (cwd / "outputs" / "multirun").iterdir()
    return found


def trial_folders(cwd: Path) -> set[int]:
    return {int(d.name) for d in sweep_dir(cwd).iterdir() if d.is_dir() and d.name.isdigit()}


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own on 127.0.0.1 for these tests (the Debian package, which .ci/run installs)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not bins:
        pytest.skip("no PostgreSQL server is installed (apt-get install postgresql, as .ci/run does)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed (pip install 'dltrain[postgres]')")
    bin_dir = bins[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="dltrain-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the package's own user
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        folder.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"

    def pg(*command: str) -> None:
        proc = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            pytest.skip(f"the PostgreSQL server could not start here: {command[0]}: {(proc.stderr or proc.stdout)[-500:]}")

    pg(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "dltrain")
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start",
       "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1")
    try:
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dltrain", "search")
        yield f"postgresql://dltrain@127.0.0.1:{port}/search"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_two_workers_share_one_study_and_each_summary_holds_all_of_it(tmp_path, kind, request):
    if kind == "postgresql":
        url = request.getfixturevalue("postgres")
        storage = url
    else:  # a journal file, as on a folder the machines share
        url = f"journal://{tmp_path / 'shared' / 'study.log'}"
        storage = None
    n_trials = 4
    args = ["trainer.max_epochs=1", f"hydra.sweeper.storage={url}", f"hydra.sweeper.n_trials={n_trials}"]
    machines = [tmp_path / "machine_a", tmp_path / "machine_b"]
    processes = [worker(machine, *args) for machine in machines]
    for process, machine in zip(processes, machines):
        finished(process, machine)

    if storage is None:
        storage = JournalStorage(JournalFileBackend(str(tmp_path / "shared" / "study.log")))
    study = optuna.load_study(study_name="mlp_digits", storage=storage)
    assert [t.number for t in study.trials] == list(range(n_trials))
    assert [t.state for t in study.trials] == [COMPLETE] * n_trials
    ran = [trial_folders(machine) for machine in machines]
    assert ran[0] | ran[1] == set(range(n_trials)) and not ran[0] & ran[1]  # each trial ran once, somewhere
    assert ran[0] and ran[1]  # both workers took trials
    workers = {t.system_attrs["dltrain_worker"] for t in study.trials}
    assert len(workers) == 2
    for machine in machines:  # each worker's summary is the whole study's
        found = yaml.safe_load((sweep_dir(machine) / "search_results.yaml").read_text())
        assert found["trials"] == {"complete": n_trials, "pruned": 0, "fail": 0, "retried": 0}
        assert found["best_value"] == pytest.approx(max(t.value for t in study.trials))  # val_acc, maximized
        summary = pd.read_csv(sweep_dir(machine) / "summary.csv")
        assert sorted(summary.job) == list(range(n_trials)) and set(summary.status) == {"completed"}


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_it_failed_and_the_next_start_runs_it_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    args = [*SLOW, "trainer.max_epochs=2", f"hydra.sweeper.storage={url}", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    first = worker(tmp_path / "first", *args)
    deadline = time.monotonic() + 300
    while not any((d / "metrics.csv").exists() and read_metrics(d) for d in (tmp_path / "first").glob("outputs/*/*/0")):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first" / "err.txt").read_text()
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # mid-trial: no chance to say anything
    first.wait()
    study = optuna.load_study(study_name="mlp_digits", storage=url)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]

    err = finished(worker(tmp_path / "second", *args), tmp_path / "second")
    study = optuna.load_study(study_name="mlp_digits", storage=url)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, COMPLETE, COMPLETE], states
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.params == study.trials[0].params and retry.number in (1, 2)
    found = yaml.safe_load((sweep_dir(tmp_path / "second") / "search_results.yaml").read_text())
    assert found["trials"] == {"complete": 2, "pruned": 0, "fail": 0, "retried": 1}  # n_trials=2 finished
    summary = pd.read_csv(sweep_dir(tmp_path / "second") / "summary.csv")
    assert dict(zip(summary.job, summary.status)) == {0: "retried", 1: "completed", 2: "completed"}
    assert "Traceback" not in err


@pytest.mark.slow
def test_n_jobs_runs_each_trial_in_its_own_process_on_its_own_gpu(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # CUDA_VISIBLE_DEVICES as on a two-GPU machine: each trial process is given one of them
    process = worker(tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=4", f"hydra.sweeper.storage={url}",
                     "hydra.sweeper.n_trials=3",
                     "hydra.sweeper.n_jobs=2", env={"CUDA_VISIBLE_DEVICES": "3,5"})
    err = finished(process, tmp_path)
    trials = optuna.load_study(study_name="mlp_digits", storage=url).trials
    assert [t.state for t in trials] == [COMPLETE] * 3
    assert trials[1].datetime_start < trials[0].datetime_complete  # two at once
    assert sorted(t.system_attrs["dltrain_cuda_visible_devices"] for t in trials[:2]) == ["3", "5"]
    assert trials[2].system_attrs["dltrain_cuda_visible_devices"] in ("3", "5")
    assert len({t.system_attrs["dltrain_worker"] for t in trials}) == 3  # a process per trial
    assert trial_folders(tmp_path) == {0, 1, 2}
    found = yaml.safe_load((sweep_dir(tmp_path) / "search_results.yaml").read_text())
    assert found["trials"]["complete"] == 3 and len(pd.read_csv(sweep_dir(tmp_path) / "summary.csv")) == 3
    assert "[trial 2] epoch 1/1" in (tmp_path / "out.txt").read_text() + err


# A stand-in for a trial process: it takes its trial from the study as dltrain's does, and sleeps for the
# trial's `seconds` instead of training; `crash` makes its first run die as a segfault would.
FAKE_TRIAL = """
import os, sys, time
from dltrain.sweeps import search
from dltrain.sweeps.storage import SharedStudy
from optuna.distributions import FloatDistribution, CategoricalDistribution
shared = SharedStudy(sys.argv[1], "fake", 1, 3, 1)
search.open_study(shared, "min", {"_target_": "optuna.samplers.RandomSampler"}, {"_target_": "optuna.pruners.NopPruner"})
trial = search.next_trial(shared, {"seconds": FloatDistribution(0, 10), "crash": CategoricalDistribution([0, 1])}, 4)
if trial is not None:
    with shared.heartbeat(trial.number):
        time.sleep(trial.params["seconds"])
        if trial.params["crash"] and "failed_trial" not in shared.study.trials[trial.number].system_attrs:
            os.kill(os.getpid(), 9)
    shared.study.tell(trial.number, trial.params["seconds"])
"""


@pytest.mark.slow
def test_trial_processes_start_the_next_trial_when_one_ends_and_outlive_a_crashed_one(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from dltrain.sweeps import search, trial_processes
    from dltrain.sweeps.storage import SharedStudy

    url = f"sqlite:///{tmp_path / 'study.db'}"
    shared = SharedStudy(url, "fake", 1, 3, 1)
    search.open_study(shared, "min", OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}),
                      OmegaConf.create({"_target_": "optuna.pruners.NopPruner"}))
    for seconds, crash in ((0.2, 0), (10.0, 0), (0.2, 1), (0.2, 0)):  # trial 1 runs long; trial 2 crashes once
        shared.study.enqueue_trial({"seconds": seconds, "crash": crash})
    (tmp_path / "fake_trial.py").write_text(FAKE_TRIAL)
    monkeypatch.setattr(trial_processes, "trial_command", lambda *a: [sys.executable, str(tmp_path / "fake_trial.py"), url])
    trial_processes.run_trial_processes(shared, 4, 2, ["3", "5"], tmp_path, url)

    trials = shared.study.get_trials()
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, TrialState.FAIL, COMPLETE, COMPLETE]
    first, long, crashed, fourth, retry = trials
    assert long.datetime_start < first.datetime_complete  # two at once
    # The next trial started when one slot freed, while the long trial still ran: no waiting for a batch.
    assert first.datetime_complete <= crashed.datetime_start < long.datetime_complete
    assert fourth.datetime_start < long.datetime_complete  # the crash, meanwhile, ended only its own trial
    assert retry.system_attrs["failed_trial"] == 2 and retry.params == crashed.params  # run again, once
    assert search.finished_trials(trials) == 4  # n_trials, the crashed one counted once
    assert sorted(t.system_attrs["dltrain_cuda_visible_devices"] for t in (first, long)) == ["3", "5"]
    assert long.system_attrs["dltrain_cuda_visible_devices"] not in {
        t.system_attrs["dltrain_cuda_visible_devices"] for t in (crashed, fourth, retry)}  # its GPU stayed its own


@pytest.mark.parametrize("storage, expected", [
    ("postgresql://dltrain:hunter2@127.0.0.1:{port}/search", "hydra.sweeper.storage=postgresql://dltrain:***@127.0.0.1:"),
    ("redis://somewhere", "hydra.sweeper.storage=redis://somewhere: give sqlite:///<file>, journal:///<file"),
])
def test_a_storage_that_cannot_be_used_is_one_line_and_never_shows_its_password(tmp_path, storage, expected):
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed")
    proc = dltrain_command(*SEARCH, f"hydra.sweeper.storage={storage.format(port=free_port())}", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr and "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


def test_sweeper_settings_out_of_range_are_one_line(tmp_path):
    for override, expected in (("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0: give a whole number of at least 1"),
                               ("hydra.sweeper.grace_period=30", "hydra.sweeper.grace_period=30: give a whole number "
                                                                 "of seconds above heartbeat_interval (60)")):
        proc = dltrain_command(*SEARCH, override, cwd=tmp_path)
        assert proc.returncode == 1 and expected in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
