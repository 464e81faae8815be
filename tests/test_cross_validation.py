"""k-fold cross-validation: the folds, the fold directories, the summary, and resuming."""

from __future__ import annotations

import json
import os
import statistics

import numpy as np
import pytest

from conftest import dltrain_command, only_run_dir, read_metrics, read_results


def wine():
    from dltrain.data.embedded import wine as load

    return load()


def test_folds_cover_the_training_rows_once_each_stratified_and_leave_the_test_split_alone():
    from dltrain.data.splits import split_rows
    from dltrain.data.folds import fold_rows

    data = wine()
    train, val, test = split_rows(data, 0.1, 0.2, seed=7)
    folds = fold_rows(data, 4, seed=7, val_fraction=0.1, test_fraction=0.2)
    assert len(folds) == 4
    held = np.concatenate([fold_val for _, fold_val, _ in folds])
    assert sorted(held) == sorted(np.concatenate([train, val]))  # every training row validates exactly once
    share = np.bincount(data.targets) / len(data.targets)
    for fold_train, fold_val, fold_test in folds:
        assert not set(fold_train) & set(fold_val)
        assert sorted(fold_test) == sorted(test)
        assert np.abs(np.bincount(data.targets[fold_val], minlength=3) / len(fold_val) - share).max() < 0.08
    again = fold_rows(data, 4, seed=7, val_fraction=0.1, test_fraction=0.2)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))  # seeded
    other = fold_rows(data, 4, seed=8, val_fraction=0.1, test_fraction=0.2)
    assert any(set(a[1]) != set(b[1]) for a, b in zip(folds, other))


def test_all_data_folds_cover_every_row_and_test_each_fold_on_its_validation_part():
    from dltrain.data.folds import fold_rows

    data = wine()
    folds = fold_rows(data, 3, seed=0, val_fraction=0.1, test_fraction=0.2, all_data=True)
    assert sorted(np.concatenate([v for _, v, _ in folds])) == list(range(len(data.targets)))
    assert all((v == t).all() and len(tr) + len(v) == len(data.targets) for tr, v, t in folds)


def test_too_few_rows_of_a_class_for_the_folds_is_one_line(tmp_path):
    proc = dltrain_command("trainer=cpu", "data=wine", "cv.folds=60", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("dltrain: error: data=wine: class '")
    assert "cv.folds=60 needs at least 60 per class" in proc.stderr


@pytest.mark.slow
def test_a_three_fold_run_writes_three_fold_runs_and_their_mean(tmp_path):
    proc = dltrain_command("trainer=cpu", "data=wine", "model=mlp", "cv.folds=3", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    folds = [read_results(run_dir / f"fold_{k}") for k in (1, 2, 3)]
    assert all(f["status"] == "completed" and (run_dir / f"fold_{k}" / "checkpoints" / "best.ckpt").is_file()
               for k, f in enumerate(folds, 1))
    assert all(len((run_dir / f"fold_{k}" / "metrics.csv").read_text().splitlines()) == 4 for k in (1, 2, 3))
    summary = read_results(run_dir)
    cv = summary["cv"]
    assert [f["fold"] for f in cv["folds"]] == [1, 2, 3] and cv["tested_on"] == "the held-out test split"
    for name in ("test_acc", "test_f1", "test_loss"):
        per_fold = [f["test"][name] for f in folds]
        assert cv["mean"][name] == pytest.approx(statistics.fmean(per_fold), abs=1e-12)
        assert cv["std"][name] == pytest.approx(statistics.stdev(per_fold), abs=1e-12)
        assert summary["test"][name] == cv["mean"][name]
    assert summary["best_val"] == pytest.approx(statistics.fmean(f["best_val"] for f in folds), abs=1e-12)
    assert "3-fold cross-validation" in proc.stdout and "mean" in proc.stdout and "std" in proc.stdout
    # One plot of the folds: each fold's monitored curve (epochs from 1) and their mean.
    from dltrain.report.plots import folds_figure

    assert summary["plots"] == ["cv_curves.png"] and (run_dir / "cv_curves.png").read_bytes()[:4] == b"\x89PNG"
    curves = {line.get_label(): list(line.get_ydata()) for line in folds_figure(run_dir, cv["folds"], "val_loss").axes[0].lines
              if not line.get_label().startswith("_")}
    per_fold = [[row["val_loss"] for row in read_metrics(run_dir / f"fold_{k}")] for k in (1, 2, 3)]
    assert curves["fold 1"] == per_fold[0] and curves["fold 3"] == per_fold[2]
    assert curves["mean of the folds"] == pytest.approx([statistics.fmean(v) for v in zip(*per_fold)])
    # Resume keeps the completed folds and finishes the one without results.
    kept = (run_dir / "fold_1" / "results.json").stat().st_mtime_ns
    (run_dir / "fold_3" / "results.json").unlink()
    (run_dir / "results.json").unlink()
    proc = dltrain_command(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "fold_1" / "results.json").stat().st_mtime_ns == kept
    assert "cross-validation fold 1/3 completed before" in proc.stdout + proc.stderr
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["cv"]["mean"]["test_acc"] == pytest.approx(summary["cv"]["mean"]["test_acc"], abs=1e-6)
    assert os.listdir(tmp_path / "outputs" / "runs") == [run_dir.name]


@pytest.mark.parametrize("override, message", [
    ("cv.folds=1", "cv.folds=1 is not valid: expected 0 or an integer >= 2"),
    ("cv.all_data=true", "cv.all_data=true needs cross-validation: set cv.folds to 2 or more"),
])
def test_cross_validation_keys_out_of_range_are_one_line(tmp_path, override, message):
    proc = dltrain_command("trainer=cpu", override, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"dltrain: error: {message}"


def test_a_cross_validated_run_checks_its_config_once_not_once_per_fold(tmp_path, monkeypatch):
    import dltrain.training.preflight as validation
    from dltrain.config.compose import load_config
    from dltrain.training.cross_validation import cross_validate

    checked = []
    check = validation.section_errors
    monkeypatch.setattr(validation, "section_errors", lambda cfg: checked.append(cfg.cv.folds) or check(cfg))
    cfg = load_config(["trainer=cpu", "data=wine", "model=mlp", "model.hidden_sizes=[8]", "cv.folds=2",
                       "trainer.max_epochs=1"])
    record = cross_validate(cfg, tmp_path / "run")
    assert checked == [2] and [fold["fold"] for fold in record["cv"]["folds"]] == [1, 2]
