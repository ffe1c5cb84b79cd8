"""Mixup properties: identity at lambda = 1, convex combination, loss identity, seeded draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixprune.train.mixup import mix_inputs, mixup_loss, sample_lambda, sample_mixup


def test_lambda_one_returns_the_batch(generator):
    x = torch.randn(8, 1, 28, 28, generator=generator)
    perm = torch.randperm(8, generator=generator)
    assert torch.equal(mix_inputs(x, 1.0, perm), x)
    assert torch.allclose(mix_inputs(x, 0.0, perm), x[perm])


def test_convex_combination(generator):
    x = torch.randn(16, 1, 28, 28, generator=generator)
    lam, perm = sample_mixup(16, 1.0, generator)
    mixed = mix_inputs(x, lam, perm)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-6)
    lo, hi = torch.minimum(x, x[perm]), torch.maximum(x, x[perm])
    assert bool(((mixed >= lo - 1e-6) & (mixed <= hi + 1e-6)).all())


def test_loss_identity(generator):
    logits = torch.randn(10, 10, generator=generator)
    y = torch.arange(10)
    perm = torch.randperm(10, generator=generator)
    lam = 0.3
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    assert torch.allclose(mixup_loss(logits, y, lam, perm), expected)
    assert torch.allclose(mixup_loss(logits, y, 1.0, perm), F.cross_entropy(logits, y))
    assert torch.allclose(mixup_loss(logits, y, lam, torch.arange(10)), F.cross_entropy(logits, y))


def test_lambda_in_unit_interval_and_beta_moments():
    g = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = torch.tensor([sample_lambda(alpha, g) for _ in range(4000)])
        assert bool(((draws >= 0) & (draws <= 1)).all())
        var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
        assert draws.mean().item() == pytest.approx(0.5, abs=0.03)
        assert draws.var().item() == pytest.approx(var, rel=0.12)


def test_draws_follow_the_generator_only():
    a = [sample_mixup(8, 1.0, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0][0] == a[1][0] and torch.equal(a[0][1], a[1][1])
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    sample_mixup(8, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(1), before)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_nonpositive_alpha_rejected(alpha, generator):
    with pytest.raises(ValueError, match="alpha must be > 0"):
        sample_lambda(alpha, generator)
