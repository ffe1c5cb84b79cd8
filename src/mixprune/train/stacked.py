"""Many models trained in one pass: independent models with stacked weights, one vmapped step for all.

    members = [Member(model, spec, generator(s, "order"), generator(s, "mixup") if mixup else None)
               for ...]
    histories = fit_stacked(members, data, phase="train")   # one list of EpochRecord per member

Each member stays its own model: its own initial weights, data order, Mixup draws, masks and SGD
state; only the arithmetic is shared. The weights of all members are stacked along a new first
dimension ([K, ...]) and one step runs torch.func.vmap over torch.func.functional_call, which turns
the convolutions into one grouped convolution and the FC layers into batched matmuls: one set of
kernel launches for K models, which is what a GPU needs for a net this small. The members' losses
are summed, so each member's gradient is exactly the gradient of its own loss, and SGD is elementwise,
so one optimizer over the stacked tensors does exactly what K optimizers would.

Results equal separate training up to float rounding (grouped kernels sum in another order). A
member's numbers do not depend on which other members share its stack, but may depend on how many: with
many threads the kernels split the work by the stack's size (seen with 16 CPU threads; 2 threads give
the same bits for every size). So fit_stacked takes the size to compute at and pads the stack with
throwaway copies up to it (a stack holds at least two: a stack of one rounds differently again), and a
cached model is reused only by a stack of the size it was trained in (cache.model_key). Members
without Mixup run the Mixup arithmetic with lambda = 1 and the identity partner, which gives their
plain loss bit for bit.
Pruning masks (torch.nn.utils.prune's weight_orig / weight_mask) are honoured as weight_orig * mask.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..compress.pruning import make_permanent
from ..data.prepare import Tensors
from ..models import prunable, stateless
from .engine import (
    Callback,
    EpochRecord,
    FitSpec,
    GraphedSteps,
    batch_loss,
    draw_mixup,
    drop_stale_autograd,
    end_epoch,
    sgd,
    sgd_step,
    steps_per_epoch,
    use_graphs,
)


@dataclass
class Member:
    """One model of a stack and what makes it its own: spec (its Mixup alpha or None), generators, observers."""
    model: nn.Module  # trained in place; may carry torch.nn.utils.prune masks
    spec: FitSpec
    order_gen: torch.Generator
    mixup_gen: torch.Generator | None = None
    callbacks: Sequence[Callback] = ()
    label: str = "model"  # names the member in error messages


def stackable(model: nn.Module, spec: FitSpec) -> bool:
    """Whether a model can train in a stack: no per-step hook (gradual pruning), no dropout (its masks
    come from a per-model generator inside forward), no teacher (distillation runs each member's own teacher
    on its own mixed batch, outside what vmap can share) and no state besides conv/FC weights (stateless)."""
    return (spec.step_hook is None and spec.teacher is None and not getattr(model, "dropout", 0)
            and stateless(model))


def trainable(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, masks) by plain names ('conv1.weight', ...): a pruned tensor's parameter is its
    `*_orig` and its mask the `*_mask` buffer, as torch.nn.utils.prune keeps them."""
    params, masks = {}, {}
    for name, layer in prunable(model):
        for kind in ("weight", "bias"):
            if getattr(layer, kind, None) is None:
                continue
            if hasattr(layer, f"{kind}_orig"):
                params[f"{name}.{kind}"] = getattr(layer, f"{kind}_orig")
                masks[f"{name}.{kind}"] = getattr(layer, f"{kind}_mask")
            else:
                params[f"{name}.{kind}"] = getattr(layer, kind)
    if sum(p.numel() for p in params.values()) != sum(p.numel() for p in model.parameters()):
        raise ValueError("fit_stacked: the model has parameters outside its conv/FC layers; train it with fit()")
    return params, masks


def _check_alike(members: Sequence[Member], n_train: int) -> None:
    """Members share everything but their draws: the arithmetic runs in lockstep."""
    first = members[0]
    shapes = {k: p.shape for k, p in trainable(first.model)[0].items()}
    for m in members:
        s, f = m.spec, first.spec
        same = ((s.epochs, s.batch_size, s.momentum, s.weight_decay, s.loss) == (f.epochs, f.batch_size, f.momentum,
                                                                                 f.weight_decay, f.loss)
                and all(s.lr(e) == f.lr(e) for e in range(s.epochs))
                and {k: p.shape for k, p in trainable(m.model)[0].items()} == shapes)
        if not same:
            raise ValueError(f"fit_stacked: {m.label} differs from {first.label} in epochs, batch size, LR, SGD "
                             "settings, loss or layer shapes; models trained together must share them")
        if not stackable(m.model, s):
            raise ValueError(f"fit_stacked: {m.label} has a step hook or dropout; train it with fit()")
        if s.mixup_alpha is not None and m.mixup_gen is None:
            raise ValueError(f"fit_stacked: {m.label} uses Mixup but has no mixup generator")
    if n_train == 0:
        raise ValueError("fit_stacked: the training split is empty")


def structure(model: nn.Module) -> nn.Module:
    """A copy of the model's structure with plain weights (no pruning re-parametrization), for functional_call."""
    drop_stale_autograd(model)  # prune's cached `weight` may hold an autograd graph, which deepcopy refuses
    return make_permanent(copy.deepcopy(model))


def _clone(gen: torch.Generator | None) -> torch.Generator | None:
    if gen is None:
        return None
    twin = torch.Generator(device=gen.device)
    twin.set_state(gen.get_state())
    return twin


class Stack:
    """The stacked state of K members: parameters [K, ...] (leaves of one optimizer) and masks [K, ...]."""

    def __init__(self, members: Sequence[Member], device: torch.device):
        self.loss = members[0].spec.loss
        parts = [trainable(m.model) for m in members]
        self.names = list(parts[0][0])
        masked = sorted({k for _, masks in parts for k in masks})
        with torch.no_grad():
            self.params = {k: torch.stack([p[k].detach().to(device) for p, _ in parts]).requires_grad_() for k in self.names}
            # a member without a mask on a tensor that others mask keeps all of it
            self.masks = {k: torch.stack([m[k].to(device) if k in m else torch.ones_like(p[k], device=device)
                                          for p, m in parts]) for k in masked}
        self.base = structure(members[0].model)  # its own weights are never used

    def member_loss(self, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, mixup: bool) -> torch.Tensor:
        """One member's batch loss (called under vmap: tensors here are one member's slices)."""
        weights = {k: p * masks[k] if k in masks else p for k, p in params.items()}

        def net(inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, weights, (inputs,))
        return batch_loss(net, x, y, lam if mixup else None, partner, self.loss)  # type: ignore[arg-type]

    def losses(self, x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor,
               mixup: bool) -> torch.Tensor:
        """Loss per member [K] for batches x [K,b,C,H,W], y [K,b], lam [K], partner [K,b]."""
        def one(params, masks, xk, yk, lk, pk):
            return self.member_loss(params, masks, xk, yk, lk, pk, mixup)
        return vmap(one)(self.params, self.masks, x, y, lam, partner)

    def write_back(self, members: Sequence[Member]) -> None:
        """Copy each member's slice into its own model (the `*_orig` tensors of pruned layers)."""
        with torch.no_grad():
            for i, m in enumerate(members):
                params, _ = trainable(m.model)
                for k in self.names:
                    params[k].copy_(self.params[k][i])


def _epoch_draws(members: Sequence[Member], n: int, batch_size: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch's draws of every member, in the order fit() draws them: data order [K, n], lambda per
    step [steps, K] (1 without Mixup) and Mixup partners [K, n] (per-batch identity without Mixup)."""
    perms = torch.stack([torch.randperm(n, generator=m.order_gen) for m in members])
    steps = steps_per_epoch(n, batch_size)
    lams = torch.ones(steps, len(members))
    identity = torch.cat([torch.arange(min(batch_size, n - i)) for i in range(0, n, batch_size)])
    partners = identity.repeat(len(members), 1)
    for k, m in enumerate(members):
        if m.spec.mixup_alpha is not None:
            lam, partner = draw_mixup(n, batch_size, m.spec.mixup_alpha, m.mixup_gen)
            lams[:, k] = torch.tensor(lam)
            partners[k] = partner
    return perms.to(device), lams.to(device), partners.to(device)


def _graphed(stack: Stack, opt: torch.optim.Optimizer, data: Tensors, k: int, batch_size: int, mixup: bool) -> GraphedSteps:
    x, y = data.train_x, data.train_y
    inputs = {"x": torch.zeros((k, batch_size, *x.shape[1:]), device=x.device, dtype=x.dtype),
              "y": torch.zeros((k, batch_size), device=y.device, dtype=y.dtype),
              "lam": torch.ones(k, device=x.device), "partner": torch.arange(batch_size, device=x.device).repeat(k, 1)}

    def step() -> torch.Tensor:
        return sgd_step(opt, lambda: stack.losses(inputs["x"], inputs["y"], inputs["lam"], inputs["partner"], mixup))
    return GraphedSteps(step, opt, inputs)


def fit_stacked(members: Sequence[Member], data: Tensors, phase: str = "train",
                size: int | None = None) -> list[list[EpochRecord]]:
    """Train every member in place, together, in a stack of `size` (default: the number of members, at
    least 2), padded with throwaway copies of the first member; evaluate each on the test split after
    every epoch. Returns each member's history, as fit() would; `seconds` is the wall time of the epoch."""
    if not members:
        return []
    members = list(members)
    n = len(data.train_x)
    _check_alike(members, n)
    least = max(2, len(members))
    size = least if size is None else size
    if size < least:
        raise ValueError(f"fit_stacked: size {size} is smaller than the stack it must hold "
                         f"({len(members)} member(s), at least 2)")
    if len(members) < size:  # twins with copied generators compute like any member and are dropped after
        m = members[0]
        drop_stale_autograd(m.model)  # prune's cached `weight` may hold an autograd graph, which deepcopy refuses
        twins = [Member(copy.deepcopy(m.model), m.spec, _clone(m.order_gen), _clone(m.mixup_gen), (), m.label)
                 for _ in range(size - len(members))]
        return fit_stacked(members + twins, data, phase)[:len(members)]
    spec, device = members[0].spec, data.train_x.device
    mixup = any(m.spec.mixup_alpha is not None for m in members)
    stack = Stack(members, device)
    opt = sgd(list(stack.params.values()), spec, device)
    graphed = (_graphed(stack, opt, data, len(members), spec.batch_size, mixup)
               if use_graphs(members[0].model, data.train_x, spec) else None)  # members are alike: one decides
    histories: list[list[EpochRecord]] = [[] for _ in members]
    for epoch in range(spec.epochs):
        lr = spec.lr(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        mean_losses = _train_epoch(stack, opt, data, members, spec, lr, mixup, graphed)
        seconds = time.perf_counter() - start
        stack.write_back(members)
        for m, hist, train_loss in zip(members, histories, mean_losses):
            hist.append(end_epoch(m.model, data, spec, phase, epoch, lr, train_loss, seconds, m.callbacks,
                                  f" ({m.label})"))
    return histories


def _train_epoch(stack: Stack, opt: torch.optim.Optimizer, data: Tensors, members: Sequence[Member], spec: FitSpec,
                 lr: float, mixup: bool, graphed: GraphedSteps | None) -> list[float]:
    """One pass over the training split for every member; returns each member's mean batch loss."""
    n, bs = len(data.train_x), spec.batch_size
    perms, lams, partners = _epoch_draws(members, n, bs, data.train_x.device)
    total = torch.zeros(len(members), device=data.train_x.device)
    for step, i in enumerate(range(0, n, bs)):
        idx = perms[:, i:i + bs]  # [K, b]
        xb, yb, lam, partner = data.train_x[idx], data.train_y[idx], lams[step], partners[:, i:i + bs]
        if graphed is not None and idx.shape[1] == bs:
            losses = graphed.run(lr, x=xb, y=yb, lam=lam, partner=partner)
        else:
            losses = sgd_step(opt, lambda: stack.losses(xb, yb, lam, partner, mixup))
        total += losses.detach()
    return [t / steps_per_epoch(n, bs) for t in total.tolist()]  # as fit(): float32 sum, float mean

