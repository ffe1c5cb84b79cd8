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

from .model import prunable


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


def attach_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach masks with prune.custom_from_mask: the forward pass sees weight_orig * mask from now on."""
    layers = dict(prunable(model))
    unknown = set(masks) - set(layers)
    if unknown:
        raise ValueError(f"masks name layers the model lacks: {sorted(unknown)}")
    for name, mask in masks.items():
        prune.custom_from_mask(layers[name], "weight", mask.to(layers[name].weight.device))
    return model


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The attached masks (layers without one are left out)."""
    return {n: m.weight_mask.detach().bool().clone() for n, m in prunable(model) if prune.is_pruned(m)}


def make_permanent(model: nn.Module) -> nn.Module:
    """prune.remove on every masked layer: weight becomes a plain parameter holding the zeros."""
    for _, m in prunable(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")
    return model
