"""RunDir names every file a run writes: the files a trained run leaves are exactly those it names."""

from __future__ import annotations

from dltrain.rundir.layout import RunDir


def test_every_file_a_run_writes_is_one_rundir_names(run):
    run_dir, results = run(["data=iris", "model=mlp", "trainer.max_epochs=1"])
    layout = RunDir(run_dir)
    named = {layout.results, layout.config, layout.metrics, layout.best_checkpoint, layout.last_checkpoint,
             layout.model_summary, layout.test_predictions, layout.plot("curves"), layout.plot("confusion_matrix"),
             layout.plot("calibration"), layout.model_card}
    written = {path for path in run_dir.rglob("*") if path.is_file()}
    assert written == named
    assert layout.best_checkpoint == run_dir / results["best_checkpoint"]
    assert RunDir.of_checkpoint(run_dir) == (layout.best_checkpoint, layout)
    assert RunDir.of_checkpoint(layout.last_checkpoint) == (layout.last_checkpoint, layout)
