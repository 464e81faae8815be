"""Shared helpers: train in-process from overrides, and run the real `dltrain` command."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from command_server import run_command
from dltrain.config.compose import load_config

# pytest-xdist runs a worker per core: each trains (in-process, and in the commands command_server forks) on
# its share of the cores, as dltrain's own parallel jobs do; threads beyond the cores would make every
# worker wait on the others' spinning threads.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
TEST_THREADS = max(1, len(os.sched_getaffinity(0)) // WORKERS)
os.environ.setdefault("DLTRAIN_TEST_THREADS", str(TEST_THREADS))
if WORKERS > 1:  # and the commands started as processes of their own (a test that counts threads unsets it)
    os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))
torch.set_num_threads(TEST_THREADS)

# Small and fast on the CPU: the CPU trainer, no early stop unless a test asks for it.
FAST = ["trainer=cpu", "trainer.max_epochs=2"]


def train_run(run_dir: Path, overrides: list[str]) -> dict:
    """Compose the config like the command does and train in this process; returns results.json."""
    from dltrain.training.train import train

    return train(load_config(FAST + overrides), run_dir)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with (Path(run_dir) / "metrics.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def dltrain_command(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300, script: str = "dltrain"
                    ) -> subprocess.CompletedProcess:
    """Run the installed `dltrain` console script (or `script`, such as dltrain-runs) in `cwd`, capturing its
    output (not a terminal)."""
    installed = Path(sys.executable).with_name(script)
    command = [str(installed)] if installed.exists() or script != "dltrain" else [sys.executable, "-m", "dltrain"]
    full_env = {k: v for k, v in ({k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | (env or {})).items()
                if v is not None}  # env: a value of None leaves the variable out
    forked = run_command(script, command[0], list(args), cwd, full_env, timeout)  # see command_server
    if forked is not None:
        return forked
    return subprocess.run(
        command + list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def only_run_dir(cwd: Path) -> Path:
    """The single run directory a `dltrain` command made under cwd/outputs/runs."""
    runs = list((Path(cwd) / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def run(tmp_path):
    """Train in-process into a fresh run directory: run(overrides) -> (run_dir, results)."""
    counter = iter(range(1000))

    def _run(overrides: list[str]) -> tuple[Path, dict]:
        run_dir = tmp_path / f"run{next(counter)}"
        return run_dir, train_run(run_dir, overrides)

    return _run


def pytest_collection_modifyitems(config, items):
    """The slow tests first: pytest-xdist hands tests out in collection order, so the long ones start while
    short ones are left to fill the other workers' time, instead of one running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise
