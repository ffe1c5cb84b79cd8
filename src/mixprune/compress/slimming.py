"""Physical slimming of LeNet-5: a smaller dense LeNet without the units that do not change its outputs.

    small = slim(make_permanent(model))     # e.g. LeNet5(widths=(3, 8, 60, 42)); small(x) == model(x)

Structured pruning of any network (LeNet-5 included) is structured.py's, on Torch-Pruning's dependency
graph, and structured.slim_any removes the channels it zeroed. This module stays for what the library
does not do: besides dropping units with no input or no use, a unit whose incoming weights are all zero
emits the constant relu(bias), whose effect is folded into the next layer's bias before the unit is
dropped, so that an unstructured result also becomes a smaller network. The slimmed network computes
what the masked one does (up to float rounding); on a structured result it is the network slim_any
builds (tested). fc3's outputs are the classes and are never removed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..models import LeNet5

UNIT_LAYERS = ("conv1", "conv2", "fc1", "fc2")  # layers whose output units may be removed
NEXT = {"conv1": "conv2", "conv2": "fc1", "fc1": "fc2", "fc2": "fc3"}


def _in_zero(layer: nn.Module) -> torch.Tensor:
    return ~layer.weight.detach().flatten(1).ne(0).any(1)


def _reads(model: LeNet5, name: str) -> torch.Tensor:
    """The next layer's weights grouped by the unit of `name` they read: [next units, units, k], a view.

    k is what one unit feeds per next unit: 25 kernel taps (conv1 -> conv2), the pooled positions of conv2's
    output (conv2 -> fc1, whose columns c*k .. c*k+k-1 read channel c; 16 for 28x28 inputs), or 1 (FC -> FC).
    """
    w = getattr(model, NEXT[name]).weight
    if name == "conv2":
        return w.view(w.shape[0], model.conv2.out_channels, -1)
    if w.dim() == 4:
        return w.flatten(2)
    return w.unsqueeze(2)


def _removable(model: LeNet5, name: str) -> torch.Tensor:
    """Bool vector of the units of `name` that can go without changing the outputs: no input or no use."""
    dead = _in_zero(getattr(model, name)) | ~_reads(model, name).detach().ne(0).any(2).any(0)
    if dead.all():
        dead[0] = False  # keep one unit so every layer has a shape
    return dead


def removable_units(model: LeNet5) -> dict[str, torch.Tensor]:
    """Per unit layer, bool vector of units that can go without changing the outputs."""
    return {name: _removable(model, name) for name in UNIT_LAYERS}


def _fold_constants(model: LeNet5, name: str, dead: torch.Tensor) -> None:
    """Add the next layer's response to the constant relu(bias) of each input-dead unit to its bias
    (a constant input map: every output of the next layer sees it through all of its k taps)."""
    layer, nxt = getattr(model, name), getattr(model, NEXT[name])
    const = torch.relu(layer.bias.detach()) * _in_zero(layer) * dead  # [units]; pooling keeps constants
    if const.any():
        with torch.no_grad():
            nxt.bias += (_reads(model, name).detach().sum(2) * const).sum(1)


def _zero_inputs(model: LeNet5, name: str, dead: torch.Tensor) -> None:
    """Zero the next layer's weights that read dead units (their effect is folded or nil), so that
    units of the next layer left with no live input are found dead in turn."""
    with torch.no_grad():
        _reads(model, name)[:, dead] = 0


def slim(model: LeNet5) -> LeNet5:
    """A smaller dense LeNet5 without removable units; model must have plain weights (make_permanent first)."""
    if any(prune.is_pruned(m) for m in model.modules()):
        raise ValueError("slim needs permanent weights: call make_permanent(model) first")
    work = LeNet5(dropout=model.dropout, widths=model.widths, **model.io)
    work.load_state_dict({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    keep = {}
    for name in UNIT_LAYERS:  # in forward order: folding changes the next layer's bias only
        dead = _removable(work, name)
        _fold_constants(work, name, dead)
        _zero_inputs(work, name, dead)
        keep[name] = ~dead
    widths = tuple(int(keep[n].sum()) for n in UNIT_LAYERS)
    small = LeNet5(dropout=model.dropout, widths=widths, **model.io)  # type: ignore[arg-type]
    fc1_cols = keep["conv2"].repeat_interleave(model.fc1.in_features // model.conv2.out_channels)
    with torch.no_grad():
        small.conv1.weight.copy_(work.conv1.weight[keep["conv1"]])
        small.conv1.bias.copy_(work.conv1.bias[keep["conv1"]])
        small.conv2.weight.copy_(work.conv2.weight[keep["conv2"]][:, keep["conv1"]])
        small.conv2.bias.copy_(work.conv2.bias[keep["conv2"]])
        small.fc1.weight.copy_(work.fc1.weight[keep["fc1"]][:, fc1_cols])
        small.fc1.bias.copy_(work.fc1.bias[keep["fc1"]])
        small.fc2.weight.copy_(work.fc2.weight[keep["fc2"]][:, keep["fc1"]])
        small.fc2.bias.copy_(work.fc2.bias[keep["fc2"]])
        small.fc3.weight.copy_(work.fc3.weight[:, keep["fc2"]])
        small.fc3.bias.copy_(work.fc3.bias)
    return small.eval()
