"""Counting for any model: prunable layers, parameters, nonzeros, sparsity and multiply-accumulates.

    prunable(model)                   # [(name, Conv2d | Linear), ...]: what pruning touches
    count_nonzero(model)              # honours torch.nn.utils.prune masks still attached
    macs_per_image(model)             # torch.utils.flop_counter on one example of model.input_shape

Shapes come from an example input of the model's `input_shape` (C, H, W), which the model registry
sets on every model it builds or loads; never from constants.
"""

from __future__ import annotations

import torch
from torch import nn


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every conv/FC layer, in forward order; their weights are what pruning touches."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) of one input, as recorded when the model was built."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("the model has no input_shape; build it with mixprune.models.build_model "
                         "(or set model.input_shape = (C, H, W))")
    return tuple(shape)  # type: ignore[return-value]


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """Zeros of the model's input shape on its device and dtype."""
    p = next(model.parameters())
    return torch.zeros(batch, *input_shape(model), device=p.device, dtype=p.dtype)


def stateless(model: nn.Module) -> bool:
    """Every parameter belongs to a conv/FC layer and the only buffers are pruning masks: nothing (BatchNorm's
    running statistics, say) that a step would update besides the weights."""
    in_layers = sum(p.numel() for _, m in prunable(model) for p in m.parameters(recurse=False))
    return (in_layers == sum(p.numel() for p in model.parameters())
            and all(name.endswith("_mask") for name, _ in model.named_buffers()))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Nonzero parameters, honouring masks of torch.nn.utils.prune when they are still attached."""
    return sum(int(torch.count_nonzero(t)) for t in effective_tensors(model).values())


def effective_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> parameter as the forward pass sees it (weight_orig * weight_mask while pruning is attached)."""
    out = {}
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            for pname in ("weight", "bias"):
                if getattr(m, pname, None) is not None:
                    out[prefix + pname] = getattr(m, pname).detach()
        else:
            out.update({prefix + n: p.detach() for n, p in m.named_parameters(recurse=False)})
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
    """Dense multiply-accumulates for one input, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(example_input(model))
    return counter.get_total_flops() // 2


def output_positions(model: nn.Module) -> dict[str, int]:
    """Per prunable layer, the output positions one weight is applied at for one input (H x W of a conv's
    output; 1 for a linear layer), seen by forward hooks on an example input."""
    positions: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            positions[name] = output[0, 0].numel() if output.dim() == 4 else 1
        return hook

    hooks = [m.register_forward_hook(hook_for(n)) for n, m in prunable(model)]
    try:
        with torch.no_grad():
            model.eval()(example_input(model))
    finally:
        for h in hooks:
            h.remove()
    return positions


def effective_macs(model: nn.Module) -> int:
    """Multiply-accumulates per input that involve a nonzero weight (what ideal sparse kernels do)."""
    positions = output_positions(model)
    return sum(int(torch.count_nonzero(m.weight)) * positions.get(n, 0) for n, m in prunable(model))
