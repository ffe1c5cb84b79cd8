"""LeNet-5 of the paper's Table 1: shapes, parameter and MAC counts, seeded initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from mixprune.models import (
    LeNet5,
    count_nonzero,
    count_params,
    init_weights,
    macs_per_image,
    prunable,
    weight_sparsity,
)


def test_table1_shapes_and_counts():
    model = LeNet5()
    assert count_params(model) == 44_426
    assert sum(m.weight.numel() for _, m in prunable(model)) == 44_190  # prunable weights, biases excluded
    assert [n for n, _ in prunable(model)] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5),
                      "conv2.bias": (16,), "fc1.weight": (120, 256), "fc1.bias": (120,),
                      "fc2.weight": (84, 120), "fc2.bias": (84,), "fc3.weight": (10, 84), "fc3.bias": (10,)}
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_macs_match_table1():
    # conv1 6*24*24*25 + conv2 16*8*8*150 + 256*120 + 120*84 + 84*10
    assert macs_per_image(LeNet5()) == 281_640


def test_init_is_seeded_and_within_default_bounds():
    a = init_weights(LeNet5(), torch.Generator().manual_seed(3))
    b = init_weights(LeNet5(), torch.Generator().manual_seed(3))
    c = init_weights(LeNet5(), torch.Generator().manual_seed(4))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
        assert not torch.equal(va, vc), k
    for _, m in prunable(a):
        bound = 1 / math.sqrt(m.weight[0].numel())
        assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound
        assert m.weight.abs().max() > 0.9 * bound  # uses the whole range, as PyTorch's default does


def test_init_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    init_weights(LeNet5(), torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


def test_dropout_only_in_training_and_seeded():
    model = init_weights(LeNet5(dropout=0.25), torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    model.generator = torch.Generator().manual_seed(9)
    first = model(x)
    model.generator = torch.Generator().manual_seed(9)
    assert torch.equal(model(x), first)
    assert not torch.equal(first, model.eval()(x))


def test_sparsity_and_nonzero_counts():
    model = LeNet5()
    with torch.no_grad():
        model.fc1.weight.zero_()
    assert count_nonzero(model) == 44_426 - 30_720
    assert weight_sparsity(model) == pytest.approx(30_720 / 44_190)


def test_bad_dropout_rejected():
    with pytest.raises(ValueError, match="dropout must be in"):
        LeNet5(dropout=1.0)
