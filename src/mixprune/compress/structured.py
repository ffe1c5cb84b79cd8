"""Structured pruning of any network: channel groups from Torch-Pruning's dependency graph (DepGraph).

    groups = unit_groups(model, keep=("layer1.0.conv1",))   # coupled channels: residual adds, BatchNorm, flatten
    keep = structured_keep(model, groups, ratios_for(groups, 0.5, 0.3))   # {group: bool[channels] kept}
    attach_unit_masks(model, unit_masks(model, groups, keep))   # fine-tune with removed channels at exact zero
    small = slim_network(make_permanent(model))   # a physically smaller network; small(x) == model(x)

A group is every tensor slice that one output channel couples to (Torch-Pruning's `get_all_groups`):
the convolutions, linear layers and BatchNorms that produce the channel, and the layers that read it;
it is named after its first producing conv/linear layer in the model's order. Removing a channel means masking what produces it (weight rows, biases, BatchNorm
scale and shift), so that it is exactly zero whatever the input; the slimmed network then computes
what the masked one does, which `check_exact` verifies for a given network before anything trains.
The classifier (the last conv/linear layer to run) and every layer named in `keep` keep their width.

Channels are ranked by the Ln norm of their producing weights (summed over the group's producing
conv/linear layers: for LeNet-5, one layer, torch.nn.utils.prune.LnStructured's ranking) or by the
|scale| of the group's BatchNorms; round(ratio * channels) of the lowest go.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..core.errors import ConfigError
from ..models import LeNet5, example_input
from ..models.counting import output_positions
from .pruning import cubic_fraction, keep_top, make_permanent
from .slimming import slim

EXACT_TOLERANCE = 1e-4  # max |slimmed - masked| relative to the logits' scale, on random inputs
IMPORTANCES = ("magnitude", "bn-scale")
SLIMMERS = {LeNet5: slim}  # a network class with a slimmer of its own; every other one: slim_any


@dataclass(frozen=True)
class Producer:
    """One layer that produces a group's channels: its name, and for each of the group's channels (in the order
    of Torch-Pruning's root layer) the index along its dim 0."""
    module: str
    index: tuple[int, ...]


@dataclass(frozen=True)
class UnitGroup:
    """Channels removed together: named after the first producing conv/linear layer, `size` channels, what
    produces them."""
    name: str
    size: int
    kind: str  # "conv" or "linear": which of --conv-amount / --fc-amount applies
    producers: tuple[Producer, ...]
    touches: tuple[tuple[str, str, int], ...] = ()  # (layer, "out" or "in", indices per channel): every layer whose
    # output (producers, BatchNorms) or input (readers; a flatten reads H x W indices per channel) loses its channels


def dependency_graph(model: nn.Module):
    """Torch-Pruning's DependencyGraph of model, traced on an example input of its input_shape; ConfigError when
    the tracer cannot follow the network."""
    import torch_pruning as tp

    was_training = model.training
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example_input(model, 2),
                                                         verbose=False)
    except Exception as exc:  # noqa: BLE001 - any tracer failure means this network cannot be pruned by channels
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"--prune-method structured: Torch-Pruning's dependency tracer cannot follow "
                          f"{getattr(model, 'arch', type(model).__name__)} ({type(exc).__name__}: {first}); use "
                          "--prune-method unstructured or 2:4") from None
    finally:
        model.train(was_training)


def _recorder(order: list[str], name: str):
    """A forward hook that appends `name` to `order` each time its layer runs."""
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        order.append(name)
    return hook


def classifier(model: nn.Module) -> str:
    """Name of the last conv/linear layer to run on an example input: its outputs are the classes."""
    order: list[str] = []
    hooks = [m.register_forward_hook(_recorder(order, n))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input(model, 2))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not order:
        raise ConfigError("--prune-method structured: the network has no conv or linear layer to prune")
    return order[-1]


def check_keep(model: nn.Module, keep: tuple[str, ...]) -> None:
    """ConfigError for a --keep name that is not a conv/linear layer of the model."""
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    unknown = [k for k in keep if k not in layers]
    if unknown:
        sample = ", ".join(sorted(layers)[:6])
        raise ConfigError(f"invalid --keep {','.join(unknown)}: not a conv/linear layer of "
                          f"{getattr(model, 'arch', type(model).__name__)} (its layers include {sample}; "
                          "`mixprune sensitivity` lists the groups)")


def unit_groups(model: nn.Module, keep: tuple[str, ...] = ()) -> list[UnitGroup]:
    """The model's prunable channel groups in forward order; groups touching the classifier or a `keep` layer
    are left out."""
    check_keep(model, keep)
    return _groups(model, dependency_graph(model), keep)


def _groups(model: nn.Module, graph, keep: tuple[str, ...] = ()) -> list[UnitGroup]:
    """unit_groups from the model's dependency graph, already traced."""
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    fixed = [model.get_submodule(n) for n in (classifier(model), *keep)]
    groups = []
    for g in graph.get_all_groups(ignored_layers=fixed, root_module_types=(nn.Conv2d, nn.Linear)):
        producers = []
        for item in g.items:
            module = item.dep.target.module
            if module in names and graph.is_out_channel_pruning_fn(item.dep.handler) and \
                    getattr(module, "weight", None) is not None:
                index = [0] * len(item.idxs)
                for local, at_root in zip(item.idxs, item.root_idxs):
                    index[at_root] = local
                producers.append(Producer(names[module], tuple(index)))
        producers.sort(key=lambda p: order[p.module])
        touches = {(names[i.dep.target.module], "out" if graph.is_out_channel_pruning_fn(i.dep.handler) else "in",
                    len(i.idxs) // len(g[0].idxs)) for i in g.items if i.dep.target.module in names}
        # named after its first conv/linear producer in the model's order (a residual chain: its first conv)
        first = next(p.module for p in producers if isinstance(model.get_submodule(p.module), (nn.Conv2d, nn.Linear)))
        kind = "conv" if isinstance(model.get_submodule(first), nn.Conv2d) else "linear"
        groups.append(UnitGroup(first, len(g[0].idxs), kind, tuple(producers), tuple(sorted(touches))))
    return sorted(groups, key=lambda grp: order[grp.name])


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass sees (weight_orig * weight_mask while masks are attached)."""
    return module.weight.detach()


def scores(model: nn.Module, group: UnitGroup, importance: str = "magnitude", norm: float = 1.0) -> torch.Tensor:
    """Per channel of the group, its importance: the Ln norm of its producing conv/linear weights (summed over
    the group's producing layers) or the |scale| of its BatchNorms."""
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    total, found = torch.zeros(group.size, dtype=torch.float64), False
    for p in group.producers:
        module = model.get_submodule(p.module)
        if importance == "magnitude" and isinstance(module, (nn.Conv2d, nn.Linear)):
            w = _weight(module).cpu().contiguous()
            per_row = torch.norm(w, p=norm, dim=tuple(range(1, w.dim())))
        elif importance == "bn-scale" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            per_row = _weight(module).cpu().abs()
        else:
            continue
        total += per_row[list(p.index)].double()
        found = True
    if not found:
        raise ConfigError(f"--prune-importance {importance}: group {group.name} has no "
                          f"{'BatchNorm scale' if importance == 'bn-scale' else 'conv/linear weight'} to rank by; use "
                          "--prune-importance magnitude")
    return total


def _n_remove(group: UnitGroup, ratio: float) -> int:
    """round(ratio * channels), as torch.nn.utils.prune rounds; ConfigError when that is every channel."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"invalid pruning ratio {ratio} for {group.name}: use a fraction in [0, 1)")
    n = round(ratio * group.size)
    if n >= group.size:
        raise ConfigError(f"pruning ratio {ratio} removes all {group.size} channels of {group.name}, which would cut "
                          f"the network in two; use a smaller ratio or --keep {group.name}")
    return n


def structured_keep(model: nn.Module, groups: list[UnitGroup], ratios: dict[str, float], importance: str = "magnitude",
                    norm: float = 1.0, scope: str = "layerwise") -> dict[str, torch.Tensor]:
    """Per group, a bool vector of the channels kept. layerwise: each group loses round(ratio * channels) of
    its lowest-ranked; global: the same total, chosen across groups by score relative to the group's mean
    (every group keeps at least one channel)."""
    counts = {g.name: _n_remove(g, ratios[g.name]) for g in groups}
    ranked = {g.name: scores(model, g, importance, norm) for g in groups}
    if scope == "layerwise":
        # float32 scores for the ranking: LeNet-5's single-layer groups rank exactly as LnStructured does
        return {g.name: keep_top(ranked[g.name].float(), g.size - counts[g.name]) for g in groups}
    if scope != "global":
        raise ValueError(f"pruning scope must be 'layerwise' or 'global', got {scope!r}")
    relative = {n: s / s.mean().clamp_min(1e-30) for n, s in ranked.items()}
    for n, r in relative.items():
        r[torch.argmax(r)] = float("inf")  # the best channel of every group stays
    flat = torch.cat(list(relative.values()))
    keep = keep_top(flat, flat.numel() - sum(counts.values()))
    return dict(zip(relative, keep.split([g.size for g in groups])))


def unit_masks(model: nn.Module, groups: list[UnitGroup], keep: dict[str, torch.Tensor]
               ) -> dict[tuple[str, str], torch.Tensor]:
    """(module, parameter) -> mask zeroing every removed channel's producing weights, biases and BatchNorm
    scale/shift (masks of a module in two groups are combined)."""
    out: dict[tuple[str, str], torch.Tensor] = {}
    for g in groups:
        removed = (~keep[g.name]).nonzero().flatten().tolist()
        for p in g.producers:
            module = model.get_submodule(p.module)
            rows = [p.index[i] for i in removed]
            for param in ("weight", "bias"):
                t = getattr(module, param, None)
                if t is None:
                    continue
                mask = out.get((p.module, param), torch.ones_like(t, dtype=torch.bool))
                mask[rows] = False
                out[(p.module, param)] = mask
    return out


def attach_unit_masks(model: nn.Module, masks: dict[tuple[str, str], torch.Tensor]) -> nn.Module:
    """torch.nn.utils.prune.custom_from_mask for every (module, parameter) mask."""
    for (name, param), mask in masks.items():
        module = model.get_submodule(name)
        prune.custom_from_mask(module, param, mask.to(getattr(module, param).device))
    return model


def ratios_for(groups: list[UnitGroup], conv_amount: float, fc_amount: float,
               per_group: dict[str, float] | None = None) -> dict[str, float]:
    """Each group's ratio: its entry in per_group, else conv_amount / fc_amount by the root layer's kind."""
    per_group = per_group or {}
    unknown = sorted(set(per_group) - {g.name for g in groups})
    if unknown:
        raise ConfigError(f"invalid --prune-ratios: {', '.join(unknown)} is not a prunable group; groups: "
                          f"{', '.join(g.name for g in groups)}")
    return {g.name: per_group.get(g.name, conv_amount if g.kind == "conv" else fc_amount) for g in groups}


def _zero_channels(model: nn.Module, group: UnitGroup) -> list[int]:
    """The group's channels whose producing weights, biases and BatchNorm scale/shift are all zero: they emit
    exactly zero whatever the input."""
    dead = torch.ones(group.size, dtype=torch.bool)
    for p in group.producers:
        module = model.get_submodule(p.module)
        for param in ("weight", "bias"):
            t = getattr(module, param, None)
            if t is not None:
                live = t.detach().flatten(1).ne(0).any(1) if t.dim() > 1 else t.detach().ne(0)
                dead &= ~live.cpu()[list(p.index)]
    return dead.nonzero().flatten().tolist()


def shrink(model: nn.Module, removed: dict[str, list[int]]) -> nn.Module:
    """Remove the given channels of each group (root layer name -> channel indices) with Torch-Pruning, in
    place; records model.pruned_channels (root -> count) for describe() and files."""
    return _shrink(model, dependency_graph(model), removed)


def _shrink(model: nn.Module, graph, removed: dict[str, list[int]]) -> nn.Module:
    """shrink with the model's dependency graph, already traced."""
    for name, idxs in removed.items():
        if idxs:
            module = model.get_submodule(name)
            handler = graph.get_pruner_of_module(module).prune_out_channels
            graph.get_pruning_group(module, handler, list(idxs)).prune()
    model.pruned_channels = {n: len(i) for n, i in removed.items() if i}
    return model


def slim_any(model: nn.Module) -> nn.Module:
    """A physically smaller copy of model without the channels that emit exactly zero (pruned ones); model
    must have plain weights (make_permanent first). Every group keeps at least one channel."""
    if any(prune.is_pruned(m) for m in model.modules()):
        raise ValueError("slimming needs permanent weights: call make_permanent(model) first")
    small = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    graph = dependency_graph(small)  # traced once: the groups come from it, and it removes the channels
    removed = {}
    for g in _groups(small, graph):
        dead = _zero_channels(small, g)
        named = next(p for p in g.producers if p.module == g.name)  # shrink indexes the named layer's channels
        removed[g.name] = [named.index[i] for i in (dead[:-1] if len(dead) == g.size else dead)]
    return _shrink(small, graph, removed)


def slim_network(model: nn.Module) -> nn.Module:
    """The deployable smaller network: through the slimmer of its class in SLIMMERS (LeNet-5: slimming.slim, which
    also folds units that emit a constant into the next layer's bias, something Torch-Pruning does not do), any
    other network through slim_any."""
    return SLIMMERS.get(type(model), slim_any)(model)


def removed_any(model: nn.Module, small: nn.Module) -> bool:
    """Whether slimming removed anything: fewer parameters in the small network."""
    return sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def max_difference(a: nn.Module, b: nn.Module, batch: int = 8) -> float:
    """max |a(x) - b(x)| / max |a(x)| on seeded random inputs of a's input shape, both in eval mode."""
    x = torch.randn(batch, *a.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb = a.eval()(x.to(next(a.parameters()).device)).cpu(), b.eval()(x).cpu()
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-12))


def check_exact(model: nn.Module, groups: list[UnitGroup], keep: dict[str, torch.Tensor]) -> float:
    """Mask a copy of model as planned, slim it, and compare the two on random inputs; ConfigError when the
    slimmed network computes something else (a layer between the channel and its readers that turns zero into
    something else, or normalizes across channels). Returns the relative difference."""
    masked = make_permanent(attach_unit_masks(copy.deepcopy(model).cpu(), unit_masks(model, groups, keep)))
    try:
        diff = max_difference(masked, slim_any(masked))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a network whose code fixes a width (a reshape with constants, say)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"--prune-method structured: {getattr(model, 'arch', 'the model')} does not run once "
                          f"channels are removed ({type(exc).__name__}: {first}); its code fixes a width that "
                          "Torch-Pruning cannot see; use --keep for the layers around it, or --prune-method "
                          "unstructured") from None
    if not diff <= EXACT_TOLERANCE:
        raise ConfigError(f"--prune-method structured: removing channels of {getattr(model, 'arch', 'the model')} "
                          f"changes what it computes (relative difference {diff:.2g} on random inputs): a layer "
                          "between a channel and its readers does not map zero to zero; use --prune-method "
                          "unstructured or --keep the layers around it")
    return diff


class GradualStructuredPruner:
    """Step hook for fit(): removes channels along the cubic schedule (pruning.cubic_fraction), every `every`
    optimizer steps, re-ranking the live channels by their current weights each time; removed channels stay
    removed, and the final counts hold from `end_step` on."""

    def __init__(self, model: nn.Module, groups: list[UnitGroup], ratios: dict[str, float], end_step: int, every: int,
                 importance: str = "magnitude", norm: float = 1.0):
        self.model, self.groups, self.end_step, self.every = model, groups, end_step, every
        self.importance, self.norm = importance, norm
        self.final = {g.name: _n_remove(g, ratios[g.name]) for g in groups}
        self.keep = {g.name: torch.ones(g.size, dtype=torch.bool) for g in groups}
        attach_unit_masks(model, unit_masks(model, groups, self.keep))

    def __call__(self, step: int) -> None:
        if step <= self.end_step and (step % self.every == 0 or step == self.end_step):
            self.prune_to(cubic_fraction(step, self.end_step))

    def prune_to(self, fraction: float) -> None:
        """Remove round(fraction * final count) channels of every group, the lowest-ranked live ones first."""
        for g in self.groups:
            score = scores(self.model, g, self.importance, self.norm).float()
            score[~self.keep[g.name]] = -1.0  # below every live channel: never brought back
            self.keep[g.name] = keep_top(score, g.size - round(fraction * self.final[g.name]))
        with torch.no_grad():
            for (name, param), mask in unit_masks(self.model, self.groups, self.keep).items():
                held = getattr(self.model.get_submodule(name), f"{param}_mask")
                held.copy_(held.bool() & mask.to(held.device))


class ShapeCosts:
    """MACs per input and parameters of the network with some channels of each group removed, counted from its layers'
    shapes (no copy, no trace): each conv/linear layer's MACs and weights scale with its remaining input and output
    channels, every other parameter of a touched layer (BatchNorm's) with its remaining channels; everything else
    (and every MAC the flop counter sees outside conv/linear layers) stays as it is. Exact where `matches` says so,
    checked against the network actually shrunk (Torch-Pruning) and counted by torch's flop counter."""

    def __init__(self, model: nn.Module, groups: list[UnitGroup]):
        from ..models import count_params, macs_per_image

        self.model, self.groups = model, groups
        self.positions = output_positions(model)
        self.layers = {n: m for n, m in model.named_modules()}
        self.touched = sorted({t[0] for g in groups for t in g.touches} | set(self.positions))
        base_macs, base_params = self._count({g.name: 0 for g in groups})
        self.other_macs = macs_per_image(model) - base_macs
        self.other_params = count_params(model) - base_params

    def _count(self, removal: dict[str, int]) -> tuple[float, float]:
        lost = {}
        for g in self.groups:
            for layer, side, per in g.touches:
                lost[(layer, side)] = lost.get((layer, side), 0) + removal.get(g.name, 0) * per
        macs = params = 0.0
        for name in self.touched:
            m = self.layers[name]
            out_lost, in_lost = lost.get((name, "out"), 0), lost.get((name, "in"), 0)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                o = (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features) - out_lost
                i = (m.in_channels if isinstance(m, nn.Conv2d) else m.in_features) - in_lost
                depthwise = isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
                per_out = (1 if depthwise else i // (m.groups if isinstance(m, nn.Conv2d) else 1)) * \
                    (math.prod(m.kernel_size) if isinstance(m, nn.Conv2d) else 1)
                macs += self.positions[name] * o * per_out
                params += o * per_out + (o if m.bias is not None else 0)
            else:
                for p in m.parameters(recurse=False):
                    width = p.shape[0] if p.dim() else 1
                    params += p.numel() * (width - out_lost) / width if width else 0
        return macs, params

    def macs(self, removal: dict[str, int]) -> float:
        return self._count(removal)[0] + self.other_macs

    def params(self, removal: dict[str, int]) -> float:
        return self._count(removal)[1] + self.other_params

    def matches(self, removals: list[dict[str, int]]) -> bool:
        """Whether the counts equal those of the network shrunk by Torch-Pruning for each removal."""
        from ..models import count_params, macs_per_image

        for removal in removals:
            try:
                small = shrink(copy.deepcopy(self.model).cpu().eval(), {n: list(range(k)) for n, k in removal.items()
                                                                          if k})
                counted = (macs_per_image(small), count_params(small))
            except Exception:  # noqa: BLE001 - a network Torch-Pruning cannot shrink this far: no shortcut for it
                return False
            if counted != (self.macs(removal), self.params(removal)):
                return False
        return True
