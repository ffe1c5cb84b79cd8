"""A small CNN with BatchNorm and a residual connection, as a user would bring one to mixprune.

    mixprune reproduce --arch examples/my_model.py:build --dataset folder:DIR

mixprune calls build(in_channels=C, num_classes=K) with the dataset's channels and classes.
"""

import torch
from torch import nn


class Residual(nn.Module):
    """x + BN(conv(x)), then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


def build(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        Residual(16), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        Residual(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, num_classes))
