"""The baselines: what a user would write by hand in plain PyTorch, to compare dltrain against."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn


def train_epochs(model: nn.Module, loss_fn: nn.Module, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                 epochs: int, batch_size: int, lr: float = 1e-3) -> list[float]:
    """A plain loop over in-memory tensors: Adam, shuffled slices, a validation loss per epoch. Epoch seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    (x, y), (x_val, y_val) = train, val
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(y)).split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(x[batch]).squeeze(-1), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            sum(loss_fn(model(xb).squeeze(-1), yb).item() for xb, yb in zip(x_val.split(batch_size), y_val.split(batch_size)))
        seconds.append(time.perf_counter() - started)
    return seconds


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
