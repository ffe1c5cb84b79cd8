"""Mixup (Zhang et al. 2018) as small pure functions with an explicit generator.

    lam = sample_lambda(1.0, gen)                      # lambda ~ Beta(alpha, alpha)
    perm = torch.randperm(len(x), generator=gen)       # partner of each example
    x_mix = mix_inputs(x, lam, perm)                   # lam * x + (1 - lam) * x[perm]
    loss = mixup_loss(logits, y, lam, perm)            # lam * CE(y) + (1 - lam) * CE(y[perm])

One lambda per batch, as in the paper and the reference implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """Draw lambda ~ Beta(alpha, alpha) from `generator`; alpha must be > 0."""
    if not alpha > 0:
        raise ValueError(f"Mixup alpha must be > 0, got {alpha}; train without Mixup instead")
    # Beta(a, a) from two Gamma(a) draws: torch.distributions has no generator argument.
    a = torch.full((2,), float(alpha), dtype=torch.float64)
    g = torch._standard_gamma(a, generator=generator)
    return float(g[0] / (g[0] + g[1]))


def sample_mixup(batch_size: int, alpha: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """lambda and the partner permutation for one batch (both drawn from `generator`, on the CPU)."""
    lam = sample_lambda(alpha, generator)
    return lam, torch.randperm(batch_size, generator=generator)


def mix_inputs(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Convex combination of each example with its partner: lam * x + (1 - lam) * x[perm]."""
    return torch.lerp(x[perm.to(x.device)], x, lam)


def mixup_loss(logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm]), each the batch mean."""
    y_b = y[perm.to(y.device)]
    return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y_b)
