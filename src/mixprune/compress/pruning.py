"""Magnitude pruning with torch.nn.utils.prune: masks as values, attached while fine-tuning, then permanent.

    masks = l1_masks(model, conv_amount=0.2, fc_amount=0.3)   # {"conv1": bool tensor, ...}; model untouched
    attach_masks(model, masks)     # forward uses weight_orig * weight_mask; masked weights stay zero
    ...fine-tune...
    make_permanent(model)          # prune.remove: plain .weight tensors with zeros, no weight_orig/_mask

Layerwise (paper): each conv layer loses round(conv_amount * n) weights, each FC layer round(fc_amount * n),
the smallest by |w|, exactly as torch.nn.utils.prune.l1_unstructured picks them. Global: the same total
number of weights is removed, chosen by |w| across all layers (torch.nn.utils.prune.global_unstructured).
Biases are never pruned.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from ..models import prunable


def layer_amounts(model: nn.Module, conv_amount: float, fc_amount: float) -> dict[str, float]:
    """Fraction of weights to remove per prunable layer: conv_amount for Conv2d, fc_amount for Linear."""
    for label, a in (("conv_amount", conv_amount), ("fc_amount", fc_amount)):
        if not 0.0 <= a < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {a}")
    return {n: conv_amount if isinstance(m, nn.Conv2d) else fc_amount for n, m in prunable(model)}


def pruned_counts(model: nn.Module, conv_amount: float, fc_amount: float) -> dict[str, int]:
    """How many weights each layer loses under layerwise pruning (torch's rounding: round(amount * n))."""
    layers = dict(prunable(model))
    return {n: round(a * layers[n].weight.numel()) for n, a in layer_amounts(model, conv_amount, fc_amount).items()}


def l1_masks(model: nn.Module, conv_amount: float, fc_amount: float, scope: str = "layerwise") -> dict[str, torch.Tensor]:
    """Boolean keep-masks (True = kept) from the L1 magnitude of the model's current weights."""
    amounts = layer_amounts(model, conv_amount, fc_amount)
    if scope == "layerwise":
        # contiguous: prune flattens with .view(-1), which channels_last weights do not allow
        weights = {n: m.weight.detach().contiguous() for n, m in prunable(model)}
        return {n: prune.L1Unstructured(amounts[n]).compute_mask(w, torch.ones_like(w)).bool()
                for n, w in weights.items()}
    if scope == "global":
        total = sum(pruned_counts(model, conv_amount, fc_amount).values())
        # global_unstructured mutates modules: work on a copy, in the layout its .view(-1) needs
        work = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        params = [(m, "weight") for _, m in prunable(work)]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=total)
        return {n: m.weight_mask.detach().bool().clone() for n, m in prunable(work)}
    raise ValueError(f"pruning scope must be 'layerwise' or 'global', got {scope!r}")


def semi_structured_masks(model: nn.Module, n_keep: int = 2, group: int = 4) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """N:M masks (default 2:4): in every run of `group` consecutive inputs of a row, the `n_keep` largest |w|
    stay. Returns (masks for the layers whose rows divide into groups, reason per layer left out)."""
    masks, skipped = {}, {}
    for name, m in prunable(model):
        w = m.weight.detach().flatten(1).contiguous()  # conv: [out, in * kh * kw], the im2col row
        if w.shape[1] % group:
            skipped[name] = f"rows of {w.shape[1]} inputs do not split into groups of {group}"
            continue
        g = w.abs().view(w.shape[0], -1, group)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(n_keep, dim=2).indices, True)
        masks[name] = keep.view_as(m.weight)
    return masks, skipped


def attach_masks(model: nn.Module, masks: dict[str, torch.Tensor],
                 bias_masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Attach masks with prune.custom_from_mask: the forward pass sees weight_orig * mask from now on.

    bias_masks (structured pruning) switch off the biases of removed units as well.
    """
    layers = dict(prunable(model))
    unknown = (set(masks) | set(bias_masks or {})) - set(layers)
    if unknown:
        raise ValueError(f"masks name layers the model lacks: {sorted(unknown)}")
    for param, group in (("weight", masks), ("bias", bias_masks or {})):
        for name, mask in group.items():
            prune.custom_from_mask(layers[name], param, mask.to(getattr(layers[name], param).device))
    return model


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The attached masks (layers without one are left out)."""
    return {n: m.weight_mask.detach().bool().clone() for n, m in prunable(model) if prune.is_pruned(m)}


def make_permanent(model: nn.Module) -> nn.Module:
    """prune.remove on every masked weight and bias (conv, linear, BatchNorm): plain parameters holding the zeros."""
    for m in model.modules():
        for param in ("weight", "bias"):
            if hasattr(m, f"{param}_mask"):
                prune.remove(m, param)
    return model


def cubic_fraction(step: int, end_step: int) -> float:
    """Share of the final pruning reached at `step` (Zhu & Gupta 2017): 1 - (1 - step / end_step)^3, then 1."""
    if end_step <= 0 or step >= end_step:
        return 1.0
    return 1.0 - (1.0 - max(step, 0) / end_step) ** 3


def keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool tensor of scores' shape: True at its n_keep largest entries (torch.topk's choice among ties)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    if n_keep > 0:
        keep[torch.topk(scores.flatten(), n_keep).indices] = True
    return keep.view(scores.shape)


def shrink_masks(model: nn.Module, final_counts: dict[str, int], fraction: float, scope: str = "layerwise") -> None:
    """Grow each attached mask's pruned set to round(fraction * final count) by |weight|, never un-pruning.

    Already-pruned weights score -1, below every live |w|, so masks only shrink as fraction grows.
    """
    layers = {n: m for n, m in prunable(model) if n in final_counts}
    scores = {n: torch.where(m.weight_mask.bool(), m.weight_orig.detach().abs(), torch.full_like(m.weight_orig, -1.0))
              .cpu().contiguous() for n, m in layers.items()}
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores.values()])
        keep = keep_top(flat, flat.numel() - round(fraction * sum(final_counts.values())))
        parts = keep.split([s.numel() for s in scores.values()])
        new = {n: p.view(scores[n].shape) for n, p in zip(scores, parts)}
    else:
        new = {n: keep_top(s, s.numel() - round(fraction * final_counts[n])) for n, s in scores.items()}
    with torch.no_grad():
        for n, m in layers.items():
            m.weight_mask.copy_(m.weight_mask.bool().cpu() & new[n])


class GradualPruner:
    """Step hook for fit(): prunes every `every` optimizer steps along the cubic schedule, reaching the
    final counts at `end_step` and holding them afterwards."""

    def __init__(self, model: nn.Module, final_counts: dict[str, int], end_step: int, every: int,
                 scope: str = "layerwise"):
        self.model, self.final_counts, self.end_step, self.every, self.scope = model, final_counts, end_step, every, scope
        attach_masks(model, {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in prunable(model)
                             if n in final_counts})

    def __call__(self, step: int) -> None:
        if step <= self.end_step and (step % self.every == 0 or step == self.end_step):
            shrink_masks(self.model, self.final_counts, cubic_fraction(step, self.end_step), self.scope)
