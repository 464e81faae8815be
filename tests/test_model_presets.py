"""The newer model presets through the real commands: each trains (its loss falls), its checkpoint evaluates
to the run's own test metrics and predicts new inputs; the Transformer against the LSTM on the sine set; model=auto's
conv1d against the LSTM on series whose class is a shape at a random time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import dltrain_command, only_run_dir, read_metrics, read_results

ROWS = {"digits": (5, 1, 8, 8), "sine": (5, 20, 1), "wine": (5, 13)}  # new inputs, as .npy, of each set's shape


@pytest.mark.slow
@pytest.mark.parametrize("model, data", [("resnet", "digits"), ("transformer", "sine"), ("transformer", "wine"),
                                         ("torchvision", "digits")])
def test_a_preset_trains_through_the_command_and_its_checkpoint_evaluates_and_predicts(tmp_path, model, data):
    # the presets' layouts, smaller: CI time
    narrow = {"resnet": ["model.channels=[8,16]"],
              "torchvision": ["model.arch=shufflenet_v2_x0_5", "trainer.limit_train_batches=8"]}.get(model, [])
    proc = dltrain_command(f"model={model}", f"data={data}", *narrow, "trainer=cpu", "trainer.max_epochs=3",
                           cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    assert losses[-1] < losses[0], losses
    results = read_results(run_dir)
    assert {"resnet": "ResNet", "transformer": "Transformer", "torchvision": "ShuffleNetV2"}[model] in (
        run_dir / "model_summary.txt").read_text()

    proc = dltrain_command(f"ckpt_path={run_dir}", cwd=tmp_path, script="dltrain-eval")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "eval_best.json").read_text())["metrics"] == pytest.approx(results["test"], rel=1e-5)

    np.save(tmp_path / "new.npy", np.random.default_rng(0).standard_normal(ROWS[data]).astype(np.float32))
    out = tmp_path / "predictions.csv"
    proc = dltrain_command(f"ckpt_path={run_dir}", f"input={tmp_path / 'new.npy'}", f"output={out}", cwd=tmp_path,
                           script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    predictions = pd.read_csv(out)
    assert len(predictions) == ROWS[data][0] and predictions.notna().all().all()


@pytest.mark.slow
def test_the_transformer_beats_the_lstm_on_the_sine_set(run):
    scores = {model: run(["data=sine", f"model={model}", "trainer.max_epochs=5", "scheduler=cosine"])[1]["test"]
              for model in ("lstm", "transformer")}
    assert scores["transformer"]["test_mse"] <= scores["lstm"]["test_mse"], scores


@pytest.mark.slow
def test_a_torchvision_run_from_a_weights_file_resumes_from_its_checkpoint_without_the_file(tmp_path):
    """The weights file starts the run; its checkpoint's weights continue it, so a resume reads no file."""
    import torch
    import torchvision

    torch.save(torchvision.models.get_model("shufflenet_v2_x0_5").state_dict(), tmp_path / "start.pth")
    common = ["model=torchvision", "model.arch=shufflenet_v2_x0_5", "trainer=cpu", "hydra.run.dir=outputs/runs/tv"]
    proc = dltrain_command(*common, f"model.weights={tmp_path / 'start.pth'}", "trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / "start.pth").unlink()
    proc = dltrain_command("resume=outputs/runs/tv", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "outputs" / "runs" / "tv"
    assert [row["epoch"] for row in read_metrics(run_dir)] == [0, 1] and read_results(run_dir)["status"] == "completed"


def shape_series(path, rows: int = 160, steps: int = 40, seed: int = 0):
    """(rows, steps, 1) series of noise with one wave at a random time: up then down (class 1) or down then up
    (class 0). Both classes have the same mean and spread; only the shape tells them apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    t = np.arange(steps)
    centers = rng.integers(6, steps - 6, rows)[:, None]
    wave = np.exp(-0.5 * ((t - centers + 3) / 2) ** 2) - np.exp(-0.5 * ((t - centers - 3) / 2) ** 2)
    x = rng.normal(0, 0.3, (rows, steps)) + np.where(y[:, None] == 1, wave, -wave)
    np.savez(path, x=x[:, :, None].astype(np.float32), y=y)
    return path


def test_auto_chooses_conv1d_for_sequences_and_it_finds_a_shape_the_lstm_misses(run, tmp_path):
    data = ["data=arrays", f"data.path={shape_series(tmp_path / 'shapes.npz')}", "trainer.max_epochs=4"]
    _, auto = run(data)
    _, lstm = run(data + ["model=lstm"])
    assert auto["model"] == "conv1d"
    assert auto["test"]["test_acc"] >= 0.85 and auto["test"]["test_acc"] > lstm["test"]["test_acc"] + 0.2, (auto, lstm)
