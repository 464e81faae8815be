"""A 1-D convolutional network over time for sequences: the fully convolutional baseline of Wang et al. 2017
("Time series classification from scratch with deep neural networks", FCN), which finds a pattern wherever
in the sequence it lies."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dltrain.errors import ConfigError
from dltrain.models import layers
from dltrain.config.schema import Activation, Fraction, NonEmptySizes, Sizes

POOLINGS = ("mean", "last", "mean_last")


class Conv1dNet(nn.Module):
    """Conv blocks over time (a 1-D convolution that keeps the length, batch norm, activation), then the
    blocks' output pooled over time (mean: every step's average, as FCN; last: the last step's, what comes
    next; mean_last: both side by side), dropout and dense layers to `num_outputs`.

    Reads (batch, time, features); text comes as its tokens' embeddings, one step per token.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        channels: NonEmptySizes = (128, 256, 128),
        kernel_sizes: NonEmptySizes = (8, 5, 3),
        pooling: Literal["mean", "last", "mean_last"] = "mean",
        hidden_sizes: Sizes = (),
        activation: Activation = "relu",
        dropout: Fraction = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ConfigError(f"model=conv1d reads sequences of (time, features), not inputs of shape "
                              f"{tuple(input_shape)}")
        if len(kernel_sizes) != len(channels):
            raise ConfigError(f"model.kernel_sizes has {len(kernel_sizes)} entries and model.channels "
                              f"{len(channels)}: give one kernel size per conv block")
        if pooling not in POOLINGS:
            raise ConfigError(f"model.pooling={pooling!r}: expected one of {', '.join(POOLINGS)}")
        blocks: list[nn.Module] = []
        in_channels = input_shape[1]
        for out_channels, kernel in zip(channels, kernel_sizes):
            # Padded to keep the length (as padding="same", which warns on FCN's even kernel of 8 at every run).
            blocks += [nn.ConstantPad1d(((kernel - 1) // 2, kernel // 2), 0.0),
                       nn.Conv1d(in_channels, out_channels, kernel, bias=False),
                       nn.BatchNorm1d(out_channels), layers.activation(activation)]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.pooling = pooling
        pooled = in_channels * (2 if pooling == "mean_last" else 1)
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  layers.dense_stack(pooled, list(hidden_sizes), num_outputs, activation, dropout))

    def forward(self, x: Tensor) -> Tensor:
        steps = self.features(x.transpose(1, 2))  # (batch, channels, time)
        mean, last = steps.mean(dim=2), steps[:, :, -1]
        pooled = {"mean": mean, "last": last}.get(self.pooling)
        return self.head(pooled if pooled is not None else torch.cat([mean, last], dim=1))
