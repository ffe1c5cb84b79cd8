"""`mixprune search`: candidates chosen on a validation split, Pareto fronts, the test split used once."""

from __future__ import annotations

import json

import pytest

from mixprune import StudyConfig, load_fashion_mnist
from mixprune.core.config import load_config_file, to_dict, with_overrides
from mixprune.core.errors import ConfigError
from mixprune.explore.search import (
    SearchSpec,
    candidates,
    choose,
    final_config,
    margin,
    pareto,
    run_search,
)

from ..helpers import TINY, assert_one_line_error, cli, write_idx_set


def point(acc: float, size: int, macs: float | None = 1.0, name: str = "c") -> dict:
    return {"candidate": name, "variant": "pruned", "encoding": "sparse_int8", "val_accuracy": acc, "bytes": size,
            "macs": macs, "latency": None}


def test_pareto_keeps_only_undominated_points():
    pts = [point(90, 100), point(89, 200), point(91, 300), point(91, 250), point(80, 50)]
    front = pareto(pts, "bytes")
    assert [(p["val_accuracy"], p["bytes"]) for p in front] == [(80, 50), (90, 100), (91, 250)]
    assert pareto(pts, "latency") == []  # no point has that cost


def test_choose_the_smallest_above_the_target_plus_its_standard_error():
    pts = [point(90.1, 100), point(90.9, 200), point(92.0, 400)]
    m = margin(90.0, 6000)
    assert m == pytest.approx(100 * (0.9 * 0.1 / 6000) ** 0.5)
    chosen, threshold = choose(pts, SearchSpec(min_accuracy=90.0), 6000)
    assert threshold == pytest.approx(90.0 + m) and chosen["bytes"] == 200  # 90.1 is within one SE of 90
    best, limit = choose(pts, SearchSpec(max_bytes=250), 6000)
    assert best["val_accuracy"] == 90.9 and limit == 250
    assert choose(pts, SearchSpec(min_accuracy=99.0), 6000)[0] is None


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --min-accuracy"),
    ({"min_accuracy": 90, "max_bytes": 10}, "exactly one of --min-accuracy"),
    ({"min_accuracy": 120}, "invalid --min-accuracy 120"),
    ({"max_bytes": 0}, "invalid --max-bytes 0"),
    ({"min_accuracy": 90, "objective": "flops"}, "invalid --objective 'flops'"),
    ({"min_accuracy": 90, "budget_minutes": 0}, "invalid --budget-minutes 0"),
    ({"min_accuracy": 90, "sparsities": (1.0,)}, "invalid --sparsities value 1.0"),
    ({"min_accuracy": 90, "methods": ("2:4",)}, "invalid --methods value '2:4'"),
])
def test_bad_search_specs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpec(**kwargs)


def test_candidates_see_only_the_validation_split_and_the_final_study_the_test_split():
    base = with_overrides(StudyConfig(), {"prune.schedule": "gradual"})
    todo = candidates(base, SearchSpec(min_accuracy=90, sparsities=(0.5, 0.9), max_drops=(1.0,)))
    names = [n for n, _ in todo]
    assert names == ["unstructured-s0.9-a1", "unstructured-s0.5-a1", "structured-s0.9-a1", "structured-s0.5-a1",
                     "structured-auto1-a1"]  # most compressed first
    for _, cfg in todo:
        assert (cfg.data.cv_fold, cfg.data.cv_folds, cfg.seeds, cfg.distill.enabled) == (0, 10, (0,), True)
    assert todo[-1][1].prune.ratios == "auto" and todo[-1][1].prune.max_drop == 1.0
    final = final_config(base, todo[0][1])
    assert final.data.cv_fold == -1 and final.seeds == base.seeds and final.prune.sparsity == 0.9


@pytest.mark.slow
def test_search_end_to_end_resumes_and_keeps_to_its_budget(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.latency": False, "train.batch_size": 8,
                                          "cache_dir": str(tmp_path / "cache")})  # shared by the three searches
    spec = SearchSpec(min_accuracy=1.0, sparsities=(0.5, 0.9), methods=("unstructured",), val_fraction=0.25)
    out = tmp_path / "search"
    summary = run_search(base, spec, out, dataset=ds)
    assert [c["status"] for c in summary["candidates"]] == ["run", "run"]
    for name in ("unstructured-s0.9-a1", "unstructured-s0.5-a1"):
        cand = json.loads((out / "candidates" / name / "results.json").read_text())
        assert cand["data"]["test_examples"] == 10 and "cross-validation" in cand["data"]["evaluation"]
    assert summary["validation_examples"] == 10
    chosen = summary["chosen"]
    assert chosen["val_accuracy"] >= summary["selection_threshold"]
    assert all(p["val_accuracy"] < summary["selection_threshold"] or p["bytes"] >= chosen["bytes"]
               for p in summary["points"])
    final = summary["final"]
    assert final["seeds"] == [0, 1, 2] and len(final["test_accuracy"]) == 3 and final["accuracy"]["ci95"]
    tested = json.loads((out / "final" / chosen["candidate"] / "results.json").read_text())
    assert tested["data"]["test_examples"] == 20 and tested["data"]["evaluation"] == "test split"
    files = set(final["files"])
    assert "config.toml" in files and any(f.startswith(chosen["variant"]) for f in files)
    rerun = load_config_file(out / "chosen" / "config.toml")
    assert to_dict(rerun) == to_dict(final_config(base, dict(candidates(base, spec))[chosen["candidate"]]))
    for f in ("search.md", "pareto.csv", "pareto.png"):
        assert (out / f).stat().st_size > 0
    assert "Pareto front: validation accuracy vs bytes" in (out / "search.md").read_text()
    again = run_search(base, spec, out, dataset=ds)
    assert [c["status"] for c in again["candidates"]] == ["earlier run", "earlier run"]
    assert again["final"]["test_accuracy"] == final["test_accuracy"]
    short = run_search(base, SearchSpec(min_accuracy=1.0, sparsities=(0.5, 0.9), methods=("unstructured",),
                                        val_fraction=0.25, budget_minutes=1e-6), tmp_path / "short", dataset=ds)
    assert short["candidates"][0]["status"] == "run" and short["candidates"][1]["status"].startswith("not run")


def test_cli_search_refuses_too_few_seeds_and_two_goals(tmp_path):
    res = cli("search", "--min-accuracy", "90", "--seeds", "0", "1", "--out", str(tmp_path / "s"))
    assert_one_line_error(res, "at least 3", "--seeds")
    res = cli("search", "--min-accuracy", "90", "--max-bytes", "100")
    assert_one_line_error(res, "not allowed with argument")
    assert not (tmp_path / "s").exists()
