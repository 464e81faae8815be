"""A small residual CNN with batch norm, sized for 8x8 digits up to CIFAR-10's 32x32 images."""

from __future__ import annotations

from torch import Tensor, nn
from dltrain.config.schema import Fraction, NonEmptySizes, PositiveInt


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch-norm layers added to the block's input (a 1x1 projection where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A 3x3 stem, then one stage of `blocks_per_stage` basic blocks per entry of `channels` (each stage after
    the first halves the image), global average pooling, dropout and a linear layer to `num_outputs`."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, *, channels: NonEmptySizes = (16, 32, 64),
                 blocks_per_stage: PositiveInt = 2, dropout: Fraction = 0.0) -> None:
        super().__init__()
        widths = list(channels)
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                layers.append(BasicBlock(in_channels, width, 2 if stage > 0 and block == 0 else 1))
                in_channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
