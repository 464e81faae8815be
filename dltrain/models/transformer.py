"""A Transformer encoder (torch.nn.TransformerEncoder) for sequences, images read row by row, and tables.

Sequences are one token per step; an image is one token per row (its pixels of every channel); a table is
one token per feature, each feature scaled by a learned vector of its own plus a learned bias (the
FT-Transformer's numerical tokenizer), so no positions are added to a table's tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from dltrain.errors import ConfigError
from dltrain.config.schema import Fraction, PositiveInt


class Transformer(nn.Module):
    """Tokens, then positions (learned or sinusoidal), `layers` pre-norm encoder layers, and a head on the class
    token (pooling=cls), the mean of the tokens (mean) or the last token (last: a forecast's latest step);
    auto is last for sequences, cls for tables and images."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, *, d_model: PositiveInt = 64,
                 heads: PositiveInt = 4, layers: PositiveInt = 2, ff_size: PositiveInt = 128, dropout: Fraction = 0.0,
                 positions: Literal["sinusoidal", "learned"] = "sinusoidal",
                 pooling: Literal["auto", "cls", "mean", "last"] = "auto") -> None:
        super().__init__()
        if d_model % heads:
            raise ConfigError(f"model.d_model={d_model} does not split into model.heads={heads}: give a d_model "
                              f"that is a multiple of heads, e.g. {heads * max(1, round(d_model / heads))}")
        self.table = len(input_shape) == 1
        if pooling == "auto":  # a sequence's latest step predicts what comes next; a table or image has no last
            pooling = "last" if len(input_shape) == 2 else "cls"
        if self.table:
            tokens = input_shape[0]
            self.scale = nn.Parameter(torch.randn(tokens, d_model) / math.sqrt(d_model))
            self.shift = nn.Parameter(torch.zeros(tokens, d_model))
        else:
            tokens, features = (input_shape[1], input_shape[0] * input_shape[2]) if len(input_shape) == 3 else input_shape
            self.embed = nn.Linear(features, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        length = tokens + (pooling == "cls")
        if self.table:
            self.register_buffer("position", torch.zeros(1, length, d_model), persistent=False)
        elif positions == "learned":
            self.position = nn.Parameter(torch.randn(1, length, d_model) * 0.02)
        else:
            self.register_buffer("position", sinusoidal(length, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_size, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, num_outputs))
        self.pooling = pooling

    def forward(self, x: Tensor) -> Tensor:
        if self.table:  # (batch, features) -> one token per feature
            tokens = x.unsqueeze(-1) * self.scale + self.shift
        else:
            if x.dim() == 4:  # (batch, channels, height, width) -> (batch, height, channels * width)
                x = x.permute(0, 2, 1, 3).flatten(2)
            tokens = self.embed(x)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        encoded = self.encoder(tokens + self.position)
        pooled = {"cls": lambda: encoded[:, 0], "mean": lambda: encoded.mean(dim=1), "last": lambda: encoded[:, -1]}
        return self.head(pooled[self.pooling]())


def sinusoidal(length: int, d_model: int) -> Tensor:
    """The original Transformer's fixed positions, (1, length, d_model)."""
    position = torch.arange(length).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table.unsqueeze(0)
