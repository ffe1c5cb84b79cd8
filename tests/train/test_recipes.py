"""Training recipes and distillation: LR schedules, label smoothing, the KD loss, KD variants and teachers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixprune import StudyConfig, load_fashion_mnist, reproduce
from mixprune.core.config import config_path, identity, load_config_file, with_overrides
from mixprune.core.errors import ConfigError
from mixprune.deploy.files import save_safetensors
from mixprune.models import build_model
from mixprune.study.cache import model_key
from mixprune.study.jobs import finetune_lr, training_lr
from mixprune.study.variants import PAPER, design_for
from mixprune.train.losses import (
    Distillation,
    SmoothedCrossEntropy,
    target_cross_entropy,
    training_loss,
)
from mixprune.train.schedules import lr_schedule, lr_steps

from ..helpers import TINY, assert_one_line_error, cli, write_idx_set


def test_step_schedule_is_the_papers_and_warmup_keeps_the_decay_epoch():
    paper = lr_steps(0.01, 8, 0.1)
    step = lr_schedule("step", 0.01, 10, 0, 8, 0.1)
    assert [step(e) for e in range(10)] == [paper(e) for e in range(10)]
    warm = lr_schedule("step", 0.01, 10, 3, 8, 0.1)
    assert [warm(e) for e in range(3)] == pytest.approx([0.0025, 0.005, 0.0075])
    assert [warm(e) for e in range(3, 10)] == [paper(e) for e in range(3, 10)]


def test_cosine_and_onecycle_shapes():
    cos = lr_schedule("cosine", 0.05, 10, 2)
    values = [cos(e) for e in range(10)]
    assert values[2] == 0.05 and values[:2] == pytest.approx([0.05 / 3, 0.1 / 3])
    assert all(a > b > 0 for a, b in zip(values[2:], values[3:]))
    one = lr_schedule("onecycle", 0.1, 20)
    ramp = [one(e) for e in range(20)]
    peak = ramp.index(max(ramp))
    assert ramp[0] == pytest.approx(0.1 / 25) and max(ramp) == pytest.approx(0.1) and peak == 6
    assert all(a < b for a, b in zip(ramp[:peak], ramp[1:peak + 1]))
    assert all(a > b for a, b in zip(ramp[peak:], ramp[peak + 1:])) and ramp[-1] < 0.01


def test_recipe_settings_are_checked_and_fine_tuning_follows_the_schedule():
    with pytest.raises(ConfigError, match="--warmup-epochs 5 .* more than --epochs"):
        with_overrides(StudyConfig(), {"train.epochs": 3, "train.warmup_epochs": 5})
    assert training_lr(with_overrides(StudyConfig(), {"train.lr_schedule": "cosine"}))(0) == 0.01
    with pytest.raises(ConfigError, match="--lr-schedule"):
        with_overrides(StudyConfig(), {"train.lr_schedule": "linear"})
    with pytest.raises(ConfigError, match="--label-smoothing"):
        with_overrides(StudyConfig(), {"train.label_smoothing": 1.0})
    assert [finetune_lr(StudyConfig())(e) for e in range(3)] == [0.001] * 3
    cos = finetune_lr(with_overrides(StudyConfig(), {"train.lr_schedule": "cosine", "prune.finetune_epochs": 4}))
    assert cos(0) == 0.001 and cos(3) < cos(0)


def test_the_strong_recipe_is_bundled_and_documented():
    path = config_path("strong")
    assert path.is_file() and path.read_text().count("#") > 5  # its choices are explained in the file
    cfg = load_config_file(path)
    assert cfg.train.lr_schedule == "cosine" and cfg.train.epochs > StudyConfig().train.epochs
    assert cfg.prune == with_overrides(StudyConfig(), {"prune.finetune_epochs": cfg.prune.finetune_epochs,
                                                       "prune.finetune_lr": cfg.prune.finetune_lr}).prune


def test_new_settings_at_their_defaults_leave_paper_identities_alone():
    ident = identity(StudyConfig())
    assert "distill" not in ident and "lr_schedule" not in ident["train"] and "label_smoothing" not in ident["train"]
    base = model_key(StudyConfig(), 0, "pruned", "f" * 16, "cpu", 1)
    hotter = with_overrides(StudyConfig(), {"distill.temperature": 2.0})  # no KD variant: no effect on the key
    assert model_key(hotter, 0, "pruned", "f" * 16, "cpu", 1) == base
    smoothed = with_overrides(StudyConfig(), {"train.label_smoothing": 0.1})
    assert model_key(smoothed, 0, "pruned", "f" * 16, "cpu", 1) != base


def test_kd_keys_depend_on_the_teacher_settings():
    cfg = with_overrides(StudyConfig(), {"distill.enabled": True})
    design = design_for(cfg)
    key = model_key(cfg, 0, "pruned_kd", "f" * 16, "cpu", 1, design=design)
    assert key != model_key(cfg, 0, "pruned", "f" * 16, "cpu", 1, design=design)
    hotter = with_overrides(cfg, {"distill.temperature": 8.0})
    assert model_key(hotter, 0, "pruned_kd", "f" * 16, "cpu", 1, design=design) != key


def test_label_smoothing_and_mixup_pair():
    logits, y = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    assert training_loss("ce") is target_cross_entropy
    smooth = training_loss("ce", label_smoothing=0.1)
    assert smooth == SmoothedCrossEntropy(0.1)  # equal settings, equal losses (stacked training compares them)
    assert smooth(logits, y, None, None) == F.cross_entropy(logits, y, label_smoothing=0.1)
    perm = torch.arange(8).flip(0)
    mixed = smooth(logits, y, 0.3, perm)
    expected = 0.3 * F.cross_entropy(logits, y, label_smoothing=0.1) + 0.7 * F.cross_entropy(
        logits, y[perm], label_smoothing=0.1)
    assert torch.allclose(mixed, expected)


def test_distillation_loss_is_hintons():
    g = torch.Generator().manual_seed(1)
    student, teacher, y = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g), torch.arange(6)
    kd = training_loss("kd", temperature=4.0, weight=0.9)
    assert isinstance(kd, Distillation)
    p_t = F.softmax(teacher / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / 4, 1))).sum(1).mean()
    expected = 0.1 * F.cross_entropy(student, y) + 0.9 * 16 * kl
    assert torch.allclose(kd(student, y, None, None, teacher), expected, atol=1e-6)
    assert torch.allclose(training_loss("kd", weight=0.0)(student, y, None, None, teacher), F.cross_entropy(student, y))
    assert training_loss("kd", weight=1.0)(student, y, None, None, student).abs().item() < 1e-6  # its own teacher
    with pytest.raises(ValueError, match="teacher's logits"):
        kd(student, y, None, None)
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        training_loss("l2")


def test_distill_adds_kd_variants_to_the_table():
    assert design_for(StudyConfig()).variants == PAPER
    design = design_for(with_overrides(StudyConfig(), {"distill.enabled": True}))
    assert design.names[4:] == ("pruned_kd", "mixup_pruned_kd") and design.is_paper()
    assert design.chains() == [("baseline", "pruned", "pruned_kd"), ("mixup", "mixup_pruned", "mixup_pruned_kd")]
    assert design["mixup_pruned_kd"].parent == "mixup" and design["pruned_kd"].loss == "kd"
    off = with_overrides(StudyConfig(), {"distill.enabled": True, "mixup.alpha": 0.0})
    assert design.twins(off) == {"mixup": "baseline", "mixup_pruned": "pruned", "mixup_pruned_kd": "pruned_kd"}
    with pytest.raises(ConfigError, match="--teacher t.safetensors needs --distill"):
        with_overrides(StudyConfig(), {"distill.teacher": "t.safetensors"})


@pytest.fixture(scope="module")
def tiny_kd(tmp_path_factory):
    """One tiny study with --distill (and label smoothing, cosine): its results and data."""
    tmp = tmp_path_factory.mktemp("kd")
    ds = load_fashion_mnist(write_idx_set(tmp / "d"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 2, "prune.finetune_epochs": 2, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False, "distill.enabled": True,
                                         "train.lr_schedule": "cosine", "train.label_smoothing": 0.1,
                                         "train.batch_size": 8, "out": str(tmp / "run")})
    return reproduce(cfg, dataset=ds), ds, cfg, tmp


def test_kd_variants_train_against_their_parents(tiny_kd):
    results, _, _, _ = tiny_kd
    assert results.names == ("baseline", "mixup", "pruned", "mixup_pruned", "pruned_kd", "mixup_pruned_kd")
    for name in ("pruned_kd", "mixup_pruned_kd"):
        seed = results.metrics(name, 0)
        twin = results.metrics(name.removesuffix("_kd"), 0)
        assert seed["params_nonzero"] == twin["params_nonzero"]  # same masks (same parent, same pruning)
        assert seed["test_loss"] != twin["test_loss"]  # another loss: other weights
    assert results.design.names[4:] == ("pruned_kd", "mixup_pruned_kd")
    assert math.isfinite(results.summary("pruned_kd", "test_accuracy")["mean"])


def test_a_teacher_file_replaces_the_parent_and_a_mismatched_one_is_refused(tiny_kd, tmp_path):
    results, ds, cfg, tmp = tiny_kd
    teacher = tmp / "run" / "models" / "baseline-seed0.safetensors"
    with_file = with_overrides(cfg, {"distill.teacher": str(teacher), "out": str(tmp_path / "file")})
    again = reproduce(with_file, dataset=ds)
    # the saved Baseline is the parent itself: the same teacher, the same numbers
    assert again.metrics("pruned_kd", 0)["test_loss"] == pytest.approx(
        results.metrics("pruned_kd", 0)["test_loss"], abs=1e-6)
    missing = with_overrides(cfg, {"distill.teacher": str(tmp_path / "missing.safetensors"),
                                   "out": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="no such file"):
        reproduce(missing, dataset=ds)
    five = build_model("lenet5", (1, 28, 28), 5, torch.Generator().manual_seed(0))
    save_safetensors(five, tmp_path / "five.safetensors")
    other = with_overrides(cfg, {"distill.teacher": str(tmp_path / "five.safetensors"), "out": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="not to this dataset's 10 classes"):
        reproduce(other, dataset=ds)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_kd_with_stacked_training(tiny_kd, tmp_path):
    """--stack-models: the paper's variants train stacked, the distilled ones (a teacher each) beside the stack."""
    results, ds, cfg, _ = tiny_kd
    stacked = reproduce(with_overrides(cfg, {"train.stack_models": True, "seeds": [0, 1], "out": str(tmp_path / "s")}),
                        dataset=ds)
    assert stacked.execution["stacked_chains"] == [4]  # 2 seeds x 2 chains in one worker
    for name in ("pruned_kd", "mixup_pruned_kd"):
        assert stacked.metrics(name, 0)["test_loss"] == pytest.approx(
            results.metrics(name, 0)["test_loss"], abs=1e-4)


@pytest.mark.parametrize("args, fragments", [
    (["--teacher", "t.safetensors"], ["--teacher t.safetensors needs --distill"]),
    (["--warmup-epochs", "50"], ["--warmup-epochs 50", "more than --epochs (10)"]),
    (["--lr-schedule", "linear"], ["invalid choice: 'linear'"]),
    (["--distill", "--kd-temperature", "0"], ["--kd-temperature", "must be > 0"]),
    (["--distill", "--teacher", "nowhere.safetensors"], ["--teacher nowhere.safetensors: no such file"]),
])
def test_cli_refuses_bad_recipe_and_distillation_flags(tmp_path, args, fragments):
    res = cli("reproduce", "--dataset", "digits", "--image-size", "28", "--out", str(tmp_path / "o"), *args)
    assert_one_line_error(res, *fragments)
    assert not (tmp_path / "o").exists()
