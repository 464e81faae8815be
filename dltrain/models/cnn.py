"""Convolutional network for images, shaped after the classic Keras MNIST example."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dltrain.errors import ConfigError
from dltrain.models import layers
from dltrain.config.schema import Activation, Fraction, NonEmptySizes, PositiveInt, Sizes


class CNN(nn.Module):
    """Conv blocks (conv, activation, max-pool), flatten, then dense layers with dropout to `num_outputs`."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        channels: NonEmptySizes = (32, 64),
        kernel_size: PositiveInt = 3,
        padding: Literal["same", "valid"] = "same",
        pool_size: PositiveInt = 2,
        hidden_sizes: Sizes = (128,),
        activation: Activation = "relu",
        dropout: Fraction = 0.5,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = input_shape[0]
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
                layers.activation(activation),
                nn.MaxPool2d(pool_size),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            try:
                flat = self.features(torch.zeros(1, *input_shape)).shape[1]
            except RuntimeError as exc:
                raise ConfigError(
                    f"model=cnn shrinks images of size {tuple(input_shape[1:])} to nothing with "
                    f"{len(channels)} conv blocks (padding={padding}, pool_size={pool_size}); "
                    "use fewer model.channels or model.padding=same"
                ) from exc
        # One hidden layer gives Keras' head: dense, activation, dropout, output layer.
        self.head = layers.dense_stack(flat, list(hidden_sizes), num_outputs, activation, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
