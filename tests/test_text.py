"""Text classification from a text column: the vocabulary (built on the training split, kept in the checkpoint),
training through the command, and the same ids in prediction, evaluation, export and serving."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import dltrain_command, only_run_dir, read_metrics, read_results
from datafiles import write_reviews


def test_the_vocabulary_comes_from_the_training_split_and_other_tokens_are_unknown():
    from dltrain.data.arrays import ArrayData
    from dltrain.data.datamodule import ArrayDataModule
    from dltrain.data.text import UNKNOWN, TextEncoder

    texts = [f"good film {i % 3}" if i % 2 else f"bad film {i % 3}" for i in range(100)]
    rows = (np.arange(80), np.arange(80, 90), np.arange(90, 100))
    texts[85] = texts[95] = "zebra crossing"  # only in the validation and test rows
    text = {"column": "text", "analyzer": "word", "max_length": 4, "min_count": 1, "max_vocabulary": 100,
            "embedding_size": 8}
    data = ArrayData("t", pd.DataFrame({"text": texts}), np.arange(100) % 2, "binary", "text", text=text)
    module = ArrayDataModule(data, rows=rows)
    encoder = TextEncoder.from_dict(module.spec.encoder)
    assert encoder.vocabulary == ["0", "1", "2", "bad", "film", "good"]
    assert module.spec.input_shape == (4,) and module.val_set.features.dtype.is_floating_point is False
    zebra = module.val_set.features[85 - 80].tolist()
    assert zebra == [0, 0, UNKNOWN, UNKNOWN]  # padded in front, then the two unknown tokens
    assert encoder.transform(pd.Series(["Good, GOOD film!"])).tolist() == [[0, 7, 7, 6]]


@pytest.mark.slow
def test_a_text_column_trains_through_the_command_and_predicts_evaluates_exports_and_serves_the_same(tmp_path):
    from fastapi.testclient import TestClient

    from dltrain.inference.app import Settings, create_app, load_served

    write_reviews(tmp_path / "reviews.csv")
    proc = dltrain_command("data=csv", "data.path=reviews.csv", "data.target=label", "data.text_column=text",
                           "data.max_length=24", "model=lstm", "trainer=cpu", "trainer.max_epochs=12", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "text column 'text':" in proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path)
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    results = read_results(run_dir)
    assert losses[-1] < losses[0] * 0.8 and results["test"]["test_acc"] > 0.75, (losses, results["test"])
    assert "TokenEmbedding" in (run_dir / "model_summary.txt").read_text()

    proc = dltrain_command(f"ckpt_path={run_dir}", cwd=tmp_path, script="dltrain-eval")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "eval_best.json").read_text())["metrics"] == pytest.approx(results["test"], rel=1e-5)

    new = pd.DataFrame({"text": ["a great and wonderful film", "boring awful plot", "not bad at all", "zebra"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    proc = dltrain_command(f"ckpt_path={run_dir}", "input=new.csv", cwd=tmp_path, script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    predicted = pd.read_csv(run_dir / "predictions_new.csv")
    assert list(predicted["prediction"][:2]) == ["positive", "negative"]

    proc = dltrain_command(f"ckpt_path={run_dir}", "format=all", cwd=tmp_path, script="dltrain-export")
    assert proc.returncode == 0, proc.stderr
    for name in ("model.onnx", "model.pt2", "model.safetensors"):  # each checked on the run's test rows
        assert json.loads((run_dir / "export" / f"{name}.check.json").read_text())["passed"]
    prep = json.loads((run_dir / "export" / "preprocessing.json").read_text())
    assert prep["input"] == {"name": "input", "dtype": "int64", "shape": ["batch", 24]}
    vocabulary = prep["text"]["vocabulary"]
    import onnxruntime
    from sklearn.feature_extraction.text import CountVectorizer

    # preprocessing.json alone (its steps) makes the ids the ONNX file takes, and it answers as predict does
    tokenize = CountVectorizer(token_pattern=r"(?u)\b\w+\b").build_analyzer()
    ids = np.zeros((len(new), 24), dtype=np.int64)
    for row, text in enumerate(new["text"]):
        tokens = [vocabulary.index(t) + 2 if t in vocabulary else 1 for t in tokenize(text)][:24]
        ids[row, 24 - len(tokens):] = tokens
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": ids})[0][:, 0]
    assert list(logits > 0) == list(predicted["prediction"] == prep["output"]["classes"][1])

    settings = Settings(str(run_dir))
    client = TestClient(create_app(load_served(settings), settings))
    answer = client.post("/predict", json={"rows": new.to_dict(orient="records")})
    assert answer.status_code == 200, answer.text
    assert [a["prediction"] for a in answer.json()["predictions"]] == list(predicted["prediction"])
    assert client.post("/predict", json={"rows": [{"review": "good"}]}).json()["detail"] == (
        "rows: no column 'text', the text the model was trained on")


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_the_reviews_set_trains_each_text_model(run, model):
    _, results = run(["data=reviews", f"model={model}", "trainer.max_epochs=6"])
    assert results["test"]["test_acc"] > 0.7, results["test"]


def test_a_model_that_reads_no_text_and_a_crafted_text_encoding_are_refused(run, tmp_path):
    proc = dltrain_command("data=reviews", "model=cnn", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("models that fit it: conv1d, gru, lstm, mlp, rnn, transformer"), proc.stderr
    write_reviews(tmp_path / "reviews.csv", rows=50)
    proc = dltrain_command("data=csv", "data.path=reviews.csv", "data.target=label", "data.max_length=8", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dltrain: error: data.max_length sets how a text column is read, and there is none: name it with "
        "data.text_column=<column>, or leave the key out"), proc.stderr
    proc = dltrain_command("data=reviews", "data.augment.noise=0.1", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "data.augment changes images and numbers, and a text's inputs are token ids: leave its keys off for text")
    from dltrain.data.spec_check import checked_spec
    from dltrain.errors import CheckpointError

    spec = {"name": "r", "task": "binary", "input_shape": [8], "kind": "text",
            "encoder": {"kind": "text", "column": "text", "analyzer": "word", "max_length": 8,
                        "vocabulary": ["a", 3], "embedding_size": 4}}
    with pytest.raises(CheckpointError, match="data spec has encoder=.*a text encoding"):
        checked_spec(spec)


def test_an_empty_text_under_data_missing_drop_is_that_rows_fault_and_the_others_are_read():
    from dltrain.data.inputs import table_features
    from dltrain.data.spec import DataSpec
    from dltrain.data.text import TextEncoder
    from dltrain.errors import DataError

    encoder = TextEncoder("text", "word", 4, ["bad", "good"], 4)
    spec = DataSpec("r", "binary", (4,), 2, kind="text", encoder=encoder.to_dict())
    frame = pd.DataFrame({"text": ["good", None, "bad good"]})
    faults: dict[int, str] = {}
    ids = table_features(frame, spec, "drop", "error", "rows", faults=faults)
    assert list(faults) == [1] and "the text 'text' is empty, and training dropped such rows" in faults[1]
    assert (ids[[0, 2]] == table_features(frame.iloc[[0, 2]], spec, "drop", "error", "rows")).all()
    with pytest.raises(DataError, match=r"^rows line 3: the text 'text' is empty"):
        table_features(frame, spec, "drop", "error", "rows")
