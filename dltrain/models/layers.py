"""Small building blocks shared by the models."""

from __future__ import annotations

from torch import nn

from dltrain.models import ACTIVATION_NAMES

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def activation(name: str) -> nn.Module:
    """A fresh activation module by its config name."""
    return ACTIVATIONS[name]()


def dense_stack(in_features: int, hidden_sizes: list[int], out_features: int, act: str, dropout: float) -> nn.Sequential:
    """Linear layers through `hidden_sizes`, each followed by the activation and dropout, then an output layer."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_features, size), activation(act), nn.Dropout(dropout)]
        in_features = size
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)
