"""Structured pruning and slimming: exact unit counts, the slimmed network computes what the masked one does."""

from __future__ import annotations

import copy

import pytest
import torch

from mixprune.compress.pruning import attach_masks, l1_masks, make_permanent
from mixprune.compress.slimming import removable_units, slim
from mixprune.compress.structured import slim_any, structured_keep, unit_groups
from mixprune.models import LeNet5, count_params, macs_per_image

from ..helpers import structurally_pruned


@pytest.fixture
def model():
    return LeNet5(generator=torch.Generator().manual_seed(0)).eval()


@pytest.fixture
def x():
    return torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_structured_keep_counts_and_norm_order(model):
    groups = unit_groups(model)
    keep = structured_keep(model, groups, {"conv1": 0.5, "conv2": 0.5, "fc1": 0.25, "fc2": 0.25})
    assert {n: int(k.sum()) for n, k in keep.items()} == {"conv1": 3, "conv2": 8, "fc1": 90, "fc2": 63}
    for name, k in keep.items():
        norms = getattr(model, name).weight.detach().flatten(1).abs().sum(1)
        assert norms[~k].max() <= norms[k].min()


def test_slimmed_equals_masked_and_is_smaller(model, x):
    pruned, keep = structurally_pruned(model, 0.5, 0.5)
    small = slim(pruned)
    assert small.widths == (3, 8, 60, 42)
    assert torch.allclose(small(x), pruned(x), atol=1e-5)
    library = slim_any(pruned)  # Torch-Pruning's removal gives the same network
    assert [p.shape for p in library.parameters()] == [p.shape for p in small.parameters()]
    assert torch.allclose(library(x), small(x), atol=1e-6)
    assert count_params(small) < count_params(pruned) / 2
    assert macs_per_image(small) < macs_per_image(pruned) / 2


def test_unstructured_dead_units_are_folded_exactly(model, x):
    with torch.no_grad():  # unit 2 of conv1 and neuron 7 of fc1 get no input; neuron 5 of fc2 feeds nothing
        model.conv1.weight[2] = 0
        model.conv1.bias[2] = 0.3
        model.fc1.weight[7] = 0
        model.fc1.bias[7] = 0.5
        model.fc3.weight[:, 5] = 0
    small = slim(model)
    assert small.widths == (5, 16, 119, 83)
    assert torch.allclose(small(x), model(x), atol=1e-5)


def test_cascade_removes_units_left_without_input(model, x):
    with torch.no_grad():
        model.conv2.weight[:, :] = 0  # conv2 reads nothing: all 16 filters output relu(bias)
    small = slim(model)
    assert small.widths[0] == 1 and small.widths[1] == 1  # only the shape-keeping unit stays
    assert torch.allclose(small(x), model(x), atol=1e-5)


def test_paper_unstructured_result_is_unchanged_by_slim(model, x):
    attach_masks(model, l1_masks(model, 0.2, 0.3))
    make_permanent(model)
    small = slim(model)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    # 20% / 30% of weights by magnitude never empties a whole filter or neuron: nothing to remove
    assert not any(bool(v.any()) for v in removable_units(model).values())
    assert small.widths == model.widths == (6, 16, 120, 84) and count_params(small) == count_params(model)


def test_slim_refuses_attached_masks(model):
    attach_masks(model, l1_masks(model, 0.2, 0.3))
    with pytest.raises(ValueError, match="make_permanent"):
        slim(model)


def test_slim_does_not_modify_its_input(model):
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.conv1.weight[0] = 0
    before = copy.deepcopy(model.state_dict())
    slim(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
