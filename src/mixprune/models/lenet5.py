"""The paper's simplified LeNet-5 (Table 1), for any input shape and number of classes.

    model = LeNet5(dropout=0.0)                          # 1x28x28 -> 10 classes: 44,426 parameters
    model = LeNet5(in_channels=3, num_classes=100, input_hw=(32, 32))
    init_weights(model, torch.Generator().manual_seed(1))   # seeded, never the global RNG

Shapes (Table 1): [B,1,28,28] -conv1 5x5-> [B,6,24,24] -pool-> [B,6,12,12] -conv2 5x5-> [B,16,8,8]
-pool-> [B,16,4,4] -flatten-> [B,256] -fc1-> 120 -fc2-> 84 -fc3-> 10 logits. ReLU after every layer
but fc3, no batch norm, valid convolutions. Other inputs change the channels of conv1, the flatten size
(16 x h x w after the second pooling) and fc3's outputs; nothing else.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
PAPER_INPUT = dict(in_channels=1, num_classes=10, input_hw=(28, 28))  # Table 1's


def pooled_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width after conv1 (5x5 valid), pool, conv2 (5x5 valid), pool: 28x28 -> 4x4."""
    h, w = input_hw
    return ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2


def parameter_count(widths: tuple[int, ...], in_channels: int, num_classes: int, input_hw: tuple[int, int]) -> int:
    """Parameters of a LeNet-5 of these widths and input, computed without building it."""
    c1, c2, h1, h2 = widths
    ph, pw = pooled_hw(input_hw)
    return (c1 * in_channels * 25 + c1 + c2 * c1 * 25 + c2 + h1 * c2 * max(ph, 0) * max(pw, 0) + h1 + h2 * h1 + h2
            + num_classes * h2 + num_classes)


class LeNet5(nn.Module):
    def __init__(self, dropout: float = 0.0, widths: tuple[int, int, int, int] = (6, 16, 120, 84),
                 generator: torch.Generator | None = None, in_channels: int = 1, num_classes: int = 10,
                 input_hw: tuple[int, int] = (28, 28)):
        """widths = (conv1 filters, conv2 filters, fc1 units, fc2 units); the paper's are the default.

        Weights are drawn from `generator` (default: one seeded with 0), never from the global RNG.
        """
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        ph, pw = pooled_hw(input_hw)
        if ph < 1 or pw < 1:
            raise ValueError(f"LeNet-5 needs inputs of at least 16x16 pixels (two 5x5 convolutions and two 2x2 "
                             f"poolings), got {input_hw[0]}x{input_hw[1]}; resize with --image-size")
        c1, c2, h1, h2 = widths
        with torch.device("meta"):  # no allocation, no draw from the global RNG
            self.conv1 = nn.Conv2d(in_channels, c1, 5)
            self.conv2 = nn.Conv2d(c1, c2, 5)
            self.fc1 = nn.Linear(c2 * ph * pw, h1)
            self.fc2 = nn.Linear(h1, h2)
            self.fc3 = nn.Linear(h2, num_classes)
        self.to_empty(device="cpu")
        init_weights(self, generator if generator is not None else torch.Generator().manual_seed(0))
        self.dropout = dropout
        self.widths = widths
        self.io = dict(in_channels=in_channels, num_classes=num_classes, input_hw=tuple(input_hw))  # rebuilds it
        self.input_shape = (in_channels, *input_hw)  # one example's shape, read by counting and export
        # Dropout masks come from this generator (set by the engine) so that runs stay reproducible
        # without touching the global RNG.
        self.generator: torch.Generator | None = None

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.dropout > 0):
            return x
        # drawn on the CPU (where the generator lives), then moved: the same masks on every device
        keep = (torch.rand(x.shape, generator=self.generator) >= self.dropout).to(x.device)
        return x * keep / (1.0 - self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)  # [B, 16 * 4 * 4] in (channel, row, col) order
        x = self._drop(F.relu(self.fc1(x)))
        x = self._drop(F.relu(self.fc2(x)))
        return self.fc3(x)


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default Conv2d/Linear initialisation, drawn from an explicit generator.

    Weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)), biases likewise.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    return model
