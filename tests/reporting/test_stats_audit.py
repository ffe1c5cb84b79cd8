"""Statistics over seeds and the claims audit, on numbers made here."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sst

from mixprune.reporting.audit import audit_claims
from mixprune.reporting.stats import mean_ci, paired
from mixprune.study.results import Results


def test_mean_ci_by_hand():
    ci = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert ci["mean"] == 2.0 and ci["std"] == 1.0 and ci["ci95"] == pytest.approx([2 - half, 2 + half])
    assert mean_ci([5.0])["ci95"] is None


def test_paired_matches_scipy_and_orders_b_minus_a():
    a, b = [89.1, 89.4, 89.0, 89.3, 89.2], [87.4, 87.6, 87.5, 87.3, 87.7]
    cmp = paired(a, b)
    assert cmp["mean"] == pytest.approx(sum(b) / 5 - sum(a) / 5)
    assert cmp["p_value"] == pytest.approx(sst.ttest_rel(b, a).pvalue)
    assert cmp["effect_size_dz"] < 0 and cmp["ci95"][1] < 0
    with pytest.raises(ValueError, match="equal lengths"):
        paired([1.0], [1.0, 2.0])


def fake_results(n: int, mixup_gain: float, amounts=(0.2, 0.3)) -> Results:
    """Results of made-up numbers: baseline ~89, Mixup shifted by mixup_gain, pruning costs 0.3 points."""
    def seed_metrics(acc, s, loss):
        f1 = [0.9] * 10
        f1[6] = 0.6 + 0.01 * (acc - 89)  # a "difficult" class that moves with accuracy
        return {"test_accuracy": acc, "test_loss": loss, "per_class_f1": f1, "param_reduction": 0.293,
                "size_bytes_fp16": 89_676, "size_bytes_sparse": 69_636, "latency_ms_batch1": 0.14,
                "noise_accuracy": acc - 10, "fgsm_accuracy": acc - 40}
    jitter = [0.1 * ((3 * s) % 5 - 2) for s in range(n)]
    models = {}
    for name, shift, loss in (("baseline", 0.0, 0.30), ("mixup", mixup_gain, 0.30 - mixup_gain / 20),
                              ("pruned", -0.3, 0.31), ("mixup_pruned", mixup_gain - 0.3, 0.31 - mixup_gain / 20)):
        models[name] = {"seeds": {str(s): seed_metrics(89 + shift + jitter[s] + 0.01 * (s % 2), s, loss + 0.001 * s)
                                  for s in range(n)}}
    return Results({"seeds": list(range(n)), "prune": {"conv_amount": amounts[0], "fc_amount": amounts[1],
                                                       "method": "unstructured"}}, models=models)


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_audit_reproduces_a_real_gain_and_refuses_a_loss():
    good = by_id(audit_claims(fake_results(5, +2.0)))
    assert good["C1"]["verdict"] == "reproduced" and good["C1"]["p_value"] < 0.05
    assert good["C2"]["verdict"] == "reproduced"
    assert good["C3"]["verdict"] == "reproduced"  # 0.3-point drops stay far above -1.5
    assert good["C12"]["verdict"] == "reproduced"
    bad = by_id(audit_claims(fake_results(5, -1.7)))
    assert bad["C1"]["verdict"] == "not reproduced" and bad["C1"]["ours"].startswith("-1.70")
    assert bad["C8"]["verdict"] == "not reproduced"


def test_audit_needs_five_seeds_and_names_untestable_claims():
    rows = by_id(audit_claims(fake_results(3, +2.0)))
    assert rows["C1"]["verdict"] == rows["C4"]["verdict"] == "too few seeds"
    assert rows["C5"]["verdict"] == rows["C7"]["verdict"] == "inconsistent in the paper"
    assert rows["C10"]["verdict"] == rows["C11"]["verdict"] == "not testable here"
    assert rows["C6"]["verdict"] == "not reproduced" and rows["C6"]["ours"].startswith("1.00x")
    assert [r["id"] for r in audit_claims(fake_results(3, 0.0))] == [f"C{i}" for i in range(1, 13)]


def test_c5_judged_on_measurement_with_other_amounts():
    rows = by_id(audit_claims(fake_results(5, 0.0, amounts=(0.5, 0.9))))
    assert rows["C5"]["verdict"] == "not reproduced" and "29.3%" in rows["C5"]["ours"]
