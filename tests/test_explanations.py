"""explain=true: permutation importance ranks a planted informative column first and a planted noise column
last (a text column's one-hot features shuffled as one column); integrated gradients of test images; data it
cannot explain refused in one line before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import dltrain_command, train_run
from dltrain.report.explanations import column_groups


def planted_table(path) -> None:
    """600 rows: `signal` decides the label, `colour` nudges it, `noise` has nothing to do with it."""
    rng = np.random.default_rng(3)
    signal, noise = rng.normal(size=600), rng.normal(size=600)
    colour = rng.choice(["red", "green", "blue"], 600)
    label = np.where(signal + 0.8 * (colour == "red") > 0.3, "up", "down")
    pd.DataFrame({"noise": noise, "colour": colour, "signal": signal, "label": label}).to_csv(path, index=False)


def test_permutation_importance_ranks_the_planted_column_first_and_the_noise_last(tmp_path):
    planted_table(tmp_path / "planted.csv")
    results = train_run(tmp_path / "run", ["data=csv", f"data.path={tmp_path / 'planted.csv'}", "data.target=label",
                                           "trainer.max_epochs=25", "explain=true"])
    table = pd.read_csv(tmp_path / "run" / "importance.csv")
    assert list(table["column"]) == ["signal", "colour", "noise"]  # colour once, not one row per category
    assert table["importance_mean"].iloc[0] > 0.2 and abs(table["importance_mean"].iloc[-1]) < 0.02
    assert (table["metric"] == "accuracy drop").all() and (table["repeats"] == 5).all()
    record = results["explanations"]
    assert record["method"] == "permutation importance" and record["top"][0]["column"] == "signal"
    assert record["baseline"] == pytest.approx(results["test"]["test_acc"], abs=1e-6)
    assert (tmp_path / "run" / "importance.png").read_bytes()[:4] == b"\x89PNG"


def test_a_regressions_importance_is_the_rise_of_its_error():
    from dltrain.data.spec import DataSpec

    spec = DataSpec("t", "regression", (5,), 1, encoder={"columns": [
        {"name": "a", "kind": "numeric", "mean": 0, "std": 1},
        {"name": "b", "kind": "categorical", "categories": ["x", "y", "z"]},
        {"name": "c", "kind": "numeric", "mean": 0, "std": 1}]}, kind="table")
    assert column_groups(spec) == [("a", [0]), ("b", [1, 2, 3]), ("c", [4])]


def test_integrated_gradients_explain_a_few_test_images(tmp_path):
    from dltrain.checkpoints.reading import read_checkpoint
    from dltrain.data.datamodule import stored_datamodule
    from dltrain.report.explanations import explain
    from dltrain.training.restore import load_module

    train_run(tmp_path / "run", ["model=cnn", "trainer.limit_train_batches=5"])
    module = load_module(read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt"))
    test_set = stored_datamodule(module.hparams.config, module.spec).test_set
    record = explain(module, test_set, tmp_path)
    assert record["method"] == "integrated gradients (captum)" and record["images"] == 4
    assert record["shape"] == [1, 8, 8]
    assert (tmp_path / "attributions.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_on_data_it_cannot_explain_is_refused_in_one_line(tmp_path):
    proc = dltrain_command("data=sine", "explain=true", "trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "explain=true explains tables (permutation importance) and images (integrated gradients), and " \
           "data=sine is sequence data: set explain=false" in proc.stderr


def test_a_large_test_split_is_explained_on_a_seeded_sample_drawn_from_all_of_it(monkeypatch):
    """Above SAMPLE_ROWS test rows, permutation importance reads a seeded sample, batch by batch (a streamed
    split is never held whole), taken from every part of the split, not its first rows."""
    import torch

    from dltrain.report import explanations

    class Split:  # 1,000 rows whose one feature is the row's number, read in batches of 64
        def __len__(self):
            return 1000

        def labelled_batches(self, rows=None):
            numbers = torch.arange(1000, dtype=torch.float32)
            return zip(numbers[:, None].split(64), (numbers % 2).split(64))

    monkeypatch.setattr(explanations, "SAMPLE_ROWS", 100)
    rows, targets = explanations.test_rows(Split(), seed=0)
    drawn = rows[:, 0]
    assert len(drawn) == 100 and len(set(drawn.tolist())) == 100 and torch.equal(targets, drawn % 2)
    assert drawn.min() < 200 and drawn.max() > 800  # from the whole split
    again, _ = explanations.test_rows(Split(), seed=0)
    assert torch.equal(again, rows) and not torch.equal(explanations.test_rows(Split(), seed=1)[0], rows)
    monkeypatch.setattr(explanations, "SAMPLE_ROWS", 5000)
    assert torch.equal(explanations.test_rows(Split(), seed=0)[0][:, 0], torch.arange(1000, dtype=torch.float32))


def test_a_sampled_explanation_says_so_in_its_line_and_in_results(tmp_path, monkeypatch, caplog):
    from dltrain.report import explanations

    planted_table(tmp_path / "planted.csv")
    monkeypatch.setattr(explanations, "SAMPLE_ROWS", 50)
    with caplog.at_level("INFO", logger="dltrain"):
        results = train_run(tmp_path / "run", ["data=csv", f"data.path={tmp_path / 'planted.csv'}",
                                               "data.target=label", "trainer.max_epochs=2", "explain=true"])
    record = results["explanations"]
    assert (record["rows"], record["test_rows"]) == (50, results["rows"]["test"])
    assert f"permutation importance on a seeded sample of 50 of the {record['test_rows']} test rows" in caplog.text
