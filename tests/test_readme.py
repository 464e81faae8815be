"""Every command line of README.md works as written: each is read from the README's bash blocks and run in a
shell, beside the files it names (generated here). Only those that need a GPU, a download, a server, a
cluster or another machine are left out, each for the reason it names. Training lines get a short run
(trainer.max_epochs=2, four training batches an epoch, two search trials) where they do not set their own length,
to keep CI fast."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from command_server import run_command
from datafiles import write_image_folder, write_reviews, write_mnist

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS = {  # a pattern in the line -> why this machine cannot run it
    "trainer=gpu": "a GPU", "trainer=ddp ": "several GPUs", "data.download=true": "a download",
    "http://": "a server", "dltrain-serve ckpt_path": "a server that runs until stopped (tests/test_serve.py runs it)",
    "submitit": "a SLURM cluster", "postgresql://": "a PostgreSQL server (tests/test_search_workers.py starts one)",
    "/mnt/shared/": "a folder the machines share (tests/test_search_workers.py uses a journal file)", "torchrun": "two machines", "python3 -m venv": "CI itself",
}


NOISE = ("Error executing job", "INFO mlflow", "Creating it.", "`DistributedSampler`", "`weights_only`",
         "FutureWarning", "UserWarning")


def readme_lines() -> list[str]:
    """The README's shell command lines (continued lines joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def skipped(line: str) -> str | None:
    return next((why for pattern, why in NEEDS.items() if pattern in line), None)


def shortened(command: str) -> str:
    """The command with a short run's length where it sets none (the keys it names win over nothing it says)."""
    words = command.split()
    if words[0] != "dltrain" or any(w.startswith(("--", "-sc", "resume=", "debug=")) for w in words[1:]):
        return command
    extra = [] if "trainer.max_epochs" in command or "trainer.max_steps" in command else ["trainer.max_epochs=2"]
    if not re.search(r"max_steps|limit_|overfit|accumulate", command):  # a few batches an epoch: the line's keys
        extra.append("trainer.limit_train_batches=4")                 # all act, in a run a CI can afford
    if "hparams_search=" in command:
        extra.append("hydra.sweeper.n_trials=2")
    return " ".join([command, *extra])


def write_user_files(where: Path, line: str) -> None:
    """The files `line` names, as a user would have them."""
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 3))
    if "houses.csv" in line:
        size, rooms = rng.normal(100, 30, n), rng.integers(1, 6, n)
        pd.DataFrame({"size": size, "rooms": rooms, "price": 3 * size + 20 * rooms + rng.normal(0, 10, n)}).to_csv(
            where / "houses.csv", index=False)
    if "cars.csv" in line:
        weight = rng.normal(3000, 500, n)
        pd.DataFrame({"cylinders": rng.choice([4, 6, 8], n), "weight": weight, "origin": rng.choice([1, 2, 3], n),
                      "name": [f"car {i}" for i in range(n)], "mpg": 50 - weight / 100 + rng.normal(0, 2, n)}
                     ).to_csv(where / "cars.csv", index=False)
    if any(name in line for name in ("train.csv", "new.csv", "test.csv")):
        frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": rng.choice(["u", "v"], n),
                              "label": np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")})
        frame.loc[3, "a"] = np.nan
        frame[:150].to_csv(where / "train.csv", index=False)
        frame[150:].to_csv(where / "test.csv", index=False)
        frame.drop(columns="label")[:20].fillna(0.0).to_csv(where / "new.csv", index=False)
    if "table.parquet" in line:
        part = np.where(np.arange(n) % 5 == 0, "test", np.where(np.arange(n) % 5 == 1, "val", "train"))
        pd.DataFrame({"f1": x[:, 0], "f2": x[:, 2], "y": (x[:, 0] > 0).astype(int), "part": part}).to_parquet(
            where / "table.parquet")
    if "photos" in line:
        write_image_folder(where / "photos")
    if "reviews.csv" in line:
        write_reviews(where / "reviews.csv")
    if "data.npz" in line:
        images = rng.random((n, 1, 8, 8)).astype(np.float32)
        np.savez(where / "data.npz", x=images, y=(images.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64))
    if "mnist" in line or "experiment=" in line:  # $HOME/data, and the default data.root (~/.cache/dltrain/data)
        write_mnist(where / "data")
        write_mnist(where / ".cache" / "dltrain" / "data")


def run(line: str, where: Path) -> subprocess.CompletedProcess:
    """The line run by bash; a plain dltrain command (no pipe, redirection, variable or unquoted glob) is split
    into its words as bash would and run as its console script (see command_server: no import of its own)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {
        "HOME": str(where), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    words = None if re.search(r"[|&;<>$`*?\\]", re.sub(r"'[^']*'", "''", line)) else shlex.split(line)
    if words and words[0].startswith("dltrain") and Path(sys.executable).with_name(words[0]).exists():
        forked = run_command(words[0], str(Path(sys.executable).with_name(words[0])), words[1:], where, env, 600)
        if forked is not None:
            return forked
    return subprocess.run(["bash", "-c", line], cwd=where, env=env, capture_output=True, text=True, timeout=600)


_MADE: dict[str, Path] = {}  # a run of each kind, trained once per test process and copied where a line reads one


def with_run(line: str, where: Path, scratch) -> str:
    """`<run>` (and `<other>`) replaced by a run of the kind the line reads: a table for new.csv and test.csv,
    images for photos/. The run is trained once (in a folder from `scratch`, beside the same user files) and
    copied: its data paths are relative, so it reads `where`'s files as its own."""
    if "<run>" not in line:
        return line
    data = ("data=csv data.path=train.csv data.target=label data.missing=impute" if "new.csv" in line or "test.csv" in line
            else "data=image_folder data.path=photos data.image_size=[8,8]" if "photos/" in line else "model=mlp")
    for name in ("made", "other") if "<other>" in line else ("made",):
        if (data, name) not in _MADE:
            home = scratch.mktemp("made")
            write_user_files(home, line)
            proc = run(f"dltrain {data} trainer.max_epochs=2 hydra.run.dir=outputs/runs/{name}", home)
            assert proc.returncode == 0, proc.stderr[-2000:]
            _MADE[data, name] = home / "outputs" / "runs" / name
        shutil.copytree(_MADE[data, name], where / "outputs" / "runs" / name)
    return line.replace("<run>", "made").replace("<other>", "other")


def trains(line: str) -> bool:
    """Whether the line trains (or reads a run trained for it): `pytest -m "not slow"` runs only the others."""
    return not re.search(r"--help|--cfg |-sc |^dltrain validate |^dltrain-runs$", line)


@pytest.mark.parametrize("line", [pytest.param(line, marks=pytest.mark.slow) if trains(line) else line
                                  for line in readme_lines()])
def test_a_readme_line_works_as_written(tmp_path, tmp_path_factory, line):
    why = skipped(line)
    if why and not (why.endswith("GPU") and torch.cuda.is_available() and "several" not in why):
        pytest.skip(f"needs {why}")
    write_user_files(tmp_path, line)
    # `pip install <package> && dltrain ...`: the test extra has installed the package (no network in tests)
    command = shortened(with_run(line.split("&&")[-1].strip() if line.startswith("pip install") else line, tmp_path,
                                 tmp_path_factory))
    if "resume=last" in command:  # continues the newest run: there must be one
        # the newest run, one whose stored early stopping ends its resumed epochs soon (every resumed key is
        # the run's own)
        assert run("dltrain model=mlp trainer.max_epochs=1 callbacks.early_stopping.min_delta=10 "
                   "callbacks.early_stopping.patience=1", tmp_path).returncode == 0
    proc = run(command, tmp_path)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # Library chatter a user cannot act on stays out of the terminal.
    noise = [n for n in NOISE if n in proc.stdout + proc.stderr]
    assert not noise, f"{command}\n{proc.stderr[-3000:]}"

