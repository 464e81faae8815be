"""tune=lr and tune=batch_size through the real `dltrain` command: Lightning's finders before training, what they
found applied, plotted and recorded, a resume that does not search again, the batch size bounded by the rows
and the memory cap; Lightning's finder callbacks refused in one line."""

from __future__ import annotations

import pytest
import yaml

from conftest import dltrain_command, only_run_dir, read_metrics, read_results

QUICK = ["trainer=cpu", "model=mlp", "callbacks.early_stopping=null", "trainer.max_epochs=1",
         "trainer.limit_train_batches=5"]
LR = ["tune=lr", "tune.num_training=20", "tune.early_stop_threshold=null", "tune.min_lr=1e-5"]


def _run(tmp_path, *args: str):
    tmp_path.mkdir(exist_ok=True)
    proc = dltrain_command(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc, only_run_dir(tmp_path)


def _stored(run_dir, key: str):
    node = yaml.safe_load((run_dir / "config.yaml").read_text())
    for part in key.split("."):
        node = node[part]
    return node


def test_the_lr_finder_plots_applies_and_records_its_suggestion_and_a_resume_does_not_search_again(tmp_path):
    proc, run_dir = _run(tmp_path, *QUICK, *LR)
    tuned = read_results(run_dir)["tune"]
    assert tuned["range"] == [1e-5, 1.0] and tuned["tried"] == 20 and tuned["configured"] == 1e-3
    assert 1e-5 <= tuned["suggestion"] <= 1.0 and tuned["used"] == tuned["suggestion"] and tuned["applied"]
    assert (run_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and tuned["plot"] == "lr_find.png"
    assert _stored(run_dir, "optimizer.lr") == tuned["used"]  # the record every later command reads
    assert read_metrics(run_dir)[0]["lr"] == pytest.approx(tuned["used"])  # what the training stepped with
    assert (f"tune=lr: Lightning's lr_find tried 20 learning rates from 1e-05 on the training split; suggested "
            f"{tuned['suggestion']:.3g}; training with optimizer.lr={tuned['used']:.3g} (configured 0.001)"
            in proc.stderr)
    plotted = (run_dir / "lr_find.png").stat().st_mtime_ns

    resumed = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "lr_find tried" not in resumed.stderr and "(a resume does not search again)" in resumed.stderr
    again = read_results(run_dir)
    assert again["epochs_run"] == 2 and again["tune"] == tuned | {"searched_again": False}
    assert [row["lr"] for row in read_metrics(run_dir)] == pytest.approx([tuned["used"]] * 2)
    assert (run_dir / "lr_find.png").stat().st_mtime_ns == plotted


def test_an_lr_search_only_reported_leaves_the_run_as_it_would_be_without_it(tmp_path):
    """A/B: tune=lr tune.apply=false trains exactly as the same run without tune (weights, shuffling, metrics)."""
    proc, searched = _run(tmp_path / "a", *QUICK, *LR, "tune.apply=false")
    _, plain = _run(tmp_path / "b", *QUICK)
    tuned = read_results(searched)["tune"]
    assert tuned["used"] == 1e-3 and not tuned["applied"] and tuned["suggestion"] is not None
    assert "training with the configured optimizer.lr=0.001 (tune.apply=false)" in proc.stderr
    assert read_results(searched)["test"] == read_results(plain)["test"]
    assert read_metrics(searched) == [row | {"epoch_time_s": s["epoch_time_s"]}
                                      for row, s in zip(read_metrics(plain), read_metrics(searched))]


@pytest.mark.parametrize("share, bound", [(0.25, "the training rows"), (1e-9, "the memory cap")])
def test_the_batch_size_finder_never_goes_beyond_the_training_rows_or_the_memory_cap(tmp_path, share, bound):
    proc, run_dir = _run(tmp_path, "trainer=cpu", "data=iris", "model=mlp", "trainer.max_epochs=1",
                         "tune=batch_size", f"tune.memory_share={share}")
    results = read_results(run_dir)
    tuned, rows = results["tune"], results["tune"]["cap"]["training_rows"]
    assert tuned["found"] == tuned["used"] == min(rows, tuned["cap"]["memory_rows"]) == tuned["cap"]["rows"]
    assert (tuned["found"] == rows) == (bound == "the training rows")
    assert _stored(run_dir, "data.batch_size") == tuned["used"]
    assert results["epochs_run"] == 1 and read_metrics(run_dir)[0]["step"] == -(-rows // tuned["used"])
    assert f"found {tuned['found']}, capped by {bound} ({rows:,} training rows" in proc.stderr
    assert "1 epochs in" in proc.stderr or "1 epoch in" in proc.stderr


@pytest.mark.parametrize("finder, preset", [("LearningRateFinder", "lr"), ("BatchSizeFinder", "batch_size")])
def test_lightnings_finder_callbacks_are_refused_in_one_line_naming_the_preset(tmp_path, finder, preset):
    proc = dltrain_command("validate", f"+callbacks.find._target_=pytorch_lightning.callbacks.{finder}",
                           cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (f"callbacks.find: Lightning's {finder} runs here as tune={preset} (its search before training, the "
            f"value found recorded in config.yaml and results.json): use tune={preset} instead of the callback"
            in proc.stderr)


def test_an_out_of_memory_error_in_the_batch_search_backs_off_to_the_last_size_that_fit(tmp_path, monkeypatch):
    """Lightning's own back-off after a GPU's out-of-memory error, not broken by dltrain's search: the error is
    raised here on the CPU by any training batch over 32 rows, as CUDA words it."""
    from conftest import train_run
    from dltrain.models.mlp import MLP

    forward = MLP.forward

    def tight(self, x):
        if self.training and len(x) > 32:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)
    monkeypatch.setattr(MLP, "forward", tight)
    results = train_run(tmp_path / "run", ["model=mlp", "trainer.max_epochs=1", "tune=batch_size",
                                           "tune.init_val=4", "data.batch_size=16"])
    assert results["tune"]["found"] == results["tune"]["used"] == 32  # 4, 8, 16, 32 fit; 64 failed
    assert results["status"] == "completed" and results["epochs_run"] == 1
