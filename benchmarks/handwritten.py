"""The baselines: what a user would write by hand in plain PyTorch, to compare dltrain against."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import Tensor, nn


def train_epochs(model: nn.Module, loss_fn: nn.Module, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                 epochs: int, batch_size: int, lr: float = 1e-3, records: Path | None = None) -> list[float]:
    """A plain loop over in-memory tensors: Adam, shuffled slices, a validation loss per epoch. Epoch seconds.

    With `records` (a folder), each epoch also does by hand what a dltrain epoch does: the epoch's loss,
    accuracy and macro F1 (binary: accuracy and AUROC) over the training batches' outputs and over validation,
    a row of metrics.csv, and checkpoints of model and optimizer (last.ckpt every epoch, best.ckpt when the
    validation loss improves), each written to a temporary file and renamed into place.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    (x, y), (x_val, y_val) = train, val
    best, seconds = float("inf"), []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        outputs = []
        for batch in torch.randperm(len(y)).split(batch_size):
            optimizer.zero_grad()
            out = model(x[batch]).squeeze(-1)
            loss_fn(out, y[batch]).backward()
            optimizer.step()
            if records is not None:
                outputs.append((out.detach(), y[batch]))
        model.eval()
        with torch.no_grad():
            val_outputs = [(model(xb).squeeze(-1), yb) for xb, yb in zip(x_val.split(batch_size), y_val.split(batch_size))]
            val_loss = sum(loss_fn(out, yb).item() * len(yb) for out, yb in val_outputs) / len(y_val)
        if records is not None:
            row = {"epoch": epoch, **_epoch_figures("train", outputs, loss_fn), **_epoch_figures("val", val_outputs, loss_fn)}
            with (records / "metrics.csv").open("a") as handle:
                handle.write(",".join(f"{value}" for value in row.values()) + "\n")
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            _save(state, records / "last.ckpt")
            if val_loss < best:
                best = val_loss
                _save(state, records / "best.ckpt")
        seconds.append(time.perf_counter() - started)
    return seconds


def _epoch_figures(stage: str, outputs: list[tuple[Tensor, Tensor]], loss_fn: nn.Module) -> dict[str, float]:
    """Loss, accuracy and macro F1 (binary: accuracy and AUROC) of a stage's (logits, targets) batches."""
    logits, targets = torch.cat([out for out, _ in outputs]), torch.cat([yb for _, yb in outputs])
    figures = {f"{stage}_loss": loss_fn(logits, targets).item()}
    if logits.dim() == 1:  # binary: one logit a row
        positive = targets > 0.5
        ranks = logits.argsort().argsort().double() + 1  # the AUROC as the Mann-Whitney U statistic
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        auroc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)
        return figures | {f"{stage}_acc": ((logits > 0) == positive).float().mean().item(), f"{stage}_auroc": float(auroc)}
    classes = logits.shape[1]
    confusion = torch.bincount(targets * classes + logits.argmax(1), minlength=classes * classes).view(classes, classes)
    hits = confusion.diag().float()
    f1 = (2 * hits / (confusion.sum(0) + confusion.sum(1)).clamp(min=1)).mean()
    return figures | {f"{stage}_acc": (hits.sum() / len(targets)).item(), f"{stage}_f1": f1.item()}


def _save(state: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def digits_cnn_script(epochs: int, seed: int = 42) -> dict:
    """The whole default run by hand: load digits, split, train the Keras-style CNN with Adam, keep the best
    epoch by validation loss, test it."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

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


if __name__ == "__main__":  # python benchmarks/handwritten.py EPOCHS: the default run's baseline, as its own process
    import json
    import sys

    print(json.dumps(digits_cnn_script(int(sys.argv[1]))))
