"""calibration: a temperature fitted on the validation split lowers an over-confident model's test ECE and keeps
its accuracy; it is stored in the best checkpoint, and dltrain-predict, dltrain-serve and the exported files give
the same calibrated probabilities."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import read_results, train_run
from datafiles import write_table
from dltrain.checkpoints.reading import read_checkpoint
from dltrain.errors import ConfigError
from dltrain.report.predictions import output_numbers
from dltrain.training.calibration import fit_temperature, probabilities, scores
from dltrain.training.restore import CALIBRATION_KEY, load_module

# A wide MLP trained long on noisy labels, without early stopping, weight decay or dropout, its last epoch's
# weights kept (the best checkpoint follows the training loss): it grows over-confident.
OVER_CONFIDENT = ["data=csv", "data.path={path}", "data.target=label", "model=mlp", "model.hidden_sizes=[128,128]",
                  "model.dropout=0", "optimizer.weight_decay=0", "trainer.max_epochs=120",
                  "callbacks.early_stopping=null", "callbacks.model_checkpoint.monitor=train_loss"]


def noisy_table(path) -> None:
    """800 rows, six numbers, a yes/no label that two of them decide through noise (about 20% of the labels
    disagree with the rule)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 6))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
    frame["label"] = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=800) > 0, "yes", "no")
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    noisy_table(root / "noisy.csv")
    overrides = [o.format(path=root / "noisy.csv") for o in OVER_CONFIDENT]
    return root / "run", train_run(root / "run", overrides), overrides


def test_temperature_scaling_lowers_the_test_ece_of_an_over_confident_model_and_keeps_its_accuracy(calibrated,
                                                                                                 tmp_path):
    run_dir, results, overrides = calibrated
    record = results["calibration"]
    assert record["method"] == "temperature" and record["fitted_on"] == "val" and record["temperature"] > 1
    assert record["test"]["ece_after"] < record["test"]["ece_before"]
    assert record["test"]["brier_after"] <= record["test"]["brier_before"]
    assert (run_dir / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same run without calibration: the same test accuracy, the same classes row for row, other probabilities.
    plain_dir = tmp_path / "plain"
    plain = train_run(plain_dir, overrides + ["calibration=none"])
    assert "calibration" not in plain and plain["test"]["test_acc"] == results["test"]["test_acc"]
    ours, theirs = (pd.read_csv(d / "test_predictions.csv") for d in (run_dir, plain_dir))
    assert (ours["prediction"] == theirs["prediction"]).all()
    probs = [c for c in ours.columns if c.startswith("prob_")]
    assert (ours[probs].max(axis=1) <= theirs[probs].max(axis=1) + 1e-6).all()  # T > 1: less sure, never more
    assert np.abs(ours[probs].to_numpy() - theirs[probs].to_numpy()).max() > 1e-3
    accuracy = (ours["prediction"].astype(str) == ours["true"].astype(str)).mean()
    assert accuracy == pytest.approx(results["test"]["test_acc"], abs=1e-6)


def test_the_temperature_is_stored_and_predict_serve_and_every_export_give_the_same_probabilities(calibrated,
                                                                                                  tmp_path):
    from fastapi.testclient import TestClient

    from dltrain.commands.export import export
    from dltrain.commands.predict import predict
    from dltrain.data.datamodule import stored_datamodule
    from dltrain.inference.app import Settings, create_app, load_served
    from dltrain.inference.formats import load_safetensors

    run_dir, results, _ = calibrated
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert checkpoint[CALIBRATION_KEY]["temperature"] == pytest.approx(results["calibration"]["temperature"], 1e-5)
    module = load_module(checkpoint).eval()
    assert module.temperature == pytest.approx(results["calibration"]["temperature"], 1e-5) and module.temperature > 1
    # dltrain-predict and dltrain-serve on the same raw rows: the same calibrated probabilities.
    raw = pd.read_csv(run_dir.parent / "noisy.csv").drop(columns="label")[:40]
    raw.to_csv(tmp_path / "new.csv", index=False)
    predicted = pd.read_csv(predict(str(run_dir), str(tmp_path / "new.csv")))
    settings = Settings(str(run_dir))
    client = TestClient(create_app(load_served(settings), settings))
    answer = client.post("/predict", json={"rows": raw.to_dict(orient="records")})
    assert answer.status_code == 200, answer.text
    served = np.array([[row["probabilities"][c] for c in ("no", "yes")] for row in answer.json()["predictions"]])
    assert np.abs(served - predicted[["prob_no", "prob_yes"]].to_numpy()).max() < 1e-5
    # Those are the network's logits divided by the temperature (here on the test rows as the module reads them),
    # and every exported file gives them too; preprocessing.json says so.
    rows = stored_datamodule(module.hparams.config, module.spec).test_set.labelled_head(None)[0][:40]
    want = output_numbers(module, rows)[:, 1]
    with torch.inference_mode():
        logits = module(rows)[:, 0]
    assert np.abs(want - torch.sigmoid(logits / module.temperature).numpy()).max() < 1e-6
    assert np.abs(want - torch.sigmoid(logits).numpy()).max() > 1e-3
    export(str(run_dir), "all", output=str(tmp_path / "export"))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = {"onnx": session.run(None, {"input": rows.numpy()})[0],
               "pt2": torch.export.load(tmp_path / "export" / "model.pt2").module()(rows).detach().numpy(),
               "safetensors": load_safetensors(tmp_path / "export")(rows).detach().numpy()}
    for name, output in outputs.items():
        assert np.abs(torch.sigmoid(torch.from_numpy(output[:, 0])).numpy() - want).max() < 1e-5, name
    prep = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert prep["output"]["calibration"]["temperature"] == pytest.approx(module.temperature)
    # dltrain-eval on the test split: the training's figures of the calibrated probabilities.
    from dltrain.commands.evaluate import evaluate

    figures = evaluate(str(run_dir), output=str(tmp_path / "eval.json"))["calibration"]
    on_test = results["calibration"]["test"]
    assert (figures["ece"], figures["uncalibrated_ece"]) == pytest.approx((on_test["ece_after"], on_test["ece_before"]),
                                                                          abs=1e-5)
    assert figures["brier"] == pytest.approx(on_test["brier_after"], abs=1e-5)


def test_temperature_scaling_fits_the_temperature_that_made_the_logits_over_confident():
    """Logits drawn from a calibrated model, then multiplied by 3: the fitted temperature is about 3, and the
    calibration error falls back to where it was."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 5, generator=generator) * 2
    targets = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]
    temperature = fit_temperature(logits * 3, targets, "multiclass")
    assert temperature == pytest.approx(3, rel=0.05)
    before, after = (scores(probabilities(logits * 3, "multiclass", t), targets)["ece"] for t in (1, temperature))
    assert after < 0.02 < before


def test_a_regression_is_not_calibrated_and_asking_for_it_is_refused(tmp_path):
    results = train_run(tmp_path / "auto", ["data=diabetes", "model=linear"])
    assert "calibration" not in results
    with pytest.raises(ConfigError, match="calibration=temperature calibrates a classifier's probabilities, and "
                                          "data=diabetes is a regression task: set calibration=auto or none"):
        train_run(tmp_path / "asked", ["data=diabetes", "model=linear", "calibration=temperature"])


def test_a_binary_classifier_is_calibrated_through_its_one_logit(tmp_path):
    write_table(tmp_path / "table.csv")
    results = train_run(tmp_path / "run", ["data=csv", f"data.path={tmp_path / 'table.csv'}", "data.target=label",
                                           "data.missing=impute"])
    assert results["task"] == "binary" and results["calibration"]["temperature"] > 0
    module = load_module(read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt"))
    assert module.temperature == pytest.approx(results["calibration"]["temperature"], 1e-5)
    assert read_results(tmp_path / "run")["calibration"]["stored_in"] == "checkpoints/best.ckpt"


def test_calibration_reads_the_rows_the_batch_limits_covered(tmp_path):
    """With validation and test limited to their first batches (a smoke run), the temperature is fitted and
    measured on those rows, as the test metrics and test_predictions.csv are: the record says how many."""
    write_table(tmp_path / "table.csv")
    results = train_run(tmp_path / "run", ["data=csv", f"data.path={tmp_path / 'table.csv'}", "data.target=label",
                                           "data.missing=impute", "data.batch_size=8", "trainer.limit_val_batches=2",
                                           "trainer.limit_test_batches=3", "trainer.max_epochs=3"])
    record, limits = results["calibration"], results["limits"]
    assert (record["val_rows"], record["test"]["rows"]) == (limits["val"]["rows"], limits["test"]["rows"]) == (16, 24)
    assert limits["test"]["of"] > 24 and len(pd.read_csv(tmp_path / "run" / "test_predictions.csv")) == 24
