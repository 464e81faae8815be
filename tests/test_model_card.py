"""model_card.md: written by every completed run from its files, with the data's fingerprint (which changes with
one byte of the data), test metrics with bootstrap intervals, how to reproduce it, and its export's checks;
dltrain-runs shows the fingerprint and says when runs of one data name read different data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import dltrain_command, train_run
from datafiles import write_table
from dltrain.commands.export import export
from dltrain.data.fingerprint import data_fingerprint
from dltrain.report.model_card import bootstrap_intervals

TABLE = ["data=csv", "data.path={path}", "data.target=label", "data.missing=impute"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same table run twice, the second time with one byte of its file changed."""
    root = tmp_path_factory.mktemp("card")
    path = root / "table.csv"
    write_table(path)
    first = root / "outputs" / "first"
    train_run(first, [o.format(path=path) for o in TABLE])
    content = bytearray(path.read_bytes())
    at = content.index(b"red")
    content[at:at + 3] = b"Red"  # one byte: r -> R
    path.write_bytes(bytes(content))
    second = root / "outputs" / "second"
    train_run(second, [o.format(path=path) for o in TABLE])
    return root, first, second


def test_a_completed_run_writes_its_card_with_the_numbers_of_its_files(two_runs):
    root, first, _ = two_runs
    card = (first / "model_card.md").read_text()
    for section in ("## What was trained", "## Data", "## How good", "## How it was made", "## Reproduce",
                    "## Export"):
        assert section in card
    results = pd.read_json(first / "results.json", typ="series")
    digest = results["data_fingerprint"]["sha256"]
    assert f"SHA-256 `{digest}` of 1 file(s)" in card and str(root / "table.csv") in card
    rows = results["rows"]
    assert f"rows: train {rows['train']:,} / val {rows['val']:,} / test {rows['test']:,}" in card
    accuracy = results["test"]["test_acc"]
    low, high = map(float, re.search(r"\| test_acc \| [\d.]+ \| ([\d.]+) - ([\d.]+) \|", card).groups())
    assert low <= accuracy <= high and high - low > 0
    predictions = pd.read_csv(first / "test_predictions.csv", dtype=str)
    assert (predictions["true"] == predictions["prediction"]).mean() == pytest.approx(accuracy, abs=1e-6)
    assert f"{results['num_parameters']:,} parameters" in card and "torch " in card and "pytorch-lightning " in card
    calibration = results["calibration"]
    assert f"Calibration: temperature {calibration['temperature']:.4f} fitted on the val split" in card
    assert f"test ECE {calibration['test']['ece_before']:.4f} -> {calibration['test']['ece_after']:.4f}" in card
    assert "Not exported yet" in card


def test_the_fingerprint_changes_with_one_byte_of_the_data(two_runs, tmp_path, monkeypatch):
    _, first, second = two_runs
    prints = [pd.read_json(run / "results.json", typ="series")["data_fingerprint"]["sha256"] for run in (first, second)]
    assert prints[0] != prints[1] and all(re.fullmatch(r"[0-9a-f]{64}", p) for p in prints)
    assert prints[1] in (second / "model_card.md").read_text() and prints[0] not in (second / "model_card.md").read_text()
    # A folder: its files by relative path and content; a renamed file changes it too.
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    (folder / "b.csv").write_text("x,y\n3,4\n")
    once = data_fingerprint({"path": str(folder)}, None)
    assert once == data_fingerprint({"path": str(folder)}, None) and once["files"] == 2 and once["bytes"] == 16
    (folder / "b.csv").rename(folder / "c.csv")
    assert data_fingerprint({"path": str(folder)}, None)["sha256"] != once["sha256"]
    # Data over CONTENT_BYTES is not read before training: its listing (names, sizes, times) is the fingerprint.
    import os

    from dltrain.data import fingerprint

    monkeypatch.setattr(fingerprint, "CONTENT_BYTES", 8)
    listed = data_fingerprint({"path": str(folder)}, None)
    assert listed["of"] == "file names, sizes and times" and (listed["files"], listed["bytes"]) == (2, 16)
    assert data_fingerprint({"path": str(folder)}, None) == listed
    stat = (folder / "a.csv").stat()
    os.utime(folder / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert data_fingerprint({"path": str(folder)}, None)["sha256"] != listed["sha256"]
    # An embedded set: its loaded arrays.
    from dltrain.data.embedded import iris

    data = iris()
    embedded = data_fingerprint({"_target_": "dltrain.data.embedded.iris"}, data)
    assert embedded["provider"].startswith("scikit-learn ") and embedded["of"] == "the loaded arrays"
    data.targets[0] = (data.targets[0] + 1) % 3
    assert data_fingerprint({"_target_": "dltrain.data.embedded.iris"}, data)["sha256"] != embedded["sha256"]


def test_dltrain_runs_shows_the_fingerprints_and_says_the_data_differs(two_runs):
    root, first, second = two_runs
    prints = [pd.read_json(run / "results.json", typ="series")["data_fingerprint"]["sha256"][:8]
              for run in (first, second)]
    proc = dltrain_command("outputs", cwd=root, script="dltrain-runs", env={"COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert all(p in proc.stdout for p in prints)
    assert "the runs read 2 different versions of it" in re.sub(r"\s+", " ", proc.stdout)
    proc = dltrain_command(str(first), str(second), cwd=root, script="dltrain-runs", env={"COLUMNS": "120"})
    assert proc.returncode == 0 and f"fingerprints {prints[0]} and {prints[1]}" in proc.stdout


def test_the_card_names_the_export_checks_once_exported(two_runs):
    _, first, _ = two_runs
    export(str(first), "onnx")
    card = (first / "model_card.md").read_text()
    assert "Not exported yet" not in card
    assert re.search(r"`model\.onnx` \(onnx\): largest difference from the checkpoint .* the same class on \d+; "
                     r"passed", card)


def test_bootstrap_intervals_bracket_the_value_and_narrow_with_more_rows(tmp_path):
    rng = np.random.default_rng(1)
    widths = []
    for rows in (100, 2500):
        right = rng.random(rows) < 0.8
        frame = pd.DataFrame({"true": ["a"] * rows, "prediction": np.where(right, "a", "b")})
        frame.to_csv(tmp_path / "p.csv", index=False)
        value, low, high = bootstrap_intervals(tmp_path / "p.csv", "multiclass")["test_acc"]
        assert low <= value <= high and value == pytest.approx(right.mean())
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # about 1/sqrt(25) as wide
    pd.DataFrame({"true": [1.0, 2.0, 3.0, 4.0], "prediction": [1.5, 2.0, 2.0, 4.0]}).to_csv(tmp_path / "r.csv",
                                                                                            index=False)
    regression = bootstrap_intervals(tmp_path / "r.csv", "regression")
    assert regression["test_mae"][0] == pytest.approx(0.375) and regression["test_rmse"][0] == pytest.approx(
        np.sqrt((0.25 + 1) / 4))


def test_a_command_line_runs_card_names_its_presets_and_the_command_that_reproduces_it(tmp_path):
    from conftest import only_run_dir

    proc = dltrain_command("data=iris", "trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    card = (run_dir / "model_card.md").read_text()
    assert "- Keys set on the command line: `data=iris`, `trainer.max_epochs=1`." in card
    assert "`data=iris`" in card.split("Config presets:")[1].splitlines()[0]
    assert "`optimizer=adam`" in card and "```bash\ndltrain data=iris trainer.max_epochs=1\n```" in card
    assert f"model card (data fingerprint, test intervals, how to reproduce): {run_dir / 'model_card.md'}" in \
        proc.stdout + proc.stderr


def test_the_intervals_are_the_row_resampling_bootstraps_at_any_size(tmp_path, monkeypatch):
    """Accuracy's resamples drawn as binomial counts, and a large regression's normal approximation, give the
    interval that resampling the rows one by one gives (within its Monte Carlo noise), with bounded memory."""
    from dltrain.report import model_card

    rng = np.random.default_rng(2)
    right = rng.random(3000) < 0.7
    pd.DataFrame({"true": ["a"] * 3000, "prediction": np.where(right, "a", "b")}).to_csv(tmp_path / "p.csv",
                                                                                        index=False)
    by_rows = right[rng.integers(0, 3000, size=(2000, 3000))].mean(axis=1)
    _, low, high = bootstrap_intervals(tmp_path / "p.csv", "multiclass")["test_acc"]
    assert (low, high) == pytest.approx((np.percentile(by_rows, 2.5), np.percentile(by_rows, 97.5)), abs=0.004)
    true = rng.normal(size=3000)
    pd.DataFrame({"true": true, "prediction": true + rng.gamma(2.0, 0.5, 3000)}).to_csv(tmp_path / "r.csv",
                                                                                       index=False)
    resampled = bootstrap_intervals(tmp_path / "r.csv", "regression")
    monkeypatch.setattr(model_card, "RESAMPLED_ROWS", 1000)  # 3,000 rows: now the normal approximation
    approximated = bootstrap_intervals(tmp_path / "r.csv", "regression")
    for name in ("test_rmse", "test_mae"):
        assert approximated[name][0] == resampled[name][0]
        assert approximated[name][1:] == pytest.approx(resampled[name][1:], abs=0.01)
    said = "\n".join(model_card._quality({"task": "regression", "rows": {"test": 3000}}, tmp_path / "r.csv"))
    assert "above 1,000 rows: the normal approximation" in said
    assert "normal approximation" not in "\n".join(
        model_card._quality({"task": "multiclass", "rows": {"test": 3000}}, tmp_path / "p.csv"))
