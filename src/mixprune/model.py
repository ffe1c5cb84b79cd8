"""The paper's simplified LeNet-5 (Table 1) and counting helpers.

    model = LeNet5(dropout=0.0)
    init_weights(model, torch.Generator().manual_seed(1))   # seeded, never the global RNG
    count_params(model) == 44_426

Shapes (Table 1): [B,1,28,28] -conv1 5x5-> [B,6,24,24] -pool-> [B,6,12,12] -conv2 5x5-> [B,16,8,8]
-pool-> [B,16,4,4] -flatten-> [B,256] -fc1-> 120 -fc2-> 84 -fc3-> 10 logits. ReLU after every layer
but fc3, no batch norm, valid convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PARAMS_PAPER_TABLE1 = 44_426
LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


class LeNet5(nn.Module):
    def __init__(self, dropout: float = 0.0, widths: tuple[int, int, int, int] = (6, 16, 120, 84),
                 generator: torch.Generator | None = None):
        """widths = (conv1 filters, conv2 filters, fc1 units, fc2 units); the paper's are the default.

        Weights are drawn from `generator` (default: one seeded with 0), never from the global RNG.
        """
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c1, c2, h1, h2 = widths
        with torch.device("meta"):  # no allocation, no draw from the global RNG
            self.conv1 = nn.Conv2d(1, c1, 5)
            self.conv2 = nn.Conv2d(c1, c2, 5)
            self.fc1 = nn.Linear(c2 * 4 * 4, h1)
            self.fc2 = nn.Linear(h1, h2)
            self.fc3 = nn.Linear(h2, 10)
        self.to_empty(device="cpu")
        init_weights(self, generator if generator is not None else torch.Generator().manual_seed(0))
        self.dropout = dropout
        self.widths = widths
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
        x = torch.flatten(x, 1)  # [B, 256] in (channel, row, col) order
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


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every conv/FC layer, in forward order; their weights are what pruning touches."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Nonzero parameters, honouring masks of torch.nn.utils.prune when they are still attached."""
    return sum(int(torch.count_nonzero(t)) for t in effective_tensors(model).values())


def effective_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> tensor as the forward pass sees it (weight_orig * weight_mask while pruning is attached)."""
    out = {}
    for name, m in prunable(model):
        for pname in ("weight", "bias"):
            out[f"{name}.{pname}"] = getattr(m, pname).detach()
    return out


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights per conv/FC layer, e.g. {"conv1": 0.2, ..., "fc3": 0.3}."""
    return {n: 1.0 - int(torch.count_nonzero(m.weight.detach())) / m.weight.numel() for n, m in prunable(model)}


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries among conv/FC weights (biases excluded: pruning never touches them)."""
    total = zeros = 0
    for _, m in prunable(model):
        w = m.weight.detach()
        total += w.numel()
        zeros += w.numel() - int(torch.count_nonzero(w))
    return zeros / total


def macs_per_image(model: nn.Module) -> int:
    """Dense multiply-accumulates for one 1x28x28 input, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28, device=p.device, dtype=p.dtype))
    return counter.get_total_flops() // 2


def effective_macs(model: nn.Module) -> int:
    """Multiply-accumulates per 1x28x28 image that involve a nonzero weight (what ideal sparse kernels do)."""
    spatial: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: spatial.__setitem__(n, o[0, 0].numel() if o.dim() == 4 else 1))
             for n, m in prunable(model)]
    p = next(model.parameters())
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 28, 28, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return sum(int(torch.count_nonzero(m.weight)) * spatial[n] for n, m in prunable(model))
