"""Evaluate, predict and resume; interruption, SIGKILL, NaN, and checkpoints that cannot run code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FAST, dltrain_command, only_run_dir, read_metrics, read_results
from dltrain.config.compose import load_config
from dltrain.training.train import train
from datafiles import write_image_folder, write_table

# Epochs of some 90 batches: long enough to interrupt a run in the middle (each test waits for an epoch's end
# and stops the run with epochs still to go), short enough to keep these tests, the suite's longest, short.
SLOW_EPOCHS = ["trainer=cpu", "data=linear", "data.n_samples=4000", "model=mlp", "data.batch_size=32",
               "callbacks.early_stopping=null"]


def tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return dltrain_command(*args, cwd=cwd, script=name)


@pytest.mark.parametrize("name, flag, keys", [
    ("dltrain-eval", "--help", [f"{key:21}{what}" for key, what in [
        ("ckpt_path", "required"), ("input", "optional"), ("output", "optional"), ("split", "default: test"),
        ("trust", "optional"), ("on_unknown_category", "default: error")]]),
    ("dltrain-predict", "-h", [f"{key:21}{what}" for key, what in [
        ("ckpt_path", "required"), ("input", "required"), ("output", "optional"), ("batch_size", "default: auto"),
        ("trust", "optional"), ("on_unknown_category", "default: error"), ("keep", "optional")]]),
])
def test_eval_and_predict_answer_help_with_their_usage_and_keys(tmp_path, name, flag, keys):
    proc = tool(name, flag, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"usage: {name} ckpt_path=<checkpoint or run dir>")
    assert lines[-len(keys) - 1:] == ["keys:", *(f"  {key}" for key in keys)]
    assert list(tmp_path.iterdir()) == []  # nothing run, nothing written


def test_eval_recomputes_the_test_metrics_of_a_checkpoint_or_run_dir(run, tmp_path):
    run_dir, results = run(["model=mlp", "trainer.max_epochs=3"])
    proc = tool("dltrain-eval", f"ckpt_path={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((run_dir / "eval_best.json").read_text())
    assert saved["metrics"] == pytest.approx(results["test"], rel=1e-5)
    out = tmp_path / "val.json"
    proc = tool("dltrain-eval", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "split=val", f"output={out}",
                cwd=tmp_path)
    assert proc.returncode == 0 and set(json.loads(out.read_text())["metrics"]) == {"val_loss", "val_acc", "val_f1"}


def test_predict_applies_the_training_encoding_to_new_rows(run, tmp_path):
    table = tmp_path / "table.csv"
    write_table(table)  # its line 7 (row 5) has no noise value, which training (data.missing=drop) left out
    run_dir, _ = run(["data=csv", f"data.path={table}", "data.target=label", "model=mlp", "trainer.max_epochs=5"])
    # The row training would have dropped is named and left without a prediction; every other row is predicted,
    # as it is in a file without that row (A/B).
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={table}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "dltrain-predict: warning: 1 row(s) not predicted (column 'noise' is empty, and the model was trained with "
        "data.missing=drop (rows with a missing value left out): fill it in): row 6 (line 7); their rows in the "
        "file have no prediction and say why in not_predicted"]
    assert proc.stdout.strip().endswith(f"299 predictions written to {run_dir / 'predictions_table.csv'}")
    every = pd.read_csv(run_dir / "predictions_table.csv")
    assert len(every) == 300 and list(every.row) == list(range(1, 301))
    assert every.loc[5, ["prediction", "prob_big", "prob_small"]].isna().all()
    assert every.not_predicted[5].startswith("column 'noise' is empty") and every.not_predicted.notna().sum() == 1
    complete = tmp_path / "complete.csv"
    pd.read_csv(table).dropna().to_csv(complete, index=False)
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={complete}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    full = pd.read_csv(run_dir / "predictions_complete.csv")
    assert len(full) == 299 and list(full.columns) == ["row", "prediction", "prob_big", "prob_small"]
    assert list(every.prediction.drop(index=5)) == list(full.prediction)
    assert np.allclose(every.prob_big.drop(index=5), full.prob_big, atol=1e-6)
    # dltrain-eval on the labelled file scores the rows it can, as on the file without the empty cell's row.
    assert tool("dltrain-eval", f"ckpt_path={run_dir}", f"input={table}", cwd=tmp_path).returncode == 0
    proc = tool("dltrain-eval", f"ckpt_path={run_dir}", f"input={complete}", cwd=tmp_path)
    assert proc.returncode == 0 and "left out" not in proc.stderr, proc.stderr
    scored, whole = (json.loads((run_dir / f"eval_best_{name}.json").read_text()) for name in ("table", "complete"))
    assert scored["rows"] == whole["rows"] == 299 and scored["metrics"] == pytest.approx(whole["metrics"], rel=1e-6)
    assert scored["rows_left_out"]["count"] == 1 and scored["rows_left_out"]["rows"] == [6]
    assert "rows_left_out" not in whole
    assert scored["epoch"] == read_results(run_dir)["best_epoch"]  # counted from 1, as results.json counts
    assert np.allclose(full.prob_big + full.prob_small, 1)
    assert (full.prediction == np.where(full.prob_big > 0.5, "big", "small")).all()
    # Three rows alone, with a category unseen in training: refused unless on_unknown_category=zeros, which
    # encodes it as no known colour; the others get exactly the probabilities they got among all rows.
    few = pd.read_csv(complete).iloc[[0, 1, 2]].drop(columns="label")
    few.loc[2, "colour"] = "purple"
    few.to_csv(tmp_path / "few.csv", index=False)
    out = tmp_path / "few_predictions.csv"
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'few.csv'}", f"output={out}",
                cwd=tmp_path)
    assert proc.returncode == 0 and "1 row(s) not predicted (column 'colour' value 'purple' is a category " \
        "training never saw" in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert pd.read_csv(out).prediction.isna().tolist() == [False, False, True]
    assert tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'few.csv'}", f"output={out}",
                "on_unknown_category=zeros", cwd=tmp_path).returncode == 0
    three = pd.read_csv(out)
    assert np.allclose(three.prob_big[:2], full.prob_big[:2], atol=1e-6)
    assert not np.isclose(three.prob_big[2], full.prob_big[2])  # purple is encoded as no known colour


def test_predict_refuses_rows_training_would_refuse_and_imputes_as_an_imputing_run_did(run, tmp_path):
    table = tmp_path / "table.csv"
    write_table(table)
    run_dir, _ = run(["data=csv", f"data.path={table}", "data.target=label", "model=mlp", "trainer.max_epochs=2",
                      "data.missing=impute"])
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={table}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the empty cell is imputed, as training imputed it
    assert len(pd.read_csv(run_dir / "predictions_table.csv")) == 300
    predicted = pd.read_csv(run_dir / "predictions_table.csv")
    # A value no float32 holds (1e308 overflows once standardized), a word, an infinite number: that row is
    # named and has no prediction (never a class with empty or NaN probabilities); the others are as before.
    for value, why in (("abc", "value 'abc' is not a number, and the column is numeric"),
                       ("inf", "value inf is infinite"),
                       ("1e308", "value 1e+308 is beyond float32's range (about 3.4e38) once standardized"),
                       ("-2e39", "value -2e+39 is beyond float32's range (about 3.4e38) once standardized")):
        bad = pd.read_csv(table).drop(columns="label").astype({"size": object})
        bad.loc[3, "size"] = value
        bad.to_csv(tmp_path / "bad.csv", index=False)
        proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'bad.csv'}",
                    f"output={tmp_path / 'bad_predictions.csv'}", "batch_size=64", cwd=tmp_path)
        assert proc.returncode == 0 and f"1 row(s) not predicted (column 'size' {why}" in proc.stderr, proc.stderr
        assert "): row 4 (line 5);" in proc.stderr
        got = pd.read_csv(tmp_path / "bad_predictions.csv")
        assert got.loc[3, ["prediction", "prob_big", "prob_small"]].isna().all() and why in got.not_predicted[3]
        others = got.drop(index=3)
        assert others.not_predicted.isna().all() and np.isfinite(others.prob_big).all()
        assert np.allclose(others.prob_big, predicted.prob_big.drop(index=3), atol=1e-6)
    # An output that is not finite is never a prediction: the row is left out, saying so (NaN fed in directly).
    from dltrain.training.restore import open_checkpoint
    from dltrain.report.predictions import prediction_table, predict_rows

    module = open_checkpoint(str(run_dir), None)[3]
    features = torch.zeros(3, module.spec.input_shape[0])
    features[1, 0] = float("nan")
    rows, left_out = predict_rows(module, features, {2: "given"})
    assert left_out == {1: "the model's output for it is not finite (NaN or infinite)", 2: "given"}
    assert rows.prediction.isna().tolist() == [False, True, True] and rows.prob_big.isna().tolist()[1:] == [True] * 2
    assert rows.prob_big[0] == prediction_table(module, features[:1]).prob_big[0]
    # A file none of whose rows can be predicted is refused, naming them.
    bad.iloc[:2].assign(size="abc").to_csv(tmp_path / "none.csv", index=False)
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'none.csv'}", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"dltrain-predict: error: input={tmp_path / 'none.csv'}: no row can be predicted; 2 row(s) not predicted "
        "(column 'size' value 'abc' is not a number, and the column is numeric): row 1 (line 2), row 2 (line 3)")
    (tmp_path / "out").mkdir()  # an existing folder as output: the file goes inside it
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={table}", f"output={tmp_path / 'out'}",
                cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "out" / "predictions_table.csv").is_file()
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={table}", "batch_size=abc", cwd=tmp_path)
    assert (proc.returncode, proc.stderr.strip()) == (
        1, "dltrain-predict: error: batch_size=abc is not valid: expected auto or an integer > 0")


def test_predict_reads_image_folders_and_arrays(run, tmp_path, capsys):
    write_image_folder(tmp_path / "images")
    run_dir, _ = run(["data=image_folder", f"data.path={tmp_path / 'images'}", "data.image_size=[8,8]", "model=cnn",
                      "data.val_fraction=0.25", "data.test_fraction=0.25"])
    assert "[1, 3, 8, 8]" in (run_dir / "model_summary.txt").read_text()  # RGB images: data.channels=auto is 3
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'images' / 'dark'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    predictions = pd.read_csv(run_dir / "predictions_dark.csv")
    assert len(predictions) == 12 and predictions.file.str.endswith(".png").all()
    # A folder larger than the batch, read by the run's workers a batch at a time: the whole folder's predictions
    # row for row; an unreadable image is a row without one, named.
    from dltrain.commands.predict import predict
    from dltrain.data.inputs import image_features
    from dltrain.report.predictions import prediction_table
    from dltrain.training.restore import open_checkpoint

    files = sorted(str(path) for path in (tmp_path / "images").rglob("*.png"))
    module = open_checkpoint(run_dir)[3]
    whole = prediction_table(module, torch.from_numpy(image_features(files, module.spec)))
    (tmp_path / "out").mkdir()
    batched = pd.read_csv(predict(str(run_dir), str(tmp_path / "images"), str(tmp_path / "out"), batch_size="5"))
    assert batched.file.tolist() == files and os.listdir(tmp_path / "out") == ["predictions_images.csv"]
    pd.testing.assert_frame_equal(batched.drop(columns="file"), whole, check_dtype=False, rtol=1e-6)
    broken = tmp_path / "images" / "dark" / "10.png"
    broken.write_bytes(b"not a png")
    got = pd.read_csv(predict(str(run_dir), str(tmp_path / "images"), str(tmp_path / "out"), batch_size="5"))
    assert f"1 row(s) not predicted (not a readable image (UnidentifiedImageError); expected a PNG or JPEG file " \
        f"pillow can read): {broken};" in capsys.readouterr().err
    assert got.file.tolist() == files and got.not_predicted.notna().tolist() == [file == str(broken) for file in files]
    pd.testing.assert_frame_equal(got[got.file != str(broken)].iloc[:, 1:-1], whole[batched.file != str(broken)],
                                  check_dtype=False, rtol=1e-6)

    run_dir, _ = run(["model=mlp"])
    np.save(tmp_path / "digits.npy", np.zeros((4, 1, 8, 8), dtype=np.float32))
    assert tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'digits.npy'}", cwd=tmp_path).returncode == 0
    assert len(pd.read_csv(run_dir / "predictions_digits.csv")) == 4
    overflowing = np.zeros((3, 1, 8, 8))  # float64: its 1e308 is infinite in float32
    overflowing[1, 0, 2, 2] = 1e308
    np.save(tmp_path / "overflow.npy", overflowing)
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'overflow.npy'}", cwd=tmp_path)
    assert proc.returncode == 0 and "1 row(s) not predicted (holds a value that is not a finite float32 number " \
        "(NaN, infinite, or beyond about 3.4e38)): row 2;" in proc.stderr, proc.stderr
    got = pd.read_csv(run_dir / "predictions_overflow.csv")
    assert got.prediction.isna().tolist() == [False, True, False] and got.iloc[[0, 2], 2:-1].notna().all().all()
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5), dtype=np.float32))
    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'wrong.npy'}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("has rows of shape (5,), but the checkpoint was trained on (1, 8, 8)")


def test_eval_scores_a_new_labelled_table_as_the_run_scored_its_test_file_and_predict_keeps_columns(run, tmp_path):
    write_table(tmp_path / "all.csv", rows=300)
    frame = pd.read_csv(tmp_path / "all.csv")
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    frame[:220].to_csv(tmp_path / "train.csv", index=False)
    frame[220:].to_csv(tmp_path / "test.csv", index=False)
    run_dir, results = run(["data=csv", f"data.path={tmp_path / 'train.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
                            "data.target=label", "data.features=[size,colour,noise]", "data.missing=impute",
                            "model=mlp", "trainer.max_epochs=4"])
    # A/B: the run's own test file, scored again as a new file, gives the run's test metrics.
    proc = tool("dltrain-eval", f"ckpt_path={run_dir}", f"input={tmp_path / 'test.csv'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scored = json.loads((run_dir / "eval_best_test.json").read_text())
    assert scored["split"] == "input" and scored["rows"] == 80 and scored["input"] == str(tmp_path / "test.csv")
    assert scored["metrics"] == pytest.approx({k.replace("test_", "input_"): v for k, v in results["test"].items()},
                                              rel=1e-5)
    from dltrain.errors import DataError
    from dltrain.commands.evaluate import evaluate
    from dltrain.commands.predict import predict

    frame.drop(columns="label")[220:].to_csv(tmp_path / "unlabelled.csv", index=False)
    with pytest.raises(DataError, match=r"has no column 'label', the target the model was trained on: scoring "
                                        r"needs the true values \(dltrain-predict predicts without them\)$"):
        evaluate(str(run_dir), input=str(tmp_path / "unlabelled.csv"))
    frame.loc[[225], "label"] = "huge"
    frame[220:].to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(DataError, match=r"class 'huge' is not one the model was trained on \(big, small\)"):
        evaluate(str(run_dir), input=str(tmp_path / "odd.csv"))

    proc = tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'unlabelled.csv'}", "keep=[id,colour]",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    predictions = pd.read_csv(run_dir / "predictions_unlabelled.csv")
    assert list(predictions.columns[:4]) == ["row", "id", "colour", "prediction"]
    assert list(predictions.id) == list(frame.id[220:]) and list(predictions.colour) == list(frame.colour[220:])
    with pytest.raises(DataError, match="has no column 'name'; its columns are: id, size, colour, noise$"):
        predict(str(run_dir), str(tmp_path / "unlabelled.csv"), keep="name")


def test_a_grayscale_image_folder_trains_on_one_channel_and_one_image_or_a_labelled_folder_is_scored(tmp_path):
    write_image_folder(tmp_path / "images", grayscale=True)
    proc = dltrain_command("data=image_folder", f"data.path={tmp_path / 'images'}", "data.image_size=[8,8]",
                           "model=cnn", "trainer=cpu", "trainer.max_epochs=2", "hydra.run.dir=made", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "data.channels=auto: 1 (every image is grayscale)" in proc.stderr and "input (1, 8, 8)" in proc.stderr
    run_dir = tmp_path / "made"
    from dltrain.commands.predict import predict

    one = pd.read_csv(predict(str(run_dir), str(tmp_path / "images" / "dark" / "3.png")))
    assert len(one) == 1 and one.file[0].endswith("dark/3.png")
    # A/B: eval's accuracy on the labelled folder is that of predict's classes against the folder names.
    assert tool("dltrain-eval", f"ckpt_path={run_dir}", f"input={tmp_path / 'images'}", cwd=tmp_path).returncode == 0
    scored = json.loads((run_dir / "eval_best_images.json").read_text())
    assert tool("dltrain-predict", f"ckpt_path={run_dir}", f"input={tmp_path / 'images'}", cwd=tmp_path).returncode == 0
    predicted = pd.read_csv(run_dir / "predictions_images.csv")
    truth = predicted.file.map(lambda f: Path(f).parent.name)
    assert scored["rows"] == len(predicted) == 24
    assert scored["metrics"]["input_acc"] == pytest.approx((truth == predicted.prediction).mean(), abs=1e-6)


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = Path(sys.executable).with_name("dltrain")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # As from a terminal: a CI runner may start tests with SIGINT ignored (background jobs), which the
    # child would inherit and rightly respect; Ctrl-C at a terminal has the default disposition.
    return subprocess.Popen([str(script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_last_ckpt_is_the_last_epoch_and_best_ckpt_the_best(run):
    """A learning rate too high for the MLP makes val_loss rise again after its best epoch: best.ckpt stays
    there, last.ckpt moves on (Lightning 2.6's save_last writes only when the best improves)."""
    run_dir, results = run(["model=mlp", "trainer.max_epochs=6", "optimizer.lr=0.1", "optimizer.weight_decay=0",
                            "callbacks.early_stopping=null"])
    losses = [row["val_loss"] for row in read_metrics(run_dir)]
    best = losses.index(min(losses))
    assert best < len(losses) - 1  # the case this test is about
    assert torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == best
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == len(losses) - 1
    assert (results["best_checkpoint"], results["last_checkpoint"]) == ("checkpoints/best.ckpt", "checkpoints/last.ckpt")


def test_checkpoint_callbacks_set_to_null_write_no_checkpoint(run):
    """With neither checkpoint callback, no file appears in checkpoints/ (Lightning adds none of its own) and the
    test split is scored with the last epoch's weights; with the best one alone there is best.ckpt and no last."""
    run_dir, results = run(["model=mlp", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"])
    assert not list(run_dir.glob("**/*.ckpt"))
    assert (results["status"], results["best_checkpoint"], results["last_checkpoint"]) == ("completed", None, None)
    assert set(results["test"]) == {"test_loss", "test_acc", "test_f1"}
    run_dir, results = run(["model=mlp", "callbacks.last_checkpoint=null"])
    assert sorted(p.name for p in run_dir.glob("**/*.ckpt")) == ["best.ckpt"]
    assert (results["best_checkpoint"], results["last_checkpoint"]) == ("checkpoints/best.ckpt", None)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", [
    ["scheduler=step", "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"],
    # threshold 0.99: only a 99% fall counts as an improvement, so the plateau scheduler steps every epoch
    ["scheduler=plateau", "scheduler.scheduler.patience=0", "scheduler.scheduler.factor=0.5",
     "+scheduler.scheduler.threshold=0.99"],
])
def test_a_resumed_run_continues_its_schedule_as_if_never_stopped(tmp_path, scheduler):
    common = [*FAST[:1], "model=mlp", "callbacks.early_stopping=null", *scheduler]
    train(load_config([*common, "trainer.max_epochs=3"]), tmp_path / "whole")
    train(load_config([*common, "trainer.max_epochs=2"]), tmp_path / "resumed")
    train(load_config([*common, "trainer.max_epochs=3"]), tmp_path / "resumed", resume=True)
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "resumed")
    keys = ("epoch", "step", "lr", "train_loss", "val_loss")
    assert [[row[k] for k in keys] for row in resumed] == [pytest.approx([row[k] for k in keys]) for row in whole]


def test_resume_removes_writes_a_killed_run_left_unfinished(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*FAST[:1], "model=mlp", "callbacks.early_stopping=null"]
    train(load_config([*overrides, "trainer.max_epochs=1"]), run_dir)
    unfinished = [run_dir / ".metrics.csv.k2x9.tmp", run_dir / "checkpoints" / ".last.ckpt.8fq1.tmp"]
    for path in unfinished:
        path.write_bytes(b"half a file")
    (run_dir / "notes.tmp").write_text("the user's own")
    train(load_config([*overrides, "trainer.max_epochs=2"]), run_dir, resume=True)
    assert not any(path.exists() for path in unfinished) and (run_dir / "notes.tmp").exists()
    assert [row["epoch"] for row in read_metrics(run_dir)] == [0, 1]


def test_resume_takes_key_overrides_but_not_a_group_the_seed_the_monitor_or_the_split(tmp_path):
    from omegaconf import OmegaConf

    from dltrain.errors import ConfigError
    from dltrain.config.resume import resumed_config

    OmegaConf.save(load_config(["model=mlp"]), tmp_path / "config.yaml", resolve=True)  # as a run writes it
    merged = resumed_config(tmp_path, ["resume=last", "trainer.max_epochs=50", "compile.enabled=true",
                                       "optimizer.lr=0.01", "data.batch_size=32"])
    assert (merged.trainer.max_epochs, merged.compile.enabled) == (50, True)
    assert (merged.optimizer.lr, merged.data.batch_size, merged.resume) == (0.01, 32, str(tmp_path))
    for change, what in [("model=cnn", "a whole group"), ("seed=3", "seed, which a run keeps from its start"),
                         ("monitor=val_acc", "monitor, which"), ("cv.folds=3", "cv, which"),
                         ("data.val_fraction=0.3", "the data or its split")]:
        with pytest.raises(ConfigError, match=f"{change} would change {what}"):
            resumed_config(tmp_path, ["resume=last", change])
    OmegaConf.save(load_config(["model=mlp", "scheduler=onecycle"]), tmp_path / "config.yaml", resolve=True)
    assert resumed_config(tmp_path, ["optimizer.weight_decay=0.01"]).optimizer.weight_decay == 0.01
    with pytest.raises(ConfigError, match=r"optimizer.lr=0.01 would be undone by the run's scheduler, which sets the "
                                          r"learning rate from its own restored state \(the run started with 0.001\)"):
        resumed_config(tmp_path, ["optimizer.lr=0.01"])  # (applied to a run without a scheduler: see moved_elsewhere)
    with pytest.raises(ConfigError, match="trainer.max_epochs=50 would change the length of a scheduler=onecycle run "
                                          r"\(it started with 60\)"):
        resumed_config(tmp_path, ["trainer.max_epochs=50"])


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_saves_a_checkpoint_and_partial_results_then_resume_finishes(tmp_path, sig, code):
    process = start(tmp_path, *SLOW_EPOCHS, "trainer.max_epochs=30")
    wait_for(lambda: list(tmp_path.glob("outputs/runs/*/checkpoints/last.ckpt")))
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    run_dir = only_run_dir(tmp_path)
    assert (f"interrupted by {sig.name}: saved {run_dir / 'checkpoints' / 'interrupted.ckpt'}; "
            f"continue with: dltrain resume={run_dir}") in stderr
    partial = read_results(run_dir)
    assert partial["status"] == "interrupted" and partial["signal"] == sig.name and partial["epochs_run"] < 30
    assert torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=True)["state_dict"]
    proc = dltrain_command("resume=last", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_results(run_dir)["status"] == "completed" and len(list((tmp_path / "outputs" / "runs").iterdir())) == 1


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": _Payload()}}, evil)
    proc = tool("dltrain-eval", f"ckpt_path={evil}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "could run code when loaded; refused" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not _Payload.marker.exists()


def test_a_truncated_checkpoint_is_named(run, tmp_path):
    run_dir, _ = run(["model=mlp"])
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes()[:5000])
    proc = tool("dltrain-eval", f"ckpt_path={broken}", cwd=tmp_path)
    assert proc.returncode == 1 and f"{broken} is not a readable checkpoint" in proc.stderr


def test_a_checkpoint_of_another_shape_says_what_it_was_trained_for(run):
    from omegaconf import OmegaConf

    from dltrain.checkpoints.reading import CheckpointError, read_checkpoint

    from dltrain.training.restore import load_module
    from dltrain.config.compose import load_config

    run_dir, _ = run(["model=mlp"])
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    asked = OmegaConf.to_container(load_config(["model=mlp", "model.hidden_sizes=[32]"]), resolve=True)
    with pytest.raises(CheckpointError, match=r"trained for model=mlp \(17,226 parameters\) on data=digits "
                                              r"\(multiclass, input \(1, 8, 8\), 10 output\(s\)\), but model=mlp "
                                              r"\(2,410 parameters\) .* was asked"):
        load_module(checkpoint, asked, checkpoint["hyper_parameters"]["data_spec"])


def test_a_failed_checkpoint_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    from dltrain.checkpoints.writing import AtomicCheckpointIO

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"x": 1}, target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_nan_loss_stops_the_run_naming_epoch_and_step(tmp_path):
    proc = dltrain_command("trainer=cpu", "data=linear", "model=linear", "optimizer=sgd", "optimizer.lr=1e6",
                           "optimizer.momentum=0", cwd=tmp_path)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("dltrain: error: loss became") and "at epoch 1, batch" in line
    results = read_results(only_run_dir(tmp_path))
    assert results["status"] == "diverged" and "loss became" in results["error"]


@pytest.mark.slow
def test_a_run_folder_moved_elsewhere_resumes_as_if_it_had_stayed(run, tmp_path):
    """Lightning restores a ModelCheckpoint fully only in the folder it saved in: a moved run would keep its old
    folder's best path (an internal error, or the old folder's file tested) and forget its best score."""
    import shutil

    from dltrain.config.resume import resumed_config

    first, results = run(["model=mlp", "trainer.max_epochs=3", "callbacks.early_stopping=null"])
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    again = train(resumed_config(moved, []), moved, resume=True)  # nothing left to train: the stored best stands
    assert again["best_checkpoint"] == "checkpoints/best.ckpt" and again["best_val"] == results["best_val"]
    # a learning rate far too high from here on: every later epoch is worse than the best before the move
    resumed = train(resumed_config(moved, ["trainer.max_epochs=5", "optimizer.lr=3.0"]), moved, resume=True)
    losses = [row["val_loss"] for row in read_metrics(moved)]
    assert len(losses) == 5 and min(losses[3:]) > min(losses[:3])
    assert resumed["best_val"] == pytest.approx(min(losses), rel=1e-6) and resumed["best_epoch"] <= 3
