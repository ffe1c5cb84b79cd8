"""Statistics over seeds: means with 95% confidence intervals, paired comparisons, Pareto fronts; the one copy
of each, and of their formatting.

    ci = mean_ci([89.1, 89.4, 89.3])                  # {"mean", "std", "n", "ci95": [lo, hi]}
    cmp = paired([89.1, 89.4], [87.5, 87.6])          # b - a per seed: mean, CI, t-test p, Cohen's d_z
    format_ci(cmp, signed=True, n=True)               # '-1.70 [-2.97, -0.43] (n=2)'
    pareto(points, cost=..., score=...)               # the points no other point beats on both

Paired comparisons use the same seeds on both sides: those models share initial weights and data
order, so the per-seed difference removes most of the seed-to-seed spread. Intervals use Student's t
(scipy.stats); with n < 2 there is no interval and no test.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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


def format_ci(summary: dict[str, Any], digits: int = 2, signed: bool = False, n: bool = False) -> str:
    """'89.30 [89.01, 89.59]' from a mean_ci/paired summary: the mean, its 95% CI where there is one, signed
    numbers for differences, and the number of seeds when asked."""
    sign = "+" if signed else ""
    ci = summary.get("ci95")
    band = f" [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]" if ci else ""
    return f"{summary['mean']:{sign}.{digits}f}{band}" + (f" (n={summary['n']})" if n else "")


def pareto(items: list[T], cost: Callable[[T], float | None], score: Callable[[T], float]) -> list[T]:
    """The items no other item beats: none costs no more and scores higher, or costs less and scores no lower.
    Items without a cost are left out; the front comes sorted by cost (then by score, highest first)."""
    have = [i for i in items if cost(i) is not None]

    def beaten(p: T) -> bool:
        cp, sp = cost(p), score(p)
        return any(cost(q) <= cp and score(q) > sp or cost(q) < cp and score(q) >= sp for q in have)  # type: ignore
    return sorted((p for p in have if not beaten(p)), key=lambda p: (cost(p), -score(p)))  # type: ignore
