"""Recurrent networks (RNN, LSTM, GRU) that classify or regress from the last state of a sequence."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from dltrain.errors import ConfigError
from dltrain.models.layers import dense_stack
from dltrain.config.schema import Activation, Fraction, PositiveInt, Sizes

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceModel(nn.Module):
    """Reads (time, features) sequences; images (channels, height, width) are read row by row.

    A table of F features is read as a sequence of F steps of one value each.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        hidden_size: PositiveInt = 64,
        num_layers: PositiveInt = 1,
        bidirectional: bool = False,
        head_sizes: Sizes = (),
        activation: Activation = "relu",
        dropout: Fraction = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r} is not a recurrent cell: expected one of {', '.join(CELLS)}")
        if len(input_shape) == 3:  # image: one step per row, the row's pixels of every channel as features
            channels, _, width = input_shape
            step_features = channels * width
        elif len(input_shape) == 2:
            step_features = input_shape[1]
        else:
            step_features = 1
        self.input_shape = tuple(input_shape)
        self.rnn = CELLS[cell](
            step_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        state = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), dense_stack(state, list(head_sizes), num_outputs, activation, dropout))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # (batch, channels, height, width) -> (batch, height, channels * width)
            x = x.permute(0, 2, 1, 3).flatten(2)
        elif x.dim() == 2:  # (batch, features) -> (batch, features, 1)
            x = x.unsqueeze(-1)
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
