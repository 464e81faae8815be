"""Several processes through Lightning's DDP: ddp_cpu (gloo) here, GPU presets where a GPU is present."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import dltrain_command, free_port, only_run_dir, read_metrics, read_results

SMALL = ["trainer.max_epochs=2", "model=mlp", "model.hidden_sizes=[16]"]
TRAIN_ROWS, BATCH = 1293, 64  # digits' training split and the default batch size


def steps_per_epoch(processes: int) -> int:
    """Optimizer steps in an epoch when the training rows are shared by `processes` processes."""
    return -(-(-(-TRAIN_ROWS // processes)) // BATCH)


@pytest.mark.slow
def test_ddp_cpu_trains_in_two_processes_into_one_run_directory(tmp_path):
    from dltrain.commands.evaluate import evaluate

    proc = dltrain_command("trainer=ddp_cpu", "trainer.devices=2", *SMALL, cwd=tmp_path,
                           env={"OMP_NUM_THREADS": None})  # as a user starts it: the ranks share the cores
    assert proc.returncode == 0, proc.stderr
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"device: cpu (2 device(s), {threads} thread(s) each)" in proc.stderr and "Traceback" not in proc.stderr
    run_dir = only_run_dir(tmp_path)
    assert sorted(p.name for p in run_dir.rglob("results.json")) == ["results.json"]
    assert sorted(p.name for p in run_dir.rglob("*.csv")) == ["metrics.csv", "test_predictions.csv"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    metrics = read_metrics(run_dir)
    assert [row["epoch"] for row in metrics] == [0, 1]  # one row per epoch, not one per process
    assert metrics[0]["step"] == steps_per_epoch(2)  # each process trained on half the rows
    results = read_results(run_dir)
    # Test metrics of the whole test split, reduced over both processes: those of a one-process evaluation.
    evaluated = evaluate(str(run_dir), output=str(tmp_path / "eval.json"))["metrics"]
    assert evaluated == pytest.approx(results["test"], rel=1e-5)
    # Validation metrics too: the last epoch's, over the whole validation split, not rank zero's half.
    evaluated = evaluate(str(run_dir / "checkpoints" / "last.ckpt"), "val", str(tmp_path / "val.json"))["metrics"]
    assert evaluated == pytest.approx(results["val"], rel=1e-5)


@pytest.mark.slow
def test_two_torchrun_nodes_on_this_machine_write_one_set_of_outputs(tmp_path):
    port, env = free_port(), {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                          f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
                          "-m", "dltrain", "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", *SMALL],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    run_dir = only_run_dir(tmp_path)  # rank 1 wrote no run directory of its own
    assert read_results(run_dir)["status"] == "completed"
    metrics = read_metrics(run_dir)
    assert len(metrics) == 2 and metrics[0]["step"] == steps_per_epoch(2)
    assert "test_acc" in outputs[0] and "test_acc" not in outputs[1]  # only rank zero reports


@pytest.mark.slow
def test_a_sweep_of_ddp_cpu_jobs_runs_each_in_its_own_directory(tmp_path):
    proc = dltrain_command("-m", "trainer=ddp_cpu", "seed=1,2", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    for job, seed in (("0", 1), ("1", 2)):
        results = read_results(sweep_dir / job)
        assert results["status"] == "completed" and results["seed"] == seed
        assert read_metrics(sweep_dir / job)[0]["step"] == steps_per_epoch(2)
    assert not (tmp_path / "outputs" / "runs").exists()  # the other ranks ran in the jobs' directories


gpus = torch.cuda.device_count()


@pytest.mark.skipif(gpus < 1, reason="needs a GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_one_gpu_trains_at_each_precision(tmp_path, precision):
    proc = dltrain_command("trainer=gpu", f"trainer.precision={precision}", "trainer.max_epochs=3", "model=cnn",
                           cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "device: cuda:0" in proc.stderr
    results = read_results(only_run_dir(tmp_path))
    assert results["status"] == "completed" and results["test"]["test_acc"] > 0.8


@pytest.mark.skipif(gpus < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_matches_an_evaluation(tmp_path):
    from dltrain.commands.evaluate import evaluate

    proc = dltrain_command("trainer=ddp", "trainer.devices=2", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert read_metrics(run_dir)[0]["step"] == steps_per_epoch(2)
    evaluated = evaluate(str(run_dir), output=str(tmp_path / "eval.json"))["metrics"]
    assert evaluated == pytest.approx(results["test"], rel=1e-4)
