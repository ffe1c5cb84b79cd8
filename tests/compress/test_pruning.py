"""Pruning: exact counts, agreement with torch.nn.utils.prune, masks held while fine-tuning, clean files."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import prune

from mixprune.compress.pruning import (
    attach_masks,
    current_masks,
    l1_masks,
    make_permanent,
    pruned_counts,
)
from mixprune.data.prepare import Tensors
from mixprune.deploy.files import save_safetensors
from mixprune.models import LeNet5, count_nonzero, init_weights, prunable
from mixprune.train.engine import FitSpec, fit
from mixprune.train.schedules import constant_lr


@pytest.fixture
def model():
    return init_weights(LeNet5(), torch.Generator().manual_seed(0))


def test_paper_counts_per_layer(model):
    assert pruned_counts(model, 0.2, 0.3) == {"conv1": 30, "conv2": 480, "fc1": 9216, "fc2": 3024, "fc3": 252}
    masks = l1_masks(model, 0.2, 0.3)
    assert {n: int((~m).sum()) for n, m in masks.items()} == pruned_counts(model, 0.2, 0.3)
    attach_masks(model, masks)
    assert count_nonzero(model) == 31_424


def test_masks_equal_torch_l1_unstructured(model):
    masks = l1_masks(model, 0.2, 0.3)
    reference = copy.deepcopy(model)
    for _, m in prunable(reference):
        prune.l1_unstructured(m, "weight", amount=0.2 if isinstance(m, torch.nn.Conv2d) else 0.3)
    for name, m in prunable(reference):
        assert torch.equal(masks[name], m.weight_mask.bool()), name


def test_l1_masks_do_not_modify_model(model):
    before = copy.deepcopy(model.state_dict())
    l1_masks(model, 0.5, 0.5, scope="global")
    l1_masks(model, 0.5, 0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(prune.is_pruned(m) for _, m in prunable(model))


def test_threshold_order_layerwise_and_global(model):
    for scope in ("layerwise", "global"):
        masks = l1_masks(model, 0.4, 0.6, scope)
        groups = [dict(prunable(model))[n].weight.detach().abs() for n in masks]
        if scope == "global":
            kept = torch.cat([w[m] for w, m in zip(groups, masks.values())])
            gone = torch.cat([w[~m] for w, m in zip(groups, masks.values())])
            assert gone.max() <= kept.min()
        else:
            for w, m in zip(groups, masks.values()):
                assert w[~m].max() <= w[m].min()


def test_global_removes_same_total(model):
    masks = l1_masks(model, 0.2, 0.3, scope="global")
    assert sum(int((~m).sum()) for m in masks.values()) == 13_002


def test_zero_amount_prunes_nothing(model):
    assert all(bool(m.all()) for m in l1_masks(model, 0.0, 0.0).values())


def test_masks_hold_through_finetuning_then_become_permanent(model, tmp_path):
    g = torch.Generator().manual_seed(1)
    data = Tensors(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g),
                   torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
    masks = l1_masks(model, 0.2, 0.3)
    attach_masks(model, masks)
    before = copy.deepcopy(model.state_dict())
    fit(model, data, FitSpec(epochs=2, lr=constant_lr(0.1), batch_size=16, mixup_alpha=1.0),
        torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    assert all(torch.equal(masks[n], m) for n, m in current_masks(model).items())  # masks unchanged
    for name, m in prunable(model):
        assert bool((m.weight[~masks[name]] == 0).all())  # pruned weights stay zero
        assert not torch.equal(m.weight_orig, before[f"{name}.weight_orig"])  # the rest did train
    make_permanent(model)
    assert count_nonzero(model) == 31_424
    keys = set(model.state_dict())
    assert not any("weight_orig" in k or "weight_mask" in k for k in keys)
    from safetensors import safe_open
    path = tmp_path / "m.safetensors"
    save_safetensors(model, path)
    with safe_open(str(path), "pt") as fh:
        assert set(fh.keys()) == {f"{n}.{p}" for n in ("conv1", "conv2", "fc1", "fc2", "fc3") for p in ("weight", "bias")}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_amount_rejected(model, bad):
    with pytest.raises(ValueError, match="conv_amount must be in"):
        l1_masks(model, bad, 0.3)


def test_unknown_scope_rejected(model):
    with pytest.raises(ValueError, match="scope must be"):
        l1_masks(model, 0.2, 0.3, scope="channel")


def test_two_four_masks(model):
    from mixprune.compress.pruning import semi_structured_masks

    masks, skipped = semi_structured_masks(model)
    assert set(masks) == {"fc1", "fc2", "fc3"} and set(skipped) == {"conv1", "conv2"}
    assert "150 inputs do not split into groups of 4" in skipped["conv2"]
    for name, mask in masks.items():
        w = dict(prunable(model))[name].weight.detach().abs()
        groups, wg = mask.view(mask.shape[0], -1, 4), w.view(w.shape[0], -1, 4)
        assert bool((groups.sum(2) == 2).all())  # exactly 2 of every 4
        kept_min = torch.where(groups, wg, torch.full_like(wg, float("inf"))).min(2).values
        dropped_max = torch.where(~groups, wg, torch.full_like(wg, -1.0)).max(2).values
        assert bool((dropped_max <= kept_min).all())  # the 2 largest of each group stay
