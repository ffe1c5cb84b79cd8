"""Reports over many runs: an alpha x sparsity sweep's tables, plots, Pareto fronts and the C11 verdict."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixprune import StudyConfig, load_fashion_mnist
from mixprune.cli import main
from mixprune.core.config import with_overrides
from mixprune.explore.sweep import run_sweep
from mixprune.reporting.compare import best_alphas, c11_verdict, find_runs, varying
from mixprune.reporting.stats import pareto

from ..helpers import TINY, write_idx_set


@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(0, 100), st.just("m")), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_undominated_points(points):
    front = pareto(points, cost=lambda p: p[0], score=lambda p: p[1])
    assert front  # the cheapest most accurate point always survives
    for p in front:
        assert not any(q[0] <= p[0] and q[1] > p[1] for q in points)
    for p in points:
        if p not in front:
            assert any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)


def _effect(alpha, sparsity, d, c, p):
    ci = {"mean": d, "ci95": None}
    return {"alpha": alpha, "sparsity": sparsity, "d": ci, "c": {"mean": c, "ci95": None},
            "d_minus_c": {"mean": d - c, "ci95": None, "p_value": p}, "run": "x"}


def test_c11_needs_a_significant_gain_and_a_rising_best_alpha():
    flat = [_effect(a, s, 80 - a, 80.5, 0.5) for s in (0.3, 0.6, 0.9) for a in (0.2, 1.0)]
    assert c11_verdict(best_alphas(flat)).startswith("not reproduced: at no sparsity")
    rising = [_effect(a, s, 80 + (2 if abs(a - s ** 0.5) < 0.2 else 0), 79, 0.01)
              for s in (0.09, 0.25, 0.81) for a in (0.3, 0.5, 0.9)]
    best = best_alphas(rising)
    assert [b["alpha"] for b in best] == [0.3, 0.5, 0.9] and all(b["significant"] for b in best)
    assert c11_verdict(best).startswith("reproduced")
    assert c11_verdict(best[:2]).startswith("not testable")


@pytest.mark.slow
def test_sweep_report_over_alpha_and_sparsity(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0, 1], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.min_run_time": 0.01, "bench.onnx": False})
    out = tmp_path / "sw"
    run_sweep(base, {"mixup.alpha": [0.0, 0.4], "prune.sparsity": [0.3, 0.7]}, out, dataset=ds)
    runs = find_runs(out)
    assert len(runs) == 4
    assert set(varying(runs)) == {"prune.sparsity", "mixup.alpha"}  # the amounts follow from the sparsity
    text = (out / "report.md").read_text()
    assert "4 complete runs" in text and "## Mixup strength x sparsity" in text and "**C11**" in text
    assert "## Pareto front: accuracy vs smallest file (bytes)" in text
    for png in ("accuracy_vs_sparsity", "best_alpha", "pareto_size", "pareto_latency", "layer_sparsity"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000, png
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    # the cache made the second alpha reuse Baseline and Pruned
    reused = [json.loads((d / "results.json").read_text())["execution"]["reused_models"] for d, _ in runs]
    assert sum(len(r) for r in reused) > 0
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()  # `mixprune report SWEEP_DIR`


def test_report_on_a_directory_without_runs_fails_cleanly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no complete run" in err and "Traceback" not in err
