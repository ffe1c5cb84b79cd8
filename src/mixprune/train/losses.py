"""Training losses, chosen once per variant (variants.Variant.loss) and called by the engine's one step.

    loss = training_loss("ce")                   # the paper's: plain cross-entropy
    loss(logits, y, lam=None, partner=None)      # cross-entropy
    loss(logits, y, lam, partner)                # Mixup's: lam * CE(y) + (1 - lam) * CE(y[partner])
    kd = training_loss("kd", temperature=4.0, weight=0.9)
    kd(logits, y, lam, partner, teacher_logits)  # (1 - w) * the above + w * T^2 * KL(teacher_T || student_T)

Mixup is a target transform: the engine mixes the inputs with (lam, partner) and the loss scores the
logits against both labels with the same weights, which is cross-entropy against the mixed soft
targets computed as the paper (and the reference implementation) computes it. Distillation (Hinton et
al. 2015) adds the teacher's softened predictions on the same (mixed) inputs as a second target; T^2
keeps its gradient on the scale of the cross-entropy's as T changes. Losses are frozen dataclasses, so
two models with equal settings have equal losses (stacked training checks that members share theirs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mixup import mixup_loss

Loss = Callable[..., torch.Tensor]  # (logits, labels, lam or None, partner or None[, teacher logits]) -> loss


def target_cross_entropy(logits: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor | None,
                         partner: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against the labels, or against the Mixup pair of labels when lam is given."""
    if lam is None:
        return F.cross_entropy(logits, y)
    return mixup_loss(logits, y, lam, partner)


def distillation_term(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


@dataclass(frozen=True)
class SmoothedCrossEntropy:
    """Cross-entropy (Mixup's pair of them when lam is given) with label smoothing."""
    label_smoothing: float

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor | None,
                 partner: torch.Tensor | None) -> torch.Tensor:
        ls = self.label_smoothing
        if lam is None:
            return F.cross_entropy(logits, y, label_smoothing=ls)
        y_b = y[partner.to(y.device)]
        return lam * F.cross_entropy(logits, y, label_smoothing=ls) + (1.0 - lam) * F.cross_entropy(
            logits, y_b, label_smoothing=ls)


@dataclass(frozen=True)
class Distillation:
    """(1 - weight) * the hard-label loss + weight * distillation_term against the teacher's logits."""
    hard: Loss
    temperature: float
    weight: float

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor | None,
                 partner: torch.Tensor | None, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        if teacher_logits is None:
            raise ValueError("the distillation loss needs the teacher's logits; give the FitSpec a teacher")
        hard = self.hard(logits, y, lam, partner)
        return (1.0 - self.weight) * hard + self.weight * distillation_term(logits, teacher_logits, self.temperature)


LOSSES = ("ce", "kd")  # a variant's loss: cross-entropy against the (mixed) labels, or distillation


def training_loss(name: str, label_smoothing: float = 0.0, temperature: float = 4.0, weight: float = 0.9) -> Loss:
    """The loss called `name` (LOSSES) with its settings; "ce" without smoothing is the paper's, exactly."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    hard: Loss = target_cross_entropy if label_smoothing == 0 else SmoothedCrossEntropy(label_smoothing)
    return hard if name == "ce" else Distillation(hard, temperature, weight)


def needs_teacher(name: str) -> bool:
    return name == "kd"
