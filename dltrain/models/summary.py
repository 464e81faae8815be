"""The network's layer table: names, types, parameter counts, and the shapes an example batch takes through it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_summary import ModelSummary


class _Network(pl.LightningModule):
    """The network alone, so that the table leaves out the training module's losses and metrics."""

    def __init__(self, network: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.network = network
        self.example_input_array = torch.zeros(1, *input_shape)  # Lightning adds in/out sizes and FLOPs per sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def network_summary(network: torch.nn.Module, input_shape: tuple[int, ...], max_depth: int = -1) -> ModelSummary:
    """Lightning's summary of `network` for inputs of `input_shape` (one sample, no batch dimension)."""
    return ModelSummary(_Network(network, tuple(input_shape)), max_depth=max_depth)
