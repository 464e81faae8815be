"""What a run shows and leaves: plots, loggers, the terminal, completion, and how a bug is reported."""

from __future__ import annotations

import os
import pty
import select
import struct
import sys
from pathlib import Path

import pytest

from conftest import dltrain_command, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its header."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("overrides, plots", [
    (["model=softmax"], ["curves.png", "confusion_matrix.png"]),
    (["data=linear", "model=linear"], ["curves.png", "predictions.png"]),
])
def test_plots_are_drawn_from_the_run_files_and_can_be_drawn_again(run, overrides, plots):
    from dltrain.plots import plot_run

    run_dir, results = run(overrides + ["trainer.max_epochs=3"])
    assert results["plots"] == plots
    for name in plots:
        width, height = png_size(run_dir / name)
        assert 400 <= width <= 2000 and 300 <= height <= 2000
        (run_dir / name).unlink()
    assert [p.name for p in plot_run(run_dir)] == plots  # from metrics.csv and test_predictions.csv alone
    assert all((run_dir / name).read_bytes().startswith(PNG_MAGIC) for name in plots)


def test_the_confusion_matrix_shows_each_count_that_is_not_zero_in_its_cell():
    import pandas as pd

    from dltrain.plots import confusion_figure

    predictions = pd.DataFrame({"true": ["cat"] * 5 + ["dog"] * 3 + ["10"] * 2 + ["9"],
                                "prediction": ["cat"] * 4 + ["dog"] + ["dog"] * 3 + ["10", "9"] + ["9"]})
    ax = confusion_figure(predictions).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["9", "10", "cat", "dog"]  # numbers in numeric order
    shown = sorted((round(t.get_position()[1]), round(t.get_position()[0]), t.get_text())
                   for t in ax.texts if t.get_visible())
    assert shown == [(0, 0, "1"), (1, 0, "1"), (1, 1, "1"), (2, 2, "4"), (2, 3, "1"), (3, 3, "3")]
    assert ax.get_title() == "test confusion matrix (11 rows, accuracy 0.818)"


def test_test_predictions_hold_the_true_and_predicted_class_of_every_test_row(run):
    import pandas as pd

    run_dir, results = run(["model=softmax", "trainer.max_epochs=2"])
    table = pd.read_csv(run_dir / "test_predictions.csv")
    assert len(table) == 360 and list(table.columns[:2]) == ["true", "prediction"]
    assert (table["true"] == table["prediction"]).mean() == pytest.approx(results["test"]["test_acc"], abs=1e-6)
    probabilities = table[[f"prob_{i}" for i in range(10)]]
    assert probabilities.sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_tensorboard_logs_every_epoch_where_the_results_say(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, results = run(["model=softmax", "trainer.max_epochs=3", "logger=tensorboard"])
    where = Path(results["loggers"]["tensorboard"])
    assert where == (run_dir / "tensorboard").resolve()
    events = EventAccumulator(str(where))
    events.Reload()
    losses = [event.value for event in events.Scalars("val_loss")]
    assert losses == pytest.approx([row["val_loss"] for row in read_metrics(run_dir)], rel=1e-6)


def test_mlflow_tracks_every_epoch_in_a_local_store_where_the_results_say(run, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, results = run(["model=softmax", "trainer.max_epochs=3", "logger=mlflow", f"logger.tracking_uri={store}"])
    where = results["loggers"]["mlflow"]
    assert where.startswith(store)
    run_id = where.split("run ")[-1].rstrip(")")
    client = MlflowClient(tracking_uri=store)
    tracked = client.get_run(run_id)
    assert tracked.info.run_name == run_dir.name
    history = [m.value for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]
    assert history == pytest.approx([row["val_loss"] for row in read_metrics(run_dir)], rel=1e-6)


def test_a_terminal_gets_a_live_progress_bar(tmp_path):
    """Under a terminal the bar redraws in place; piped output (see test_cli) has one line per epoch."""
    script = Path(sys.executable).with_name("dltrain")
    pid, fd = pty.fork()
    if pid == 0:  # the child: dltrain with a terminal as its output
        os.chdir(tmp_path)
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.execv(str(script), [str(script), "trainer=cpu", "trainer.max_epochs=2", "model=softmax"])
    output = b""
    while select.select([fd], [], [], 300)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    text = output.decode(errors="replace")
    assert "Epoch 1/1" in text or "Epoch 0/1" in text  # Lightning's rich progress bar
    assert text.count("\r") > 2 and "test_acc" in text


def test_tab_completion_offers_groups_options_and_keys(tmp_path):
    def complete(line: str) -> list[str]:
        proc = dltrain_command("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert "model=" in complete("dltrain mod")
    assert "model=lstm" in complete("dltrain model=")
    assert "optimizer.lr=" in complete("dltrain optimizer.l")
    assert "logger=tensorboard" in complete("dltrain logger=")


def test_an_internal_bug_prints_a_traceback_and_exits_with_2(tmp_path, monkeypatch, capsys):
    import dltrain.train
    from dltrain import cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(dltrain.train, "train", broken)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["dltrain", "trainer=cpu"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "ZeroDivisionError: a bug" in stderr
    assert "internal error (a bug, not your input)" in stderr


@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_logger_without_its_package_is_refused_before_training(tmp_path, monkeypatch, capsys, logger, package):
    import importlib.util

    from dltrain import cli

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("tensorboard", "tensorboardX", "mlflow")
                        else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it to 1 for Hydra; monkeypatch restores it after
    monkeypatch.setattr(sys, "argv", ["dltrain", "trainer=cpu", f"logger={logger}"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr == (f"dltrain: error: logger={logger} needs the {package} package, which is not installed: "
                      f'pip install "dltrain[{logger}]" (or choose logger=null)')
    assert not list(tmp_path.glob("outputs/runs/*/results.json"))
