"""Multi-layer perceptron; with no hidden layers it is linear, logistic or softmax regression."""

from __future__ import annotations

import math

from torch import Tensor, nn

from dltrain.models.layers import dense_stack
from dltrain.config.schema import Activation, Fraction, Norm, Sizes


class MLP(nn.Module):
    """Flattens any input and maps it through dense layers to `num_outputs`; each hidden layer can be normalized
    (norm=batch or layer, before its activation) and residual (its input added to its output)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        hidden_sizes: Sizes = (128, 64),
        activation: Activation = "relu",
        dropout: Fraction = 0.0,
        norm: Norm = "none",
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), dense_stack(math.prod(input_shape), list(hidden_sizes), num_outputs,
                                                           activation, dropout, norm, residual))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
