"""Training losses, chosen once per variant (variants.Variant.loss) and called by the engine's one step.

    loss = LOSSES["ce"]
    loss(logits, y, lam=None, partner=None)      # cross-entropy
    loss(logits, y, lam, partner)                # Mixup's: lam * CE(y) + (1 - lam) * CE(y[partner])

Mixup is a target transform: the engine mixes the inputs with (lam, partner) and the loss scores the
logits against both labels with the same weights, which is cross-entropy against the mixed soft
targets computed as the paper (and the reference implementation) computes it. A new loss (for
example distillation) is one entry here with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .mixup import mixup_loss

Loss = Callable[[torch.Tensor, torch.Tensor, "float | torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


def target_cross_entropy(logits: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor | None,
                         partner: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against the labels, or against the Mixup pair of labels when lam is given."""
    if lam is None:
        return F.cross_entropy(logits, y)
    return mixup_loss(logits, y, lam, partner)


LOSSES: dict[str, Loss] = {"ce": target_cross_entropy}
