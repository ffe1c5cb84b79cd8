"""Per-group sensitivity to structured pruning, measured on a validation split, and ratios chosen from it.

    groups = unit_groups(model)
    base, rows = sensitivity(model, groups, val_x, val_y)     # each group pruned alone at each rung of LADDER
    ratios = choose_ratios(groups, rows, max_drop=1.0)        # {group: largest ratio costing <= 1 point}

A group is pruned alone (its lowest-ranked channels' producing weights zeroed, as the study's masks do)
and the accuracy is measured on images held out from the training split: never the test split, which
must stay unseen by every choice the study makes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.inference import evaluate_loss_accuracy
from .structured import UnitGroup, structured_keep, unit_masks

LADDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _accuracy_without(model: nn.Module, masks: dict[tuple[str, str], torch.Tensor], x: Any, y: torch.Tensor,
                      batch_size: int) -> float:
    """Accuracy with the masked entries zeroed in place, the weights restored afterwards."""
    saved = {}
    with torch.no_grad():
        for (name, param), mask in masks.items():
            t = getattr(model.get_submodule(name), param)
            saved[(name, param)] = t.detach().clone()
            t.mul_(mask.to(t.device))
    try:
        return evaluate_loss_accuracy(model, x, y, batch_size)[1]
    finally:
        with torch.no_grad():
            for (name, param), value in saved.items():
                getattr(model.get_submodule(name), param).copy_(value)


def sensitivity(model: nn.Module, groups: list[UnitGroup], x: Any, y: torch.Tensor, ladder: tuple[float, ...] = LADDER,
                importance: str = "magnitude", norm: float = 1.0, batch_size: int = 1000
                ) -> tuple[float, list[dict[str, Any]]]:
    """(accuracy of the unpruned model, rows): per group and ratio of the ladder that removes at least one
    channel but not all, the accuracy with that group pruned alone and the drop in points."""
    base = evaluate_loss_accuracy(model, x, y, batch_size)[1]
    rows = []
    for g in groups:
        for ratio in ladder:
            removed = round(ratio * g.size)
            if removed == 0 or removed >= g.size:
                continue
            keep = structured_keep(model, [g], {g.name: ratio}, importance, norm)
            acc = _accuracy_without(model, unit_masks(model, [g], keep), x, y, batch_size)
            rows.append({"group": g.name, "kind": g.kind, "channels": g.size, "ratio": ratio, "removed": removed,
                         "accuracy": acc, "drop": base - acc})
    return base, rows


def choose_ratios(groups: list[UnitGroup], rows: list[dict[str, Any]], max_drop: float) -> dict[str, float]:
    """Per group, the largest ratio of the ladder whose drop, and that of every smaller ratio, stays within
    max_drop points (0 where even the smallest costs more): the drop is not always monotone in the ratio, and
    a ratio past a harmful one is not trusted."""
    out = {}
    for g in groups:
        chosen = 0.0
        for r in sorted((r for r in rows if r["group"] == g.name), key=lambda r: r["ratio"]):
            if r["drop"] > max_drop:
                break
            chosen = r["ratio"]
        out[g.name] = chosen
    return out


def ratios_flag(ratios: dict[str, float]) -> str:
    """The --prune-ratios value for these ratios (groups at 0 left out: they keep --conv/--fc-amount otherwise)."""
    return ",".join(f"{name}={ratio:g}" for name, ratio in ratios.items())
