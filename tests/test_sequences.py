"""Sequences in array files (data=arrays, N x T x F): a file's own validation and test split kept, values that
are not finite float32 numbers refused naming the file and index, and the standardization said."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import dltrain_command, only_run_dir, read_results

SMALL = ["model=conv1d", "model.channels=[4]", "model.kernel_sizes=[3]", "trainer=cpu", "trainer.max_epochs=1"]


def series(path, rows: int, steps: int = 12, seed: int = 0, features: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (rows, steps, 1)).astype(np.float32) if features is None else features
    np.savez(path, x=x, y=np.arange(len(x)) % 2)
    return path


def test_val_and_test_files_are_kept_as_the_split_and_said(tmp_path):
    paths = [series(tmp_path / f"{name}.npz", rows, seed=seed) for name, rows, seed in
             (("train", 40, 0), ("val", 10, 1), ("test", 14, 2))]
    proc = dltrain_command("data=arrays", f"data.path={paths[0]}", f"data.val_path={paths[1]}",
                           f"data.test_path={paths[2]}", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert "train 40 / val 10 / test 14" in said
    assert re.search(r"standardized with the training split's mean and std", said)
    assert read_results(only_run_dir(tmp_path))["status"] == "completed"


def test_a_split_file_of_another_shape_is_refused_naming_it(tmp_path):
    train = series(tmp_path / "train.npz", 20)
    test = series(tmp_path / "test.npz", 10, steps=9)
    proc = dltrain_command("data=arrays", f"data.path={train}", f"data.test_path={test}", *SMALL, cwd=tmp_path)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert f"data.test_path={test}" in proc.stderr and "(9, 1)" in proc.stderr and "(12, 1)" in proc.stderr


@pytest.mark.parametrize("value, why", [(np.nan, "is NaN"), (np.inf, "is infinite"),
                                        (1e39, "beyond float32's range")])
def test_a_value_that_is_not_a_finite_float32_is_refused_naming_the_file_and_index(tmp_path, value, why):
    x = np.random.default_rng(0).normal(size=(20, 12, 1))  # float64, so 1e39 stays what the file holds
    x[7, 3, 0] = value
    path = series(tmp_path / "bad.npz", 20, features=x)
    proc = dltrain_command("data=arrays", f"data.path={path}", *SMALL, cwd=tmp_path)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert str(path) in line and "(7, 3, 0)" in line and why in line, line
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("results.json"))


def test_an_all_nan_feature_array_does_not_train_to_completed(tmp_path):
    path = series(tmp_path / "nan.npz", 20, features=np.full((20, 12, 1), np.nan, dtype=np.float32))
    proc = dltrain_command("data=arrays", f"data.path={path}", *SMALL, cwd=tmp_path)
    assert proc.returncode == 1 and "(0, 0, 0)" in proc.stderr and "is NaN" in proc.stderr, proc.stderr


def test_a_new_array_file_is_standardized_with_the_runs_training_statistics(run, tmp_path):
    """A/B: the run's own test rows, predicted again as a new .npy, give the run's test accuracy, which they
    could not if the new rows were not scaled as training scaled them (the values sit near 100, not 0)."""
    import pandas as pd

    from dltrain.checkpoints.reading import read_checkpoint

    from dltrain.training.restore import load_module
    from dltrain.commands.predict import predict

    rng = np.random.default_rng(3)
    x = rng.normal(100.0, 5.0, (96, 12, 1)).astype(np.float32)
    x[::2, 4:8, 0] += 20.0  # class 0: a step up in the middle
    train, test = series(tmp_path / "train.npz", 80, features=x[:80]), series(tmp_path / "test.npz", 16, features=x[80:])
    run_dir, results = run(["data=arrays", f"data.path={train}", f"data.test_path={test}", "model=conv1d", "model.channels=[8]",
                            "model.kernel_sizes=[3]", "trainer.max_epochs=15"])
    spec = load_module(read_checkpoint(run_dir / "checkpoints" / "best.ckpt")).spec
    # the training split: the 80 rows less those drawn for validation
    assert spec.encoder["mean"][0] == pytest.approx(x[:80].mean(), abs=1.0) and spec.encoder["std"][0] == pytest.approx(x[:80].std(), rel=0.2)
    np.save(tmp_path / "new.npy", x[80:])
    predictions = pd.read_csv(predict(str(run_dir), input=str(tmp_path / "new.npy"), output=str(tmp_path / "p.csv")))
    accuracy = float((predictions["prediction"].astype(int).to_numpy() == np.arange(16) % 2).mean())
    assert accuracy == pytest.approx(results["test"]["test_acc"], abs=1e-6) and accuracy > 0.5, accuracy


def shapes(path, rows: int, steps: int = 40, seed: int = 0):
    """A small set as UCR's are (GunPoint: 50 training rows of 150 steps): noise with one wave at a random
    time, up then down (class 1) or down then up (class 0); the same mean and spread, only the shape differs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    t = np.arange(steps)
    centers = rng.integers(8, steps - 8, rows)[:, None]
    wave = np.exp(-0.5 * ((t - centers + 4) / 3) ** 2) - np.exp(-0.5 * ((t - centers - 4) / 3) ** 2)
    x = rng.normal(0, 0.4, (rows, steps)) + np.where(y[:, None] == 1, wave, -wave)
    np.savez(path, x=x[:, :, None].astype(np.float32), y=y)
    return path


def test_auto_trains_conv1d_with_its_tuning_said_and_recorded_and_keys_given_win(run, tmp_path):
    """model=auto on 40 training rows takes conf/tuning/conv1d_adam.yaml as model=conv1d would (16 rows a batch,
    20 epochs' patience), names it in its start line and results.json, and keeps every key the command sets,
    one set to its default value included (in-process too). The A/B on real sets is the README's: UCR's
    GunPoint 0.987 with the tuning and mean pooling, 0.67 before them."""
    data = ["data=arrays", f"data.path={shapes(tmp_path / 'train.npz', 40)}",
            f"data.test_path={shapes(tmp_path / 'test.npz', 100, seed=1)}"]
    proc = dltrain_command(*data, "trainer=cpu", "trainer.max_epochs=15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tuned = read_results(only_run_dir(tmp_path))
    said = proc.stdout + proc.stderr
    assert ("model: conv1d (model=auto's choice for this data, with conf/tuning/conv1d_adam.yaml's "
            "data.batch_size=16 callbacks.early_stopping.patience=20; model=<name> picks another)") in said, said
    assert tuned["model_auto"] == {"model": "conv1d", "tuning": "conv1d_adam", "tuned": {
        "data.batch_size": 16, "callbacks.early_stopping.patience": 20}}
    assert tuned["max_epochs"] == 15 and tuned["test"]["test_acc"] >= 0.9, tuned
    _, given = run([*data, "data.batch_size=64", "trainer.max_epochs=1", "callbacks.early_stopping.patience=5"])
    assert given["model_auto"] == {"model": "conv1d"} and given["max_epochs"] == 1, given
