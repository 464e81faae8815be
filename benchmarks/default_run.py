"""The default `dltrain` run against a hand-written PyTorch loop of the same model, data and epochs.

Prints both wall times (whole process, and training + test alone), their ratios, the test accuracy
(target: >= 0.97), and how long `dltrain --help` takes (target: < 1 s). Run: python benchmarks/default_run.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def handwritten(epochs: int, seed: int = 42) -> dict:
    """The Keras-style CNN on digits with Adam, a plain loop: train, validate each epoch, keep the best, test."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    started = time.perf_counter()
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    rows = np.arange(len(y))
    rest, test = train_test_split(rows, test_size=0.2, random_state=seed, stratify=digits.target)
    train, val = train_test_split(rest, test_size=0.125, random_state=seed, stratify=digits.target[rest])
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    best, best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        order = torch.as_tensor(train)[torch.randperm(len(train))]
        for batch in order.split(64):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x[val]), y[val]).item()
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    return {"test_acc": accuracy, "train_and_test_s": time.perf_counter() - started}


def timed(command: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr}")
    return time.perf_counter() - started, proc


def main() -> None:
    if sys.argv[1:2] == ["--handwritten"]:
        print(json.dumps(handwritten(int(sys.argv[2]))))
        return
    dltrain = [str(Path(sys.executable).with_name("dltrain"))]
    with tempfile.TemporaryDirectory() as cwd:
        help_times = [timed(dltrain + ["--help"], cwd)[0] for _ in range(3)]
        bare_python = min(timed([sys.executable, "-c", "pass"], cwd)[0] for _ in range(3))
        ours_s, _ = timed(dltrain + ["trainer=cpu"], cwd)
        results = json.loads(next(Path(cwd).glob("outputs/runs/*/results.json")).read_text())
        epochs = results["epochs_run"]
        theirs_s, proc = timed([sys.executable, __file__, "--handwritten", str(epochs)], cwd)
        baseline = json.loads(proc.stdout)

    print(f"dltrain --help: {min(help_times):.2f} s (bare python start {bare_python:.2f} s)  target < 1 s: "
          f"{'PASS' if min(help_times) < 1 else 'FAIL'}")
    print(f"default run: {epochs} epochs of the CNN on digits, CPU")
    print(f"{'':28}{'dltrain':>10}{'hand-written':>14}{'ratio':>8}")
    print(f"{'whole process (s)':28}{ours_s:10.2f}{theirs_s:14.2f}{ours_s / theirs_s:8.2f}")
    train_s = results["wall_time_s"]
    print(f"{'train + test (s)':28}{train_s:10.2f}{baseline['train_and_test_s']:14.2f}"
          f"{train_s / baseline['train_and_test_s']:8.2f}")
    acc = results["test"]["test_acc"]
    print(f"{'test accuracy':28}{acc:10.4f}{baseline['test_acc']:14.4f}")
    print(f"default run test accuracy >= 0.97: {'PASS' if acc >= 0.97 else 'FAIL'}")


if __name__ == "__main__":
    main()
