"""What a run shows and leaves: plots, loggers, the terminal, completion, and how a bug is reported."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

from conftest import dltrain_command, read_metrics, read_results

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
    from dltrain.report.plots import plot_run

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

    from dltrain.report.plots import confusion_figure

    predictions = pd.DataFrame({"true": ["cat"] * 5 + ["dog"] * 3 + ["10"] * 2 + ["9"],
                                "prediction": ["cat"] * 4 + ["dog"] + ["dog"] * 3 + ["10", "9"] + ["9"]})
    ax = confusion_figure(predictions).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["9", "10", "cat", "dog"]  # numbers in numeric order
    shown = sorted((round(t.get_position()[1]), round(t.get_position()[0]), t.get_text())
                   for t in ax.texts if t.get_visible())
    assert shown == [(0, 0, "1"), (1, 0, "1"), (1, 1, "1"), (2, 2, "4"), (2, 3, "1"), (3, 3, "3")]
    assert ax.get_title() == "test confusion matrix (11 rows, accuracy 0.818)"


def test_the_curves_have_a_panel_for_every_logged_metric_with_the_best_epoch_marked():
    import pandas as pd

    from dltrain.report.plots import curves_figure

    metrics = pd.DataFrame({"epoch": [0, 1, 2], "step": [5, 10, 15], "train_loss": [1.0, 0.8, 0.7],
                            "train_acc": [0.5, 0.6, 0.7], "train_f1": [0.4, 0.5, 0.6], "val_loss": [0.9, 0.7, 0.75],
                            "val_acc": [0.5, 0.7, 0.65], "val_f1": [0.45, 0.6, 0.6], "val_auroc": [0.6, 0.7, 0.7],
                            "lr": [1e-3] * 3, "epoch_time_s": [0.1] * 3})
    axes = curves_figure(metrics, best_epoch=2, monitor="val_loss").axes
    assert [ax.get_title() for ax in axes] == ["loss per epoch", "accuracy per epoch", "macro F1 per epoch",
                                               "auroc per epoch"]
    for ax in axes:
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3]  # epochs counted from 1
        marks = [line for line in ax.lines if line.get_label() == "best epoch (val_loss)"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
    one = curves_figure(metrics[:1]).axes[0]
    assert one.get_xlim() == (0.5, 1.5) and [t for t in one.get_xticks() if 0.5 <= t <= 1.5] == [1]


def test_regression_predictions_name_the_target_and_a_sweep_shows_whole_labels_and_ranks_within_a_task(tmp_path):
    import pandas as pd

    from dltrain.report.plots import regression_figure, sweep_figure
    from dltrain.sweeps.summary import sort_rows

    ax = regression_figure(pd.DataFrame({"true": [1.0, 2.0, 3.0], "prediction": [1.1, 1.9, 3.2]}), "price").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("true price", "predicted price")
    many = pd.DataFrame({"true": np.arange(60_000.0), "prediction": np.arange(60_000.0) + 1})
    big = regression_figure(many, "price").axes[0]  # a seeded sample drawn, and said; R² of every row
    assert len(big.collections[0].get_offsets()) == 50_000
    assert big.get_legend().get_texts()[0].get_text() == "50,000 of 60,000 test rows" and "R² 1.000" in big.get_title()
    long = "optimizer.lr=0.001 model.hidden_sizes=[256,256,128] model.dropout=0.25 data.batch_size=128"
    rows = [{"job": i, "overrides": [f"data={data}", long.replace("0.25", str(i))], "task": task,
             "status": "completed", "best_val_loss": loss, "run_dir": str(tmp_path / str(i))}
            for i, (data, task, loss) in enumerate([("iris", "multiclass", 0.30), ("diabetes", "regression", 0.20),
                                                    ("wine", "multiclass", 0.10)])]
    ranked = sort_rows(rows, "val_loss", "min")
    assert [r["job"] for r in ranked] == [2, 0, 1]  # classification first (the first job's task), then regression
    bars = sweep_figure(ranked, "val_loss").axes[1]
    labels = [t.get_text() for t in bars.get_yticklabels()]
    assert all("…" not in label and "batch_size=128" in label.replace("\n", " ").replace("   ", "")
               for label in labels)
    assert [p.get_facecolor()[:3] for p in bars.patches][0] == [p.get_facecolor()[:3] for p in bars.patches][2]
    assert "within each task" in bars.get_title()


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


@pytest.mark.slow
def test_mlflow_tracks_every_epoch_in_a_local_store_where_the_results_say(run, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, results = run(["model=softmax", "trainer.max_epochs=3", "logger=mlflow", f"logger.tracking_uri={store}",
                            "name=baseline", "tags=[a,b]"])
    where = results["loggers"]["mlflow"]
    assert where.startswith(store)
    run_id = where.split("run ")[-1].rstrip(")")
    client = MlflowClient(tracking_uri=store)
    tracked = client.get_run(run_id)
    assert tracked.info.run_name == "baseline" and {"a", "b"} <= set(tracked.data.tags)
    history = [m.value for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]
    assert history == pytest.approx([row["val_loss"] for row in read_metrics(run_dir)], rel=1e-6)


def on_a_terminal(tmp_path: Path, *args: str) -> str:
    """What `dltrain *args` prints on a terminal (a pseudo-terminal as its stdout and stderr)."""
    script = Path(sys.executable).with_name("dltrain")
    pid, fd = pty.fork()
    if pid == 0:  # the child: dltrain with a terminal as its output
        os.chdir(tmp_path)
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.execv(str(script), [str(script), *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 columns wide
    output = b""
    while select.select([fd], [], [], 300)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, output.decode(errors="replace")[-3000:]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # colours and cursor moves


def test_a_terminal_shows_a_bar_apart_from_the_epoch_lines_counted_from_1_and_says_why_the_run_stopped(tmp_path):
    text = on_a_terminal(tmp_path, "trainer=cpu", "trainer.max_epochs=5", "model=softmax",
                         "callbacks.early_stopping.min_delta=10", "callbacks.early_stopping.patience=1")
    segments = [part.strip() for line in text.split("\n") for part in line.split("\r") if part.strip()]
    epoch_lines = [part for part in segments if "val_loss=" in part]
    assert [line.split()[:2] for line in epoch_lines] == [["epoch", "1/5"], ["epoch", "2/5"]]  # nothing glued on
    bars = [part for part in segments if part.startswith("epoch 1/5:") and "it/s" in part]
    assert bars, segments  # Lightning's tqdm bar, its epoch counted as the lines count it
    assert "Epoch 0" not in text
    # The set-up in a few lines: the presets, the keys set, the model's size and shapes; no tree, no layer table.
    assert ("presets: data=digits model=softmax optimizer=adam scheduler=none loss=auto trainer=cpu "
            "callbacks=default tuning=softmax_adam") in segments  # conf/tuning's settings for softmax with adam
    assert "set: trainer.max_epochs=5 callbacks.early_stopping.min_delta=10 callbacks.early_stopping.patience=1" \
        in segments
    assert any(s.startswith("model: softmax, 650 parameters (650 trainable), input (1, 8, 8) -> 10 output(s)")
               for s in segments)
    assert "├──" not in text and "Trainable params" not in text
    # Early stopping says that it stopped the run, and why; the best epoch is named.
    run_dir = next(tmp_path.glob("outputs/runs/*"))
    results = json.loads((run_dir / "results.json").read_text())
    # (the best checkpoint follows val_loss with no min_delta: epoch 2 improved on epoch 1)
    assert results["early_stopped"] is True and results["epochs_run"] == 2 and results["best_epoch"] == 2
    assert results["stop_reason"] == ("val_loss did not improve by more than 10 in 1 epoch(s) "
                                      "(callbacks.early_stopping.patience)")
    assert f"early stopping ended the run after epoch 2 of 5: {results['stop_reason']}" in segments
    assert any(s.startswith("2 epochs in ") and s.endswith(f"best val_loss {results['best_val']:.4f} at epoch 2")
               for s in segments)


def test_verbose_shows_the_whole_config_and_the_layer_table_which_the_run_directory_always_holds(tmp_path):
    """(Without verbose, the terminal test above finds neither.)"""
    loud = dltrain_command("trainer=cpu", "trainer.max_epochs=1", "model=softmax", "verbose=true", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr[-2000:]
    text = loud.stdout + loud.stderr
    assert "Trainable params" in text and "├── max_epochs: 1" in text and "_target_" not in text
    run_dir = next(tmp_path.glob("outputs/runs/*"))
    assert "Trainable params" in (run_dir / "model_summary.txt").read_text()
    assert "max_epochs: 1" in (run_dir / "config.yaml").read_text()


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
    import dltrain.training.train
    from dltrain.commands import train as cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(dltrain.training.train, "train", broken)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["dltrain", "trainer=cpu"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "ZeroDivisionError: a bug" in stderr
    assert "internal error (a bug, not your input)" in stderr


@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb"),
                                             ("comet", "comet_ml")])
def test_a_logger_without_its_package_is_refused_before_training(tmp_path, monkeypatch, capsys, logger, package):
    import importlib.util

    from dltrain.commands import train as cli

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("tensorboard", "tensorboardX", "mlflow",
                                                                        "wandb", "comet_ml")
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


def test_dltrain_runs_lists_runs_newest_first_and_compares_two(tmp_path):
    for lr in ("0.01", "0.1"):
        proc = dltrain_command("trainer=cpu", "trainer.max_epochs=1", "model=softmax", f"optimizer.lr={lr}",
                               cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = sorted(tmp_path.glob("outputs/runs/*"))
    killed = tmp_path / "outputs" / "runs" / "killed"  # a run whose process died: its record still says running
    killed.mkdir()
    (killed / "results.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 1}))
    env = {"COLUMNS": "250"}
    proc = dltrain_command("outputs", cwd=tmp_path, env=env, script="dltrain-runs")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["runs/killed", f"runs/{second.name}", f"runs/{first.name}"]
    header = [cell.strip() for cell in next(line for line in proc.stdout.splitlines() if line.startswith("┃"))
              .split("┃")[1:-1]]
    cells = dict(zip(header, (cell.strip() for cell in rows[1].split("│")[1:-1])))
    results = read_results(second)
    assert cells == {"run": f"runs/{second.name}", "started": cells["started"], "status": "completed",
                     "model": "softmax", "data": f"digits {results['data_fingerprint']['sha256'][:8]}",
                     "set": "trainer=cpu trainer.max_epochs=1 model=softmax optimizer.lr=0.1", "epochs": "1",
                     "best val_loss": f"{results['best_val']:.4f}", "test acc": f"{results['test']['test_acc']:.4f}"}
    assert rows[0].split("│")[3].strip() == "stopped"
    proc = dltrain_command(str(first), str(second), cwd=tmp_path, env=env, script="dltrain-runs")
    assert proc.returncode == 0, proc.stderr
    compared = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                                  for line in proc.stdout.splitlines() if line.startswith("│"))}
    assert compared["optimizer.lr"] == ["0.01", "0.1"] and "model.name" not in compared  # only what differs
    assert compared["test.test_acc"] == [f"{read_results(run)['test']['test_acc']:.4f}" for run in (first, second)]
    proc = dltrain_command("nowhere", cwd=tmp_path, script="dltrain-runs")
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dltrain-runs: error: nowhere: no such folder (give the outputs folder, or two run folders to compare)")
