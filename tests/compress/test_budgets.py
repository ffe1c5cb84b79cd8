"""Budgets: targets parsed with their units, a greedy removal path whose cost falls step by step, and the design
that meets each target sitting just under it."""

from __future__ import annotations

import copy

import pytest
import torch

from mixprune.compress.budgets import RemovalPath, floor, meet, parse_target, within_drop
from mixprune.compress.sensitivity import LADDER
from mixprune.compress.structured import shrink, unit_groups
from mixprune.core.errors import ConfigError
from mixprune.models import LeNet5, count_params, macs_per_image


@pytest.mark.parametrize("text,value,relative", [("0.5x", 0.5, True), ("1x", 1.0, True), ("0.25X", 0.25, True),
                                                 ("20000", 20000.0, False), ("1.5e4", 15000.0, False)])
def test_targets_parse(text, value, relative):
    t = parse_target("macs", text)
    assert (t.value, t.relative, t.label) == (value, relative, f"macs-{text}")
    assert t.absolute(1000.0) == (value * 1000.0 if relative else value)


@pytest.mark.parametrize("text", ["0x", "0", "-3", "1.5x", "abc", "nanx", "inf", "nan", "-0.5x", ""])
def test_bad_targets_are_refused_naming_the_flag(text):
    with pytest.raises(ConfigError, match="--target-params"):
        parse_target("params", text)


@pytest.fixture(scope="module")
def lenet():
    model = LeNet5(generator=torch.Generator().manual_seed(0)).eval()
    groups = unit_groups(model)
    # drops that grow with the share removed, conv2 the most sensitive
    rows = [{"group": g.name, "removed": round(r * g.size), "drop": r * (5.0 if g.name == "conv2" else 1.0)}
            for g in groups for r in LADDER if 0 < round(r * g.size) < g.size]
    return model, groups, rows


def _macs(model):
    def cost(removal):
        return float(macs_per_image(shrink(copy.deepcopy(model), {n: list(range(k)) for n, k in removal.items() if k})))
    return cost


def test_the_path_moves_one_group_a_rung_at_a_time_and_its_cost_falls(lenet):
    model, groups, rows = lenet
    path = RemovalPath(groups, rows, _macs(model))
    i = 0
    while path[i] is not None:
        i += 1
    steps = path.steps
    assert steps[0].cost == macs_per_image(model) and steps[0].drop == 0
    for a, b in zip(steps, steps[1:]):
        changed = [n for n in a.removal if a.removal[n] != b.removal[n]]
        assert changed == [b.moved] and b.removal[b.moved] > a.removal[b.moved]
        assert b.cost <= a.cost and b.drop >= a.drop
    assert steps[-1].removal == floor(path) == {g.name: round(0.9 * g.size) for g in groups}


@pytest.mark.parametrize("share", [0.7, 0.5, 0.25])
def test_meet_lands_just_under_a_macs_target(lenet, share):
    model, groups, rows = lenet
    cost = _macs(model)
    limit = share * macs_per_image(model)
    step = meet(RemovalPath(groups, rows, cost), cost, limit)
    assert step is not None and step.cost == cost(step.removal)
    assert 0.95 * limit <= step.cost <= limit  # within 5 percent of the target, never over it


def test_meet_with_a_parameter_measure_and_an_unreachable_limit(lenet):
    model, groups, rows = lenet

    def params(removal):
        return float(count_params(shrink(copy.deepcopy(model), {n: list(range(k)) for n, k in removal.items() if k})))
    path = RemovalPath(groups, rows, params)
    step = meet(path, params, 0.4 * count_params(model))
    assert 0.95 * 0.4 * count_params(model) <= params(step.removal) <= 0.4 * count_params(model)
    assert meet(path, params, 100.0) is None  # below what removing 90% of every group reaches
    assert meet(path, params, 10.0 * count_params(model)).removal == {g.name: 0 for g in groups}


def test_an_accuracy_budget_alone_stops_before_the_predicted_drop_exceeds_it(lenet):
    model, groups, rows = lenet
    path = RemovalPath(groups, rows, _macs(model))
    step = within_drop(path, 1.0)
    assert step.drop <= 1.0 and step.cost < path.steps[0].cost
    i = path.steps.index(step)
    assert path[i + 1] is None or path[i + 1].drop > 1.0
