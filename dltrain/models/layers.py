"""Small building blocks shared by the models."""

from __future__ import annotations

from torch import Tensor, nn

from dltrain.config.schema import ACTIVATION_NAMES

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


NORMS = {"none": lambda size: nn.Identity(), "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class Residual(nn.Module):
    """x + block(x), through a bias-free projection where the block changes the width."""

    def __init__(self, block: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.block = block
        self.skip = nn.Identity() if in_features == out_features else nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


def dense_stack(in_features: int, hidden_sizes: list[int], out_features: int, act: str, dropout: float,
                norm: str = "none", residual: bool = False) -> nn.Sequential:
    """Linear layers through `hidden_sizes`, each followed by the normalization (none, batch or layer), the
    activation and dropout, and with residual=True added to its input; then an output layer."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        block = [nn.Linear(in_features, size), *([NORMS[norm](size)] if norm != "none" else []), activation(act),
                 nn.Dropout(dropout)]
        layers += [Residual(nn.Sequential(*block), in_features, size)] if residual else block
        in_features = size
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)
