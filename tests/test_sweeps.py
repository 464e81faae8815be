"""Sweeps through the real `dltrain -m` command: per-job directories, the summary, failures, Optuna, presets."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from conftest import dltrain_command, read_results
from datafiles import write_mnist

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["trainer=cpu", "trainer.max_epochs=2", "model=mlp", "model.hidden_sizes=[16]"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def only_sweep_dir(cwd: Path) -> Path:
    (sweep_dir,) = (cwd / "outputs" / "multirun").iterdir()
    return sweep_dir


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_sweep_runs_every_job_and_summarises_them_best_first(tmp_path):
    proc = dltrain_command("-m", "optimizer=adam,sgd", "model.dropout=0.0,0.3", *SHORT, cwd=tmp_path,
                           env={"COLUMNS": "80"})  # as wide as a CI log
    assert proc.returncode == 0, proc.stderr
    sweep_dir = only_sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    rows = summary_rows(sweep_dir)
    assert len(rows) == 4
    for row in rows:  # each row is its job's own results.json and overrides
        job_dir = sweep_dir / row["job"]
        results = read_results(job_dir)
        assert row["status"] == results["status"] == "completed"
        assert float(row["best_val_loss"]) == pytest.approx(results["best_val"])
        assert float(row["test/acc"]) == pytest.approx(results["test"]["test_acc"])
        assert float(row["val/loss"]) == pytest.approx(results["val"]["val_loss"])
        assert int(row["epochs"]) == results["epochs_run"] == 2
        assert row["overrides"].split() == yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    values = [float(row["best_val_loss"]) for row in rows]
    assert values == sorted(values)
    assert {row["overrides"].split()[0] for row in rows} == {"optimizer=adam", "optimizer=sgd"}
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.count("| completed |") == 4
    assert (sweep_dir / "summary.png").read_bytes().startswith(PNG_MAGIC)
    assert f"best job: #{rows[0]['job']}" in proc.stderr
    # the terminal's table: a column for each swept key (what every job shares left out), values whole
    table = proc.stdout[proc.stdout.index("sweep summary"):].splitlines()
    assert table[1].split() == ["job", "optimizer", "dropout", "best", "val_loss", "test/acc", "test/f1", "epochs"]
    for line, row in zip(table[3:], rows):
        optimizer, dropout = (o.split("=")[1] for o in row["overrides"].split()[:2])
        assert line.split() == [row["job"], optimizer, f"{float(dropout):.4g}", f"{float(row['best_val_loss']):.4f}",
                                f"{float(row['test/acc']):.4f}", f"{float(row['test/f1']):.4f}", "2"]


def test_a_failing_job_is_reported_and_the_others_still_run(tmp_path):
    # lr=-1 is refused by the config check, lr=1e30 makes the loss infinite: both fail, lr=0.05 trains.
    proc = dltrain_command("-m", "optimizer=sgd", "optimizer.lr=-1,1e30,0.05", *SHORT, cwd=tmp_path)
    assert proc.returncode == 1
    assert "2 of 3 sweep jobs did not complete" in proc.stderr
    assert "Traceback" not in proc.stderr
    sweep_dir = only_sweep_dir(tmp_path)
    rows = {row["job"]: row for row in summary_rows(sweep_dir)}
    assert rows["2"]["status"] == "completed" and read_results(sweep_dir / "2")["status"] == "completed"
    assert rows["0"]["status"] == "failed" and "optimizer.lr=-1" in rows["0"]["error"]
    assert rows["1"]["status"] == "diverged" and "epoch" in rows["1"]["error"]
    assert list(summary_rows(sweep_dir))[0]["job"] == "2"  # the completed job first


def search(tmp_path: Path, storage: str, n_trials: int) -> tuple:
    proc = dltrain_command("-m", "hparams_search=mlp_digits", "trainer.max_epochs=3", "model.hidden_sizes=[16]",
                           f"hydra.sweeper.storage={storage}", f"hydra.sweeper.n_trials={n_trials}",
                           "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-3, 1e-1))'}",
                           cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = max((tmp_path / "outputs" / "multirun").iterdir())
    return proc, sweep_dir, yaml.safe_load((sweep_dir / "search_results.yaml").read_text())


@pytest.mark.slow
def test_an_optuna_search_finds_the_best_trial_and_a_second_invocation_continues_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    proc, sweep_dir, found = search(tmp_path, storage, n_trials=2)
    study = optuna.load_study(study_name="mlp_digits", storage=storage)
    values = {t.number: t.value for t in study.trials}
    assert sorted(values) == [0, 1] and study.direction.name == "MAXIMIZE"  # the preset monitors val_acc
    for number, value in values.items():  # the value told to Optuna is each job's monitored metric
        assert read_results(sweep_dir / str(number))["best_val"] == pytest.approx(value)
    assert found["best_value"] == pytest.approx(max(values.values()))
    assert found["best_params"]["optimizer.lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert found["command"].startswith("dltrain hparams_search=mlp_digits ") and "optimizer.lr=" in found["command"]
    assert found["command"] in proc.stderr

    # The same command with a larger n_trials continues the study: only the missing trial runs.
    _, sweep_dir, found = search(tmp_path, storage, n_trials=3)
    study = optuna.load_study(study_name="mlp_digits", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # exactly n_trials, none failed
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["2"]
    assert found["trials"]["complete"] == 3
    assert found["best_value"] == pytest.approx(max(t.value for t in study.trials))
    summary = pd.read_csv(sweep_dir / "summary.csv")  # the whole study, earlier trials in their own folders
    assert sorted(summary.job) == [0, 1, 2] and set(summary.status) == {"completed"}


def test_the_search_space_takes_choices_ranges_and_log_intervals():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dltrain.errors import ConfigError
    from dltrain.sweeps.search import search_space

    parse = OverridesParser.create().parse_overrides
    fixed, space = search_space(parse(["data=wine", "optimizer=adam,sgd", "data.batch_size=range(16,65,16)",
                                       "optimizer.lr=tag(log, interval(1e-4, 1e-1))", "model.dropout=interval(0,0.5)"]))
    assert fixed == ["data=wine"]
    assert space["optimizer"].choices == ("adam", "sgd")
    assert (space["data.batch_size"].low, space["data.batch_size"].high, space["data.batch_size"].step) == (16, 64, 16)
    assert space["optimizer.lr"].log and space["optimizer.lr"].low == pytest.approx(1e-4)
    assert not space["model.dropout"].log and space["model.dropout"].high == 0.5
    with pytest.raises(ConfigError, match="nothing to search"):
        search_space(parse(["data=wine"]))
    with pytest.raises(ConfigError, match="Glob sweep"):
        search_space(parse(["model=glob(*)"]))


def searched_rows() -> list[dict]:
    """Summary rows of a search over five keys, one value holding a space, as job_rows makes them (the
    overrides as the list Hydra wrote)."""
    swept = [("adamw", 0.006251373574521752, "[256, 128]", 0.4828, 0.0017123), ("sgd", 0.0002621087, "[64]", 0.3926, 6.2906e-06)]
    return [{"job": job, "overrides": [f"optimizer={opt}", f"optimizer.lr={lr}", f"model.hidden_sizes={sizes}",
                                       f"model.dropout={dropout}", f"optimizer.weight_decay={decay}",
                                       "trainer.max_epochs=2"],
             "status": "completed", "best_val_acc": 0.9 - job / 10, "test/acc": 0.89 - job / 10, "test/f1": 0.5,
             "epochs": 2, "run_dir": f"outputs/multirun/x/{job}"}
            for job, (opt, lr, sizes, dropout, decay) in enumerate(swept)]


def test_the_swept_values_are_told_apart_by_short_keys_and_values_whole():
    from dltrain.report.job_names import swept_values, varying_overrides

    varying = varying_overrides(searched_rows())
    assert varying[0][:3] == ["optimizer=adamw", "optimizer.lr=0.006251373574521752", "model.hidden_sizes=[256, 128]"]
    assert all("trainer.max_epochs=2" not in job for job in varying)  # shared by every job
    assert swept_values(varying) == [
        {"optimizer": "adamw", "lr": "0.006251", "hidden_sizes": "[256, 128]", "dropout": "0.4828", "weight_decay": "0.001712"},
        {"optimizer": "sgd", "lr": "0.0002621", "hidden_sizes": "[64]", "dropout": "0.3926", "weight_decay": "6.291e-06"}]
    # two swept keys ending the same keep their full names
    assert swept_values([["model.dropout=0", "data.dropout=1"]]) == [{"model.dropout": "0", "data.dropout": "1"}]


def test_a_sweep_table_too_wide_for_the_terminal_folds_its_headers_never_its_values(monkeypatch, capsys, tmp_path):
    from dltrain.report import terminal as console

    monkeypatch.setattr(console._console, "width", 80)
    console.show_sweep(searched_rows(), "val_acc", tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80
    assert not any("test/f1" in line for line in lines)  # the second test metric makes room
    assert lines[-2].split() == ["0", "adamw", "0.006251", "[256,", "128]", "0.4828", "0.001712", "0.9000", "0.8900", "2"]
    assert lines[-1].split() == ["1", "sgd", "0.0002621", "[64]", "0.3926", "6.291e-06", "0.8000", "0.7900", "2"]


@pytest.mark.slow
def test_a_sweep_over_a_classification_and_a_regression_ranks_each_job_among_its_own_task(tmp_path):
    proc = dltrain_command("-m", "data=diabetes,iris,wine", *SHORT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep_dir = only_sweep_dir(tmp_path)
    rows = summary_rows(sweep_dir)
    assert [row["task"] for row in rows] == ["regression", "multiclass", "multiclass"]  # the first job's task first
    classes = [row for row in rows if row["task"] == "multiclass"]
    assert float(classes[0]["best_val_loss"]) <= float(classes[1]["best_val_loss"])
    assert "Best first by val_loss (min) within each task." in (sweep_dir / "summary.md").read_text()
    said = proc.stdout + proc.stderr
    assert "best regression job: #0 data=diabetes" in said
    assert f"best multiclass job: #{classes[0]['job']} " in said


@pytest.mark.slow
def test_jobs_run_in_parallel_with_the_joblib_launcher_each_in_its_own_directory(tmp_path):
    proc = dltrain_command("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", *SHORT, cwd=tmp_path,
                           env={"OMP_NUM_THREADS": None})  # as a user starts it: dltrain shares the cores
    assert proc.returncode == 0, proc.stderr
    sweep_dir = only_sweep_dir(tmp_path)
    rows = summary_rows(sweep_dir)
    assert sorted(row["job"] for row in rows) == ["0", "1"]
    for job in ("0", "1"):
        results = read_results(sweep_dir / job)
        assert results["status"] == "completed" and results["seed"] == int(job) + 1
        assert (sweep_dir / job / "checkpoints" / "best.ckpt").is_file()
        # the jobs share the terminal: each of a job's lines names it; its log file keeps its own format
        lines = [line for line in proc.stderr.splitlines() if line.startswith(f"[job {job}] ")]
        assert [line.split()[2:4] for line in lines if "val_loss=" in line] == [["epoch", f"{e}/2"] for e in (1, 2)]
        assert not any(line.startswith("[job") for line in (sweep_dir / job / "dltrain.log").read_text().splitlines())
        # two jobs at once share the cores instead of each taking all of them
        threads = max(1, len(os.sched_getaffinity(0)) // 2)
        assert f"[job {job}] device: cpu (1 device(s), {threads} thread(s))" in lines
    assert not any(line.startswith("epoch ") for line in proc.stderr.splitlines())


@pytest.mark.slow
def test_every_experiment_preset_runs_one_short_epoch(tmp_path):
    write_mnist(tmp_path / "data")
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert {"linear_regression", "logistic_regression", "softmax_regression", "mlp_digits", "cnn_digits",
            "cnn_mnist", "lstm_sine"} <= set(presets)
    proc = dltrain_command("-m", "experiment=glob(*)", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                           "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                           cwd=tmp_path, env={"DLTRAIN_DATA": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(only_sweep_dir(tmp_path))
    assert sorted(row["overrides"].split()[0].removeprefix("experiment=") for row in rows) == presets
    assert all(row["status"] == "completed" and math.isfinite(float(row["test/loss"])) for row in rows)
    models = {json.loads((tmp_path / row["run_dir"] / "results.json").read_text())["model"] for row in rows}
    assert models == {"linear", "logistic", "softmax", "mlp", "cnn", "lstm"}
