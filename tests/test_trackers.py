"""Trackers (logger=wandb, logger=comet) offline with every file in the run folder, and a run's name and tags in its
folder, results.json, its logger and dltrain-runs, through the real commands."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from conftest import dltrain_command, only_run_dir, read_metrics, read_results

# Nothing that would take a tracker online: each runs as a user with no key and no server would run it.
OFFLINE = {name: None for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE", "COMET_API_KEY",
                                   "COMET_URL_OVERRIDE", "COMET_START_ONLINE")}
TINY = ["trainer=cpu", "trainer.max_epochs=2", "data=iris", "model=softmax", "data.batch_size=32"]


def val_losses(run_dir: Path) -> list[float]:
    return [row["val_loss"] for row in read_metrics(run_dir)]


def check_wandb(where: Path, run_dir: Path) -> None:
    """The offline run's record (wandb's own binary log) holds the run's name, tags and logged metrics."""
    record = next(where.glob("run-*.wandb")).read_bytes()
    assert b"baseline" in record and b"val_loss" in record and b"tag-b" in record


def check_comet(where: Path, run_dir: Path) -> None:
    """The offline archive comet upload would send: the name, the tags and each epoch's val_loss."""
    with zipfile.ZipFile(where) as archive:  # results.json names the archive itself
        experiment = json.loads(archive.read("experiment.json"))
        messages = [json.loads(line) for line in archive.read("messages.json").decode().splitlines()]
    assert sorted(experiment["tags"]) == ["a", "tag-b"]  # comet keeps them as a set
    others = {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}
    assert others["Name"] == "baseline"
    logged = [m["payload"]["metric"]["metricValue"] for m in messages
              if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "val_loss"]
    assert [float(v) for v in logged] == pytest.approx(val_losses(run_dir), rel=1e-6)


# tracker -> the check of what it wrote
TRACKERS = {"wandb": check_wandb, "comet": check_comet}


@pytest.mark.parametrize("tracker", TRACKERS)
def test_each_tracker_writes_offline_into_the_run_folder_and_results_say_where(tmp_path, tracker):
    check = TRACKERS[tracker]
    proc = dltrain_command(*TINY, "name=baseline", "tags=[a,tag-b]", f"logger={tracker}", cwd=tmp_path, env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # no wandb/ or comet/ where it ran
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert run_dir.name.endswith("_baseline") and results["name"] == "baseline" and results["tags"] == ["a", "tag-b"]
    where = Path(results["loggers"][tracker].split(" (")[0])
    assert where.is_relative_to(run_dir.resolve()) and where.exists()
    assert f"logger={tracker}: offline (" in proc.stderr + proc.stdout
    check(where, run_dir)


def table_rows(stdout: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


def test_dltrain_runs_filters_by_name_and_tag_and_fits_80_columns(tmp_path):
    for name, tags in (("baseline", "[a,b]"), ("wider", "[b]"), (None, None)):
        labels = [f"name={name}", f"tags={tags}"] if name else []
        proc = dltrain_command(*TINY, "trainer.max_epochs=1", *labels, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {read_results(run)["name"]: run for run in (tmp_path / "outputs" / "runs").iterdir()}
    assert runs["baseline"].name.endswith("_baseline") and runs["wider"].name.endswith("_wider")
    narrow = {"COLUMNS": "80"}
    shown = dltrain_command(cwd=tmp_path, env=narrow, script="dltrain-runs")
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    rows = table_rows(shown.stdout)
    assert len(rows) == 3 and all(len(row) == len(rows[0]) for row in rows)  # one line a run: no cell wrapped
    assert "not shown at 80 columns: " in shown.stdout
    for asked, names in (("tag=b", {"baseline", "wider"}), ("tag=a", {"baseline"}), ("name=wid*", {"wider"}),
                         ("name=baseline", {"baseline"})):
        proc = dltrain_command(asked, cwd=tmp_path, env={"COLUMNS": "250"}, script="dltrain-runs")
        assert proc.returncode == 0, proc.stderr
        listed = {row[0] for row in table_rows(proc.stdout)}
        assert listed == {f"runs/{runs[name].name}" for name in names}, (asked, proc.stdout)
        assert f"with {asked}" in proc.stdout
    wide = table_rows(dltrain_command("name=baseline", cwd=tmp_path, env={"COLUMNS": "250"},
                                      script="dltrain-runs").stdout)[0]
    assert "baseline" in wide and "a,b" in wide
    none = dltrain_command("tag=c", cwd=tmp_path, script="dltrain-runs")
    assert none.returncode == 0 and none.stdout.strip() == "no runs under outputs with tag=c (of 3)"
