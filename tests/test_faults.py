"""Bad input and faults through the real commands: a user's mistake is one line and exit 1, nothing accepted
is silently wrong, no file looks complete that is not, and an interrupt stops a whole sweep or search."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import dltrain_command, only_run_dir, read_metrics, read_results
from test_checkpoints import SLOW_EPOCHS, start, tool, wait_for

FAST = ["trainer=cpu", "trainer.max_epochs=1", "model=mlp", "model.hidden_sizes=[16]"]


def one_line_error(proc: subprocess.CompletedProcess, command: str = "dltrain", after_log: bool = False) -> str:
    """The single stderr line of a user error (exit 1, no traceback), without its prefix; `after_log`: the
    last line, after the log of a run that had started training."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()[-1:] if after_log else proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    return lines[0].removeprefix(f"{command}: error: ")


def table(path: Path, header: str, rows: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path


def classes(n: int = 120) -> list[str]:
    return [f"{i % 7 / 7},{(i * 3) % 5 / 5},{i % 2}" for i in range(n)]


# ---- 1. user mistakes are user errors, whichever library raised them -----------------------------------------

@pytest.mark.parametrize("args, message", [
    (["resume=not_a_run"], "is not a run directory (it has neither config.yaml nor checkpoints/last.ckpt"),
    (["monitor=val_accuracy"], "monitor=val_accuracy is not a metric this run logs: did you mean val_acc?"),
    (["trainer.max_steps=3"], "trainer.max_steps=3 ends training before the first validation (after 26 optimizer "
                              "steps), so callbacks.early_stopping.monitor=val_loss is never logged"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 trains on nothing"),
    (["+optimizer.betaz=[0.9,0.99]"], "optimizer.betaz is not an argument of torch.optim.Adam: did you mean "
                                      "optimizer.betas?"),
    (["+callbacks.early_stopping.patiense=2"], "callbacks.early_stopping.patiense is not an argument of "
                                               "pytorch_lightning.callbacks.EarlyStopping: did you mean "
                                               "callbacks.early_stopping.patience?"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 turns validation off, so monitor=val_loss"),
])
def test_a_mistake_found_before_training_is_one_line_and_leaves_no_run(tmp_path, args, message):
    (tmp_path / "not_a_run").mkdir()
    proc = dltrain_command(*FAST, "data.batch_size=50", *args, cwd=tmp_path)
    assert message in one_line_error(proc)
    assert not list(tmp_path.glob("outputs/runs/*/results.json")) and not list(tmp_path.glob("outputs/runs/*/*.csv"))


def test_a_csv_that_is_not_utf8_is_named_and_data_encoding_reads_it(tmp_path):
    rows = [f"{i},{i * 2},{'café' if i % 2 else 'thé'}" for i in range(60)]
    path = table(tmp_path / "latin.csv", "a,b,drink", rows, encoding="latin-1")
    proc = dltrain_command(*FAST, "data=csv", f"data.path={path}", "data.target=drink", cwd=tmp_path)
    assert one_line_error(proc) == (f"{path}: column 'drink' holds text that is not utf-8; save the file as UTF-8, "
                                    "or name its encoding with data.encoding=<name> (e.g. latin-1, cp1252)")
    proc = dltrain_command(*FAST, "data=csv", f"data.path={path}", "data.target=drink", "data.encoding=latin-1",
                           cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [read_results(p.parent)["status"] for p in tmp_path.glob("outputs/runs/*/results.json")] == ["completed"]


def test_a_file_that_is_no_checkpoint_and_a_run_without_config_are_one_line(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    for name in ("dltrain-eval", "dltrain-predict"):
        extra = [f"input={text}"] if name == "dltrain-predict" else []
        line = one_line_error(tool(name, f"ckpt_path={text}", *extra, cwd=tmp_path), name)
        assert line == (f"{text} is not a checkpoint: torch.save writes a zip archive (or a pickle), and this file "
                        "starts with b'not '")
    assert dltrain_command(*FAST, cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    (tmp_path / "evals").mkdir()  # output= an existing folder: the file goes inside it
    assert tool("dltrain-eval", f"ckpt_path={run_dir}", f"output={tmp_path / 'evals'}", cwd=tmp_path).returncode == 0
    assert read_results(run_dir)["test"]["test_acc"] == pytest.approx(
        json.loads((tmp_path / "evals" / "eval_best.json").read_text())["metrics"]["test_acc"])
    (run_dir / "config.yaml").unlink()
    assert one_line_error(dltrain_command(f"resume={run_dir}", cwd=tmp_path)) == (
        f"resume={run_dir}: the run has no config.yaml, so what it trained cannot be known; start a new run")


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_its_first_epoch(tmp_path):
    assert dltrain_command(*FAST, "hydra.run.dir=first", cwd=tmp_path).returncode == 0
    stopped = tmp_path / "stopped"  # what a kill before the first epoch's end leaves: the config, no checkpoint
    stopped.mkdir()
    shutil.copy(tmp_path / "first" / "config.yaml", stopped / "config.yaml")
    proc = dltrain_command(f"resume={stopped}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ended before its first checkpoint: training it from its first epoch" in proc.stderr + proc.stdout
    assert read_results(stopped)["status"] == "completed"
    timeless = lambda rows: [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]  # noqa: E731
    assert timeless(read_metrics(stopped)) == timeless(read_metrics(tmp_path / "first"))  # the same seeded run


def mounted(where: Path, *options: str) -> bool:
    """A small tmpfs at `where` (root only; False where this machine does not allow it)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@contextlib.contextmanager
def small_disk(where: Path, *options: str):
    if not mounted(where, *options):
        pytest.skip("needs root and mount to make a small or read-only tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_keeps_every_file_whole_and_a_resume_continues_after_freeing_space(tmp_path):
    whole = tmp_path / "whole"
    assert dltrain_command(*FAST, "trainer.max_epochs=3", f"hydra.run.dir={whole}", cwd=tmp_path).returncode == 0
    with small_disk(tmp_path / "disk", "size=3m") as disk:
        run_dir = disk / "run"
        assert dltrain_command(*FAST, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
        before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
        # Room for the small files a resume writes first, not for another checkpoint.
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - len(before) // 2))
        proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
        line = one_line_error(proc, after_log=True)
        assert line.startswith(f"cannot write {run_dir}/") and "No space left on device; free some space" in line
        assert line.endswith(f"(every file already there is whole; continue with: dltrain resume={run_dir})")
        assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before  # as it was
        assert not list(run_dir.glob("**/.*.tmp"))
        assert read_results(run_dir)["status"] in ("failed", "running")  # never "completed"
        (disk / "filler").unlink()
        proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert read_results(run_dir)["status"] == "completed"
        assert [r["val_loss"] for r in read_metrics(run_dir)] == [r["val_loss"] for r in read_metrics(whole)]


def test_a_read_only_folder_is_one_line(tmp_path):
    with small_disk(tmp_path / "ro", "size=1m", "ro") as disk:
        line = one_line_error(dltrain_command(*FAST, f"hydra.run.dir={disk / 'run'}", cwd=tmp_path))
        assert line.endswith("Read-only file system; choose a writable folder")


# ---- 2. what cannot be meant is refused, not trained ----------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["mode=max"], "mode=max with monitor=val_loss keeps the worst epoch: lower val_loss is better, so use mode=min"),
    (["monitor=val_acc", "mode=max", "callbacks.early_stopping.mode=min"],
     "callbacks.early_stopping.mode=min with callbacks.early_stopping.monitor=val_acc keeps the worst epoch"),
    (["+foo=1"], "foo is not a key of dltrain's config, so it would be ignored"),
    (["+optimiser=sgd"], "optimiser is not a key of dltrain's config, so it would be ignored: did you mean "
                         "optimizer=... (a config group: no + in front)?"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is not a finite number"),
    (["regularization.l1=nan"], "regularization.l1=nan is not a finite number"),
])
def test_a_setting_that_cannot_be_meant_is_refused(tmp_path, args, message):
    assert message in one_line_error(dltrain_command(*FAST, *args, cwd=tmp_path))
    assert not (tmp_path / "outputs" / "runs").exists() or not list((tmp_path / "outputs" / "runs").glob("*/*.csv"))


@pytest.mark.parametrize("header, rows, args, message", [
    ("a,b,y", classes(), ["data.features=[a,y]"], "data.features lists 'y', the target column: the model would "
                                                  "train on the answer"),
    ("y", [str(i % 2) for i in range(60)], [], "{path}: no input columns: the table holds only 'y'"),
    ("a,a,y", classes(), [], "{path}: the header names column 'a' twice; give each column its own name"),
    ("a,b,y", classes()[:9] + ["inf,0.5,1"] + classes()[10:], [],
     "{path} line 11: column 'a' holds inf; give a finite number"),
    ("a,b,y", [f"{i * 2},{i * 3},{'cat' if i % 2 else 'dog'}" for i in range(60)], ["data.task=regression"],
     "{path}: target value 'dog' in row 1 is not a number, but the task is regression"),
])
def test_a_table_that_cannot_be_meant_is_refused_naming_file_column_and_line(tmp_path, header, rows, args, message):
    path = table(tmp_path / "data.csv", header, rows)
    proc = dltrain_command(*FAST, "data=csv", f"data.path={path}", "data.target=y", *args, cwd=tmp_path)
    assert one_line_error(proc).startswith(message.format(path=path))


def test_a_test_file_with_other_columns_is_named(tmp_path):
    train = table(tmp_path / "train.csv", "a,b,y", classes())
    test = table(tmp_path / "test.csv", "a,c,y", classes(30))
    proc = dltrain_command(*FAST, "data=csv", f"data.path={train}", "data.target=y", f"data.test_path={test}",
                           cwd=tmp_path)
    assert one_line_error(proc) == f"{test}: its columns differ from {train}'s: it lacks 'b'; has 'c', which " \
                                   "train.csv has not"


def test_an_empty_column_is_warned_about_in_one_line(tmp_path):
    path = table(tmp_path / "data.csv", "a,empty,y", [f"{i % 7 / 7},,{i % 2}" for i in range(120)])
    proc = dltrain_command(*FAST, "data=csv", f"data.path={path}", "data.target=y", "data.missing=impute",
                           cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: column 'empty' has no values at all; it is a constant input" in proc.stderr + proc.stdout


# ---- 3. no file looks complete that is not ---------------------------------------------------------------------

def test_a_folder_that_holds_a_run_is_refused_unless_resumed_and_hydra_files_stay(tmp_path):
    assert dltrain_command(*FAST, "hydra.run.dir=run", cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "run"
    kept = {p: p.read_bytes() for p in [*run_dir.glob(".hydra/*"), run_dir / "metrics.csv", run_dir / "results.json"]}
    line = one_line_error(dltrain_command(*FAST, "hydra.run.dir=run", "seed=7", cwd=tmp_path))
    assert line == (f"{run_dir} already holds a run (completed); continue it with resume={run_dir}, or train in a "
                    "new folder (leave hydra.run.dir to dltrain, or name another)")
    assert {p: p.read_bytes() for p in kept} == kept  # the first run's files, .hydra included, as they were


@pytest.mark.slow
def test_a_second_live_process_in_the_same_run_folder_is_refused(tmp_path):
    first = start(tmp_path, *SLOW_EPOCHS, "trainer.max_epochs=20", "hydra.run.dir=run")
    try:
        wait_for(lambda: (tmp_path / "run" / "results.json").exists())
        hydra_files = {p: p.read_bytes() for p in (tmp_path / "run" / ".hydra").glob("*")}
        proc = dltrain_command(f"resume={tmp_path / 'run'}", cwd=tmp_path)
        assert one_line_error(proc) == (f"{tmp_path / 'run'} is in use: another dltrain process is training in it; "
                                        "wait for it to end, or train in another folder")
        assert read_results(tmp_path / "run")["status"] == "running"
        # the refused process writes nothing into the busy run's files: not its log, not its .hydra
        assert "is in use" not in (tmp_path / "run" / "dltrain.log").read_text()
        assert {p: p.read_bytes() for p in hydra_files} == hydra_files
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_finished_run_resumed_for_more_epochs_and_killed_does_not_say_completed(tmp_path):
    assert dltrain_command(*SLOW_EPOCHS, "trainer.max_epochs=1", "hydra.run.dir=run", cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "run"
    assert read_results(run_dir)["status"] == "completed"
    resumed = start(tmp_path, f"resume={run_dir}", "trainer.max_epochs=20")
    wait_for(lambda: len(read_metrics(run_dir)) >= 2)
    resumed.kill()
    resumed.wait()
    assert read_results(run_dir)["status"] == "running"  # the record of a run in progress, not the old one
    proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_results(run_dir)["status"] == "completed" and [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2]


# ---- 4. an interrupt stops the whole sweep or search ------------------------------------------------------------

def start_group(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`dltrain` in its own process group, as a terminal starts it (Ctrl-C goes to the whole group)."""
    script = Path(sys.executable).with_name("dltrain")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}

    def setup() -> None:
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([str(script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=setup)


def interrupt_group(process: subprocess.Popen, when) -> tuple[int, str]:
    wait_for(when)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.slow
def test_ctrl_c_stops_a_whole_sweep_and_the_same_command_finishes_it(tmp_path):
    command = ["-m", *SLOW_EPOCHS, "trainer.max_epochs=3", "seed=1,2", "hydra.sweep.dir=sweep"]
    process = start_group(tmp_path, *command)
    sweep_dir = tmp_path / "sweep"
    code, err = interrupt_group(process, lambda: (sweep_dir / "0" / "metrics.csv").exists() and len(
        read_metrics(sweep_dir / "0")) >= 1)
    assert code == 130, err[-2000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0"]  # no later job started
    assert read_results(sweep_dir / "0")["status"] == "interrupted"
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary.job) == [0] and list(summary.status) == ["interrupted"]
    last = err.strip().splitlines()[-1]
    assert last.startswith("dltrain: interrupted by SIGINT") and "the sweep stopped there and started no later " \
        "job" in last and "Continue it with the same command and hydra.sweep.dir=sweep" in last
    proc = dltrain_command(*command, cwd=tmp_path)  # the same command: the cut-off job continues, the rest run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "job 0 continues from" in proc.stderr + proc.stdout
    assert [read_results(sweep_dir / str(job))["status"] for job in range(2)] == ["completed"] * 2
    assert [r["epoch"] for r in read_metrics(sweep_dir / "0")] == list(range(3))
    assert sorted(pd.read_csv(sweep_dir / "summary.csv").job) == [0, 1]


@pytest.mark.slow
def test_ctrl_c_stops_a_search_and_the_same_command_finishes_it_with_exactly_n_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    command = ["-m", "hparams_search=mlp_digits", *SLOW_EPOCHS[:1], "data=linear", "data.n_samples=8000",
               "data.batch_size=32", "callbacks.early_stopping=null", "monitor=val_loss", "mode=min",
               "trainer.max_epochs=3", f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-3, 1e-1))'}"]
    process = start_group(tmp_path, *command)
    code, err = interrupt_group(process, lambda: any(
        (d / "metrics.csv").exists() and len(read_metrics(d)) >= 1 for d in tmp_path.glob("outputs/multirun/*/1")))
    assert code == 130, err[-2000:]
    assert "The search stopped: 1 of 2 trials finished, the cut-off one runs again when you continue with the " \
           "same command" in err
    study = optuna.load_study(study_name="mlp_digits", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    proc = dltrain_command(*command, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="mlp_digits", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    sweep_dir = max(tmp_path.glob("outputs/multirun/*"))
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert sorted(summary.job) == [0, 1] and set(summary.status) == {"completed"}
    assert all(any("optimizer.lr=" in o for o in row.split()) for row in summary.overrides)


def test_sigterm_during_start_up_is_said_and_exits_143(tmp_path):
    process = start(tmp_path, *FAST)
    time.sleep(1.5)  # importing: before any training
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run ended before the signal came")
    assert process.returncode == 143, f"{process.returncode}: {err[-2000:]}"
    # the line says so (torch, stopped half imported, may print its own cache stats at exit after it)
    assert any(line.startswith(("dltrain: stopped by SIGTERM", "dltrain: interrupted by SIGTERM"))
               for line in err.splitlines()), err[-2000:]


@pytest.mark.parametrize("overrides", [
    ["model=transformer", "model.heads=3"],  # the model's constructor refuses it
    pytest.param(["model=torchvision", "model.arch=inception_v3"],  # its forward pass cannot take 8x8 digits
                 marks=pytest.mark.slow),  # Inception v3 built twice: the longest of these refusals
])
def test_validate_refuses_what_training_refuses(tmp_path, overrides):
    """`dltrain validate` builds the model on the data's shapes, as a run does: the same one-line error, not
    'valid' for a config training refuses; and the run refuses an unfit input size before training, naming it."""
    validated = one_line_error(dltrain_command("validate", *overrides, cwd=tmp_path))
    trained = one_line_error(dltrain_command(*FAST[:2], *overrides, cwd=tmp_path))
    assert validated == trained
    assert ("model.heads=3" in trained if "model.heads=3" in overrides else
            "model.arch=inception_v3" in trained and "(1, 8, 8)" in trained and "takes images of 512x512" in trained
            ), trained
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.csv"))


@pytest.mark.slow
@pytest.mark.parametrize(("key", "value"), [
    ("last_checkpoint.dirpath", "{elsewhere}"),
    ("model_checkpoint.filename", "../../../elsewhere/best"),
])
def test_resume_writes_only_inside_the_run_folder(run, tmp_path, key, value):
    """A path in a crafted run folder's config.yaml does not choose where resume= writes: refused in one line
    naming the key, nothing written outside; the same key given on the command line is the user's choice."""
    import yaml

    run_dir, _ = run(FAST)
    elsewhere = tmp_path / "elsewhere"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    entry, name = key.split(".")
    config["callbacks"][entry][name] = value.format(elsewhere=elsewhere)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    before = (run_dir / "metrics.csv").read_bytes()
    proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert f"callbacks.{key}=" in one_line_error(proc) and "outside the run folder" in proc.stderr
    assert not elsewhere.exists() and (run_dir / "metrics.csv").read_bytes() == before
    inside = run_dir / "checkpoints"
    proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=2", f"++callbacks.{key}="
                           + (str(inside) if name == "dirpath" else "best"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_metrics(run_dir)) == 2 and not elsewhere.exists()


def test_a_full_disk_while_drawing_a_plot_names_that_plot(tmp_path, monkeypatch):
    """ENOSPC in a plot's save is reported naming the PNG being written (not results.json), as a DiskError."""
    import errno

    from matplotlib.figure import Figure

    from conftest import train_run
    from dltrain.errors import DiskError

    import dltrain.rundir.files

    disk_full = []
    real_fsync = os.fsync

    def full(self, *args, **kwargs):  # the disk fills while the first plot is saved ...
        disk_full.append(True)
        raise OSError(errno.ENOSPC, "No space left on device")

    def fsync(fd):  # ... and stays full for every file after it (the failed run's results.json record)
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(Figure, "savefig", full)
    monkeypatch.setattr(dltrain.rundir.files.os, "fsync", fsync)
    with pytest.raises(DiskError) as raised:
        train_run(tmp_path / "run", FAST)
    message = str(raised.value)
    assert "calibration.png" in message and "No space left on device" in message, message  # the first drawn
    assert "results.json" not in message.split(";")[0], message
