"""Statistics over seeds: means with 95% confidence intervals and paired comparisons.

    ci = mean_ci([89.1, 89.4, 89.3])                  # {"mean", "std", "n", "ci95": [lo, hi]}
    cmp = paired([89.1, 89.4], [87.5, 87.6])          # b - a per seed: mean, CI, t-test p, Cohen's d_z

Paired comparisons use the same seeds on both sides: those models share initial weights and data
order, so the per-seed difference removes most of the seed-to-seed spread. Intervals use Student's t
(scipy.stats); with n < 2 there is no interval and no test.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95": None}
    std = statistics.stdev(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half]}


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """b - a per seed: mean difference with 95% CI, two-sided paired t-test p-value, effect size d_z."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    out = mean_ci(diffs)
    out["p_value"] = out["effect_size_dz"] = None
    if len(diffs) >= 2:
        sd = statistics.stdev(diffs)
        if sd > 0:
            out["p_value"] = float(stats.ttest_rel(b, a).pvalue)
            out["effect_size_dz"] = statistics.fmean(diffs) / sd
        else:
            out["p_value"] = 0.0 if statistics.fmean(diffs) != 0 else 1.0
    return out
