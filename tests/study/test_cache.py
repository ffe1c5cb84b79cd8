"""Reusing trained models: keys cover what a model depends on, reuse gives the numbers a fresh run gives."""

from __future__ import annotations

import json

import pytest
import torch

from mixprune import StudyConfig, load_fashion_mnist, reproduce
from mixprune.core.config import with_overrides
from mixprune.core.runtime import available_cores
from mixprune.study.cache import model_key

from ..helpers import TINY, write_idx_set

BASE = {"seeds": [0], "train.epochs": 2, "prune.finetune_epochs": 1, "workers": 1, "threads": 1,
        "bench.min_run_time": 0.01, "bench.onnx": False}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return load_fashion_mnist(write_idx_set(tmp_path_factory.mktemp("data") / "d"), spec=TINY)


def _run(ds, out, **extra):
    return reproduce(with_overrides(StudyConfig(), {**BASE, "out": str(out), **extra}), dataset=ds)


def _losses(res):
    return {n: res.metrics(n, 0)["test_loss"] for n in res.names}


def test_keys_cover_what_each_model_depends_on():
    cfg = StudyConfig()
    key = lambda c, name, seed=0, threads=1: model_key(c, seed, name, "fp", "cpu", threads)  # noqa: E731
    other_alpha = with_overrides(cfg, {"mixup.alpha": 0.2})
    assert key(cfg, "baseline") == key(other_alpha, "baseline")  # A does not see alpha
    assert key(cfg, "pruned") == key(other_alpha, "pruned")  # nor does C (fine-tuned without Mixup)
    assert key(cfg, "mixup") != key(other_alpha, "mixup")
    assert key(cfg, "mixup_pruned") != key(other_alpha, "mixup_pruned")
    sparser = with_overrides(cfg, {"prune.sparsity": 0.9})
    assert key(cfg, "baseline") == key(sparser, "baseline") and key(cfg, "pruned") != key(sparser, "pruned")
    assert len({key(cfg, "baseline", seed=1), key(cfg, "baseline", threads=2), key(cfg, "baseline")}) == 3
    no_mixup = with_overrides(cfg, {"mixup.alpha": 0.0})
    assert key(no_mixup, "mixup") == key(no_mixup, "baseline")  # alpha 0: B trains exactly as A
    always = with_overrides(cfg, {"prune.finetune_mixup": "always"})
    assert key(always, "pruned") != key(cfg, "pruned") and key(always, "baseline") == key(cfg, "baseline")


def test_reuse_gives_the_numbers_of_a_fresh_run(ds, tmp_path):
    cache = str(tmp_path / "cache")
    fresh = _run(ds, tmp_path / "fresh")
    first = _run(ds, tmp_path / "a", cache_dir=cache)
    assert first.execution["reused_models"] == []
    assert _losses(first) == _losses(fresh)
    again = _run(ds, tmp_path / "b", cache_dir=cache)
    assert sorted(again.execution["reused_models"]) == sorted(
        f"{n}-seed0 (measured)" for n in ("baseline", "mixup", "pruned", "mixup_pruned"))
    assert _losses(again) == _losses(first)
    for f in (tmp_path / "a" / "models").iterdir():  # every artifact is there, byte for byte
        assert (tmp_path / "b" / "models" / f.name).read_bytes() == f.read_bytes()


def test_a_new_alpha_reuses_baseline_and_pruned_only(ds, tmp_path):
    cache = str(tmp_path / "cache")
    _run(ds, tmp_path / "a", cache_dir=cache)
    res = _run(ds, tmp_path / "b", cache_dir=cache, **{"mixup.alpha": 0.4, "workers": 0})  # 0: one per task
    assert sorted(res.execution["reused_models"]) == ["baseline-seed0 (measured)", "pruned-seed0 (measured)"]
    fresh = _run(ds, tmp_path / "c", **{"mixup.alpha": 0.4})
    assert _losses(res) == _losses(fresh)
    assert res.execution["workers"] == 1  # chain A is read in this process; only chain B needs a worker


def test_spreading_uneven_tasks_over_more_workers_keeps_one_thread_each():
    """3 one-thread tasks on 2 cores run as 3 workers (1.5 task times instead of 2 rounds); threads stay 1."""
    from mixprune.study.plan import plan_workers, spread

    assert [spread(n, 2) for n in (3, 4, 5, 9)] == [3, 2, 2, 3]
    assert spread(5, 4) == 5 and spread(8, 4) == 4
    for n in range(1, 12):
        workers, threads = plan_workers(StudyConfig(), torch.device("cpu"), n)
        assert threads == max(1, available_cores() // min(n, available_cores()))  # as one worker per core had it
        assert workers == (n if n <= available_cores() else spread(n, available_cores()))


def test_alpha_zero_trains_b_and_d_as_a_and_c(ds, tmp_path):
    res = _run(ds, tmp_path / "r", **{"mixup.alpha": 0.0})
    loss = _losses(res)
    assert loss["mixup"] == loss["baseline"] and loss["mixup_pruned"] == loss["pruned"]
    assert "trained and measured once" in res.execution["note"]
    models = tmp_path / "r" / "models"
    assert (models / "mixup-seed0.safetensors").read_bytes() == (models / "baseline-seed0.safetensors").read_bytes()
    assert res.metrics("mixup", 0)["latency_ms_batch1"] == res.metrics("baseline", 0)["latency_ms_batch1"]


def test_a_corrupt_cache_entry_is_retrained(ds, tmp_path):
    cache = tmp_path / "cache"
    first = _run(ds, tmp_path / "a", cache_dir=str(cache))
    for weights in cache.glob("*/weights.safetensors"):
        weights.write_bytes(b"not safetensors")
    res = _run(ds, tmp_path / "b", cache_dir=str(cache))
    assert res.execution["reused_models"] == [] and _losses(res) == _losses(first)
    again = _run(ds, tmp_path / "c", cache_dir=str(cache))  # the entries were rebuilt
    assert len(again.execution["reused_models"]) == 4
    from safetensors.torch import save_file
    for weights in cache.glob("*/weights.safetensors"):  # readable, but weights of another shape
        save_file({"conv1.weight": torch.zeros(3, 1, 5, 5)}, str(weights))
    wrong = _run(ds, tmp_path / "d", cache_dir=str(cache))
    assert wrong.execution["reused_models"] == [] and _losses(wrong) == _losses(first)


def test_cv_folds_are_disjoint_and_cover_the_training_set(ds):
    held = []
    for fold in range(4):
        split = ds.cv_split(fold, 4)
        assert len(split.train_y) + len(split.test_y) == len(ds.train_y) == 40
        held.append(split.test_x.flatten(1))
    everything = torch.cat(held)
    assert len(everything) == 40
    assert torch.equal(everything.sum(0), ds.train_x.flatten(1).sum(0))  # each image held out once
    with pytest.raises(ValueError, match="fold must be in"):
        ds.cv_split(4, 4)


def test_cv_run_evaluates_on_the_held_out_fold(ds, tmp_path):
    res = _run(ds, tmp_path / "cv", **{"data.cv_fold": 1, "data.cv_folds": 4, "bench.latency": False})
    assert res.data["train_examples"] == 30 and res.data["test_examples"] == 10
    assert res.data["evaluation"].startswith("cross-validation fold 1 of 4")
    saved = json.loads((tmp_path / "cv" / "results.json").read_text())
    assert saved["config"]["data"]["cv_fold"] == 1


def test_sparsity_sets_both_amounts():
    cfg = with_overrides(StudyConfig(), {"prune.sparsity": 0.8})
    assert (cfg.prune.conv_amount, cfg.prune.fc_amount) == (0.8, 0.8)


def test_a_cache_that_cannot_be_written_is_skipped_not_fatal(ds, tmp_path, monkeypatch):
    """A cache whose entries cannot be written (a full disk) is skipped and the run goes on; a --cache-dir where
    no directory can be is refused before anything is created."""
    import errno

    from mixprune.core.errors import OutputError
    from mixprune.study import cache

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache, "save_file", full)
    res = _run(ds, tmp_path / "r", cache_dir=str(tmp_path / "cache"))
    assert res.complete and res.execution["reused_models"] == []
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="--cache-dir .*Not a directory"):
        _run(ds, tmp_path / "s", cache_dir=str(blocker / "cache"))
    assert not (tmp_path / "s").exists()


def test_cv_fold_must_be_below_the_fold_count():
    from mixprune.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--cv-fold"):
        with_overrides(StudyConfig(), {"data.cv_fold": 5, "data.cv_folds": 5})
