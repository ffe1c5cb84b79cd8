"""Many models in one pass (stacked.py): each member stays its own model, and its numbers do not depend on
which other models share its stack."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from mixprune import StudyConfig, load_fashion_mnist, reproduce
from mixprune.core.config import identity, with_overrides
from mixprune.core.paths import RunPaths
from mixprune.core.runtime import generator
from mixprune.data.prepare import Tensors
from mixprune.models import LeNet5, count_nonzero
from mixprune.study.variants import PAPER
from mixprune.train.engine import FitSpec, TrainingDiverged, fit
from mixprune.train.schedules import lr_steps

NAMES = tuple(v.name for v in PAPER)
from mixprune.compress.pruning import (
    GradualPruner,
    attach_masks,
    current_masks,
    l1_masks,
)
from mixprune.study.plan import stacking
from mixprune.train.stacked import Member, fit_stacked

from ..helpers import TINY, write_idx_set


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return Tensors(torch.randn(200, 1, 28, 28, generator=g), torch.randint(0, 10, (200,), generator=g),
                   torch.randn(50, 1, 28, 28, generator=g), torch.randint(0, 10, (50,), generator=g))


def member(seed: int, mixup: bool = False, masked: bool = False, epochs: int = 2, lr: float = 0.05) -> Member:
    model = LeNet5(generator=generator(seed, "init"))
    if masked:
        attach_masks(model, l1_masks(model, 0.2, 0.3))
    spec = FitSpec(epochs=epochs, lr=lr_steps(lr, 1, 0.1), batch_size=64, mixup_alpha=0.4 if mixup else None)
    return Member(model, spec, generator(seed, "order"), generator(seed, "mixup") if mixup else None,
                  label=f"seed {seed}{' mixup' if mixup else ''}")


def state(m: Member) -> list[torch.Tensor]:
    return [t.detach().clone() for t in m.model.state_dict().values()]


def records(history) -> list[tuple]:
    return [(r.epoch, r.lr, r.train_loss, r.test_loss, r.test_accuracy) for r in history]


@pytest.mark.parametrize("mixup, masked", [(False, False), (True, False), (False, True), (True, True)])
def test_a_stacked_member_trains_like_the_model_alone(data, mixup, masked):
    stacked = [member(0, mixup, masked), member(1, not mixup, masked)]
    histories = fit_stacked(stacked, data)
    for m, hist, seed, mix in zip(stacked, histories, (0, 1), (mixup, not mixup)):
        alone = member(seed, mix, masked)
        ref = fit(alone.model, data, alone.spec, alone.order_gen, alone.mixup_gen)
        for a, b in zip(state(m), state(alone)):
            assert torch.allclose(a, b, atol=1e-5), "stacking changed more than float rounding"
        assert [r.epoch for r in hist] == [1, 2] and [r.lr for r in hist] == [r.lr for r in ref]
        assert [r.train_loss for r in hist] == pytest.approx([r.train_loss for r in ref], abs=1e-4)
        # the generators advanced exactly as fit() advances them: a later phase draws the same numbers
        assert torch.equal(m.order_gen.get_state(), alone.order_gen.get_state())
        if mix:
            assert torch.equal(m.mixup_gen.get_state(), alone.mixup_gen.get_state())


@pytest.fixture
def many_threads():
    """16 threads, as on a 16-core machine: kernels then split the work by the stack's size (with 2 threads
    every size gives the same bits, which would hide it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(16)
    yield
    torch.set_num_threads(before)


def test_a_member_depends_on_the_size_of_its_stack_not_on_the_others(data, many_threads):
    """Bit for bit, for each size: whatever models share the stack, and padded with throwaway copies."""
    def run(others, size=None):
        m = member(0)
        histories = fit_stacked([*others, m], data, size=size)
        return state(m), records(histories[len(others)])
    sizes = {2: ([member(5, mixup=True)], [member(9)], []),  # the last ones are padded with copies
             4: ([member(6), member(7, mixup=True), member(8)],
                 [member(11, mixup=True), member(12), member(13, mixup=True)], [member(14)], [])}
    for size, groups in sizes.items():
        runs = [run(others, size) for others in groups]
        for st, rec in runs[1:]:
            assert rec == runs[0][1]
            assert all(torch.equal(a, b) for a, b in zip(st, runs[0][0])), f"stack of {size}"


def test_a_freshly_masked_member_can_be_padded(data):
    """Right after attach_masks, prune's `weight` carries an autograd graph (deepcopy refuses such tensors):
    the padded lone member trains, bit for bit as beside another masked model."""
    alone = member(0, masked=True)
    fit_stacked([alone], data)
    pair = [member(0, masked=True), member(1, mixup=True, masked=True)]
    fit_stacked(pair, data)
    assert all(torch.equal(a, b) for a, b in zip(state(alone), state(pair[0])))


def test_a_stack_smaller_than_its_members_is_refused(data):
    with pytest.raises(ValueError, match="size 2 is smaller than the stack it must hold \\(3 member"):
        fit_stacked([member(0), member(1), member(2)], data, size=2)
    with pytest.raises(ValueError, match="size 1 is smaller"):
        fit_stacked([member(0)], data, size=1)


def test_masks_are_held_and_only_the_members_own(data):
    a, b = member(0, masked=True), member(1, mixup=True, masked=True)
    before = [current_masks(m.model) for m in (a, b)]
    fit_stacked([a, b], data)
    for m, masks in zip((a, b), before):
        after = current_masks(m.model)
        assert all(torch.equal(masks[k], after[k]) for k in masks)
        assert count_nonzero(m.model) == sum(int(v.sum()) for v in masks.values()) + sum(
            p.numel() for n, p in m.model.named_parameters() if n.endswith("bias"))
    assert not all(torch.equal(before[0][k], before[1][k]) for k in before[0])  # different models, different masks


def test_each_member_reports_its_own_history(data):
    seen: dict[str, list[int]] = {"a": [], "b": []}
    a, b = member(0), member(1, mixup=True)
    a.callbacks = [lambda r: seen["a"].append(r.epoch)]
    b.callbacks = [lambda r: seen["b"].append(r.epoch)]
    ha, hb = fit_stacked([a, b], data, phase="finetune")
    assert seen == {"a": [1, 2], "b": [1, 2]}
    assert {r.phase for r in ha + hb} == {"finetune"} and records(ha) != records(hb)


def test_members_that_cannot_train_together_are_refused(data):
    with pytest.raises(ValueError, match="seed 1.*differs from seed 0"):
        fit_stacked([member(0), member(1, epochs=3)], data)
    with pytest.raises(ValueError, match="seed 1.*differs"):
        fit_stacked([member(0), member(1, lr=0.1)], data)
    hooked = member(1)
    hooked.spec = FitSpec(epochs=2, lr=hooked.spec.lr, batch_size=64,
                          step_hook=GradualPruner(hooked.model, {"fc1": 100}, end_step=4, every=1))
    with pytest.raises(ValueError, match="step hook or dropout"):
        fit_stacked([member(0), hooked], data)
    dropped = member(2)
    dropped.model.dropout = 0.25
    with pytest.raises(ValueError, match="seed 2.*dropout"):
        fit_stacked([member(0), dropped], data)


def test_divergence_names_the_member(data):
    bad = member(1)
    with torch.no_grad():
        bad.model.fc3.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"train epoch 1 \(seed 1\)"):
        fit_stacked([member(0), bad], data)


def test_zero_epochs_change_nothing(data):
    m = member(0, epochs=0)
    before = state(m)
    assert fit_stacked([m, member(1, epochs=0)], data) == [[], []]
    assert all(torch.equal(a, b) for a, b in zip(before, state(m)))


# ---- through the study ----

@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return load_fashion_mnist(write_idx_set(tmp_path_factory.mktemp("stk") / "data"), spec=TINY)


def study(ds, out, **over):
    cfg = with_overrides(StudyConfig(), {"seeds": [0, 1], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False, "threads": 1,
                                         "train.stack_models": True, "device": "cpu", "out": str(out), **over})
    return reproduce(cfg, dataset=ds)


def metrics(results, name, seed):
    m = results.metrics(name, seed)
    return m["test_accuracy"], m["test_loss"], m["per_class_f1"], m["params_nonzero"]


def test_a_stacked_study_matches_a_separate_one(ds, tmp_path):
    stacked = study(ds, tmp_path / "s")
    separate = study(ds, tmp_path / "p", **{"train.stack_models": False})
    assert stacked.complete and stacked.execution["stacked_chains"] == [4]
    assert separate.execution["stacked_chains"] == []
    for name in NAMES:
        for seed in (0, 1):
            a, b = metrics(stacked, name, seed), metrics(separate, name, seed)
            assert a[3] == b[3]  # same masks' sizes
            assert a[1] == pytest.approx(b[1], abs=1e-3)  # losses equal up to float rounding
    again = study(ds, tmp_path / "s2")
    assert all(metrics(again, n, s) == metrics(stacked, n, s) for n in NAMES for s in (0, 1))


@pytest.mark.slow
def test_one_chain_per_worker_is_not_stacked(ds, tmp_path):
    """With as many workers as chains there is nothing to stack: the numbers of separate training."""
    one = study(ds, tmp_path / "a", seeds=[0], workers=2)
    ref = study(ds, tmp_path / "b", seeds=[0], workers=2, **{"train.stack_models": False})
    assert one.execution["stacked_chains"] == [] and "nothing to stack" in one.execution["stack_note"]
    assert all(metrics(one, n, 0) == metrics(ref, n, 0) for n in NAMES)


@pytest.fixture(scope="module")
def ds200(tmp_path_factory):
    """Large enough for batches of 64, where the thread split depends on the stack's size."""
    spec = dataclasses.replace(TINY, counts={"train": 200, "test": 50})
    return load_fashion_mnist(write_idx_set(tmp_path_factory.mktemp("stk200") / "data", 200, 50), spec=spec)


def test_a_cached_stacked_model_is_the_one_a_fresh_run_trains(ds200, tmp_path):
    """Alpha 1 fills the cache; alpha 0.4 reuses A and C (trained in a stack of four) and trains B and D in
    a stack of four padded with copies: every model equals that of an alpha 0.4 run without the cache, bit
    for bit, with 16 threads (where the stack's size changes the rounding)."""
    cache, over = str(tmp_path / "cache"), {"threads": 16, "train.batch_size": 64}
    study(ds200, tmp_path / "c1", cache_dir=cache, **over)
    reused = study(ds200, tmp_path / "c2", cache_dir=cache, **over, **{"mixup.alpha": 0.4})
    fresh = study(ds200, tmp_path / "c3", **over, **{"mixup.alpha": 0.4})
    assert sorted(reused.execution["reused_models"]) == sorted(
        f"{n}-seed{s} (measured)" for n in ("baseline", "pruned") for s in (0, 1))
    assert all(metrics(reused, n, s) == metrics(fresh, n, s) for n in NAMES for s in (0, 1))
    for n in NAMES:  # the weights themselves, not only the (rounded) metrics
        for s in (0, 1):
            a, b = (load_file(str(RunPaths(tmp_path / d).model_file(n, s, "safetensors"))) for d in ("c2", "c3"))
            assert all(torch.equal(a[k], b[k]) for k in a), f"{n} seed {s}"


def test_gradual_pruning_fine_tunes_separately_in_a_stacked_study(ds, tmp_path):
    res = study(ds, tmp_path / "g", **{"prune.schedule": "gradual", "prune.gradual_every": 1})
    assert res.complete and res.execution["stacked_chains"] == [4] and res.execution["stack_note"] is None
    assert {res.metrics(n, 0)["params_nonzero"] for n in ("pruned", "mixup_pruned")} == {31_424}


def test_stacking_at_its_default_keeps_sweep_cell_names():
    """A field added later is left out of a cell's identity at its default (old sweep directories stay valid)."""
    assert "stack_models" not in identity(StudyConfig())["train"]
    for value in (True, False):
        assert identity(with_overrides(StudyConfig(), {"train.stack_models": value}))["train"]["stack_models"] is value


def test_stacking_is_the_default_on_a_gpu_only(ds, tmp_path):
    cfg, cpu, gpu = StudyConfig(), torch.device("cpu"), torch.device("cuda")
    assert cfg.train.stack_models is None and stacking(cfg, gpu) and not stacking(cfg, cpu)
    assert stacking(with_overrides(cfg, {"train.stack_models": True}), cpu)
    assert not stacking(with_overrides(cfg, {"train.stack_models": False}), gpu)
    assert not stacking(with_overrides(cfg, {"model.dropout": 0.25}), gpu)
    res = study(ds, tmp_path / "auto", **{"train.stack_models": None})  # on this CPU: separately, and no note
    assert res.execution["stacked_chains"] == [] and res.execution["stack_note"] is None


def test_dropout_turns_stacking_off_and_says_so(ds, tmp_path):
    res = study(ds, tmp_path / "d", seeds=[0], **{"model.dropout": 0.25})
    assert res.execution["stacked_chains"] == [] and "dropout" in res.execution["stack_note"]


def test_stack_models_flag():
    from mixprune.cli import _base_config, build_parser

    for argv, value in ((["--stack-models"], True), (["--no-stack-models"], False), ([], None)):
        args = build_parser().parse_args(["reproduce", *argv])
        assert _base_config(args, ()).train.stack_models is value
