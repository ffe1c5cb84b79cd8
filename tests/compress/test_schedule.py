"""Gradual pruning: the cubic schedule, masks that only shrink, exact final counts."""

from __future__ import annotations

import pytest
import torch

from mixprune.compress.pruning import (
    GradualPruner,
    cubic_fraction,
    current_masks,
    make_permanent,
    pruned_counts,
)
from mixprune.data.prepare import Tensors
from mixprune.models import LeNet5, count_nonzero, prunable
from mixprune.train.engine import FitSpec, fit, steps_per_epoch
from mixprune.train.schedules import constant_lr


def test_cubic_fraction_shape():
    assert cubic_fraction(0, 100) == 0.0
    assert cubic_fraction(50, 100) == pytest.approx(1 - 0.5**3)
    assert cubic_fraction(100, 100) == cubic_fraction(250, 100) == 1.0
    values = [cubic_fraction(s, 100) for s in range(101)]
    assert values == sorted(values)  # non-decreasing
    assert values[10] - values[0] > values[100] - values[90]  # fast early, slow late


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_masks_only_shrink_and_reach_exact_counts(scope):
    g = torch.Generator().manual_seed(0)
    data = Tensors(torch.randn(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g),
                   torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
    model = LeNet5(generator=torch.Generator().manual_seed(1))
    final = pruned_counts(model, 0.5, 0.9)
    total_steps = 3 * steps_per_epoch(96, 16)
    pruner = GradualPruner(model, final, end_step=12, every=2, scope=scope)
    snapshots = []

    def hook(step):
        pruner(step)
        snapshots.append((step, current_masks(model)))

    fit(model, data, FitSpec(epochs=3, lr=constant_lr(0.05), batch_size=16, step_hook=hook),
        torch.Generator().manual_seed(2))
    assert len(snapshots) == total_steps
    for (_, a), (_, b) in zip(snapshots, snapshots[1:]):
        assert all(bool((b[n] <= a[n]).all()) for n in a)  # a weight once pruned stays pruned
    pruned_at = [sum(int((~m).sum()) for m in masks.values()) for _, masks in snapshots]
    assert pruned_at == sorted(pruned_at) and pruned_at[0] == 0 < pruned_at[1]  # first update at step 2
    assert pruned_at[11] == pruned_at[-1] == sum(final.values())  # final count from end_step on
    if scope == "layerwise":
        assert {n: int((~m).sum()) for n, m in snapshots[-1][1].items()} == final
    make_permanent(model)
    assert count_nonzero(model) == 44_426 - sum(final.values())
    for name, m in prunable(model):
        assert bool((m.weight[~snapshots[-1][1][name]] == 0).all())
