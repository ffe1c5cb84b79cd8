"""The claims audit: each claim of the paper (C1-C12 in shared/seed/NOTES.md) against this run's numbers.

    rows = audit_claims(results)   # [{"id": "C1", "claim", "paper", "ours", "p_value", "verdict", "reason"}, ...]
    add_claims(results)            # results.claims: the audit where the run is the paper's study, else []

Verdicts, decided by fixed rules stated in each row's reason:
- reproduced: the measured effect has the paper's direction (and size, where the claim names one) and
  a paired t-test over >= MIN_SEEDS seeds gives p < ALPHA;
- not reproduced: >= MIN_SEEDS seeds and the rule above fails;
- too few seeds: a statistical claim with fewer than MIN_SEEDS seeds (numbers are still shown);
- inconsistent in the paper: the paper's own numbers cannot all be true;
- not testable here: the run has nothing to measure it with (the reason says what would).
"""

from __future__ import annotations

import statistics
from typing import Any

from ..study.results import Results
from ..study.variants import PAPER
from .stats import format_ci, paired

MIN_SEEDS, ALPHA = 5, 0.05
PAPER_AMOUNTS = (0.2, 0.3)
DIFFICULT_CLASSES = 3  # the lowest-F1 classes of the baseline


class MissingMetric(LookupError):
    """The run did not record a metric a claim needs."""


def _seeds(results: Results, name: str, key: str) -> list[float]:
    values = [float(v) for v in results.values(name, key)]
    if not values:
        raise MissingMetric(key)
    return values


def _fmt(cmp: dict[str, Any], digits: int = 2) -> str:
    return format_ci(cmp, digits, signed=True, n=True)


def _test(cmp: dict[str, Any], direction: int, minimum: float = 0.0) -> str:
    """Verdict for a paired difference that the paper says is > minimum (direction 1) or < -minimum (-1)."""
    if cmp["n"] < MIN_SEEDS:
        return "too few seeds"
    effect = direction * cmp["mean"]
    return "reproduced" if effect > minimum and cmp["p_value"] is not None and cmp["p_value"] < ALPHA \
        else "not reproduced"


def _row(cid: str, claim: str, paper_fig: str, ours: str, verdict: str, reason: str,
         p_value: float | None = None) -> dict[str, Any]:
    return {"id": cid, "claim": claim, "paper": paper_fig, "ours": ours, "p_value": p_value, "verdict": verdict,
            "reason": reason}


def _paired_claim(results: Results, cid: str, claim: str, paper_fig: str, a: tuple[str, str], b: tuple[str, str],
                  direction: int, reason: str, minimum: float = 0.0, digits: int = 2) -> dict[str, Any]:
    cmp = paired(_seeds(results, *a), _seeds(results, *b))
    return _row(cid, claim, paper_fig, _fmt(cmp, digits), _test(cmp, direction, minimum), reason, cmp["p_value"])


def _drops(results: Results) -> tuple[list[float], list[float]]:
    acc = {v.name: _seeds(results, v.name, "test_accuracy") for v in PAPER}
    return ([c - a for a, c in zip(acc["baseline"], acc["pruned"])],
            [d - b for b, d in zip(acc["mixup"], acc["mixup_pruned"])])


def _difficult(results: Results) -> tuple[list[int], list[float], list[float]]:
    f1 = {n: [m["per_class_f1"] for _, m in sorted(results.seeds(n).items())] for n in ("baseline", "mixup")}
    mean_f1 = [statistics.fmean(row[c] for row in f1["baseline"]) for c in range(len(f1["baseline"][0]))]
    hard = sorted(range(len(mean_f1)), key=mean_f1.__getitem__)[:DIFFICULT_CLASSES]
    per_seed = {n: [100 * statistics.fmean(row[c] for c in hard) for row in rows] for n, rows in f1.items()}
    return hard, per_seed["baseline"], per_seed["mixup"]


CLAIMS = {"C1": "Mixup raises test accuracy", "C2": "Mixup lowers test loss", "C3": "Pruning keeps accuracy",
          "C4": "Mixup makes pruning more robust", "C5": "Pruning compresses parameters by 62.7%",
          "C6": "Pruning speeds inference", "C7": "Model D is small", "C8": "Mixup raises F1 of difficult classes",
          "C9": "Joint strategy beats pruning alone", "C10": "Edge speed-up on a Raspberry Pi 4B",
          "C11": "Best Mixup strength grows with sparsity (alpha ~ sqrt(s))", "C12": "Mixup improves robustness"}


def paper_setting(results: Results) -> bool:
    """Whether a run is the paper's study: its four variants, LeNet-5 on FashionMNIST. The claims are the
    paper's about that setting; on other data, networks or designs they are not audited."""
    return (results.design.is_paper() and results.config["model"]["arch"] == "lenet5"
            and results.data.get("dataset", "fashion-mnist") == "fashion-mnist")


def audit_claims(results: Results) -> list[dict[str, Any]]:
    """One row per claim; a claim whose metrics this run lacks is 'not testable here', naming the metric."""
    rows = []
    for cid, build in _BUILDERS.items():
        try:
            rows.append(build(results))
        except LookupError as exc:  # MissingMetric, or a per-seed entry without the key
            rows.append(_row(cid, CLAIMS[cid], "-", "-", "not testable here",
                             f"this run recorded no {exc.args[0]} (switched off, or written by an older mixprune)"))
    return rows


def _c1(results: Results) -> dict[str, Any]:
    return _paired_claim(results, "C1", CLAIMS["C1"], "+2.08 points (88.34 -> 90.42)",
                         ("baseline", "test_accuracy"), ("mixup", "test_accuracy"), +1,
                         "paired Mixup - Baseline accuracy over seeds; reproduced if > 0 with p < 0.05")


def _c2(results: Results) -> dict[str, Any]:
    return _paired_claim(results, "C2", CLAIMS["C2"], "-0.067 (0.395 -> 0.328), '17% lower'",
                         ("baseline", "test_loss"), ("mixup", "test_loss"), -1,
                         "paired Mixup - Baseline test loss; reproduced if < 0 with p < 0.05", digits=3)


def _c3(results: Results) -> dict[str, Any]:
    drop_c, drop_d = _drops(results)
    worst = [min(c, d) for c, d in zip(drop_c, drop_d)]
    cmp = paired([-1.5] * len(worst), worst)  # how far the worse of the two drops stays above -1.5 points
    verdict = "too few seeds" if cmp["n"] < MIN_SEEDS else (
        "reproduced" if cmp["ci95"] and cmp["ci95"][0] > 0 else "not reproduced")
    return _row("C3", CLAIMS["C3"], "-1.43 (A->C) and -0.67 (B->D) points",
                f"A->C {statistics.fmean(drop_c):+.2f}, B->D {statistics.fmean(drop_d):+.2f} points (n={len(drop_c)})",
                verdict, "reproduced if, with 95% confidence, neither pruned model loses more than 1.5 points "
                "(the paper's worse drop, rounded) against its dense parent", cmp["p_value"])


def _c4(results: Results) -> dict[str, Any]:
    cmp = paired(*_drops(results))
    return _row("C4", CLAIMS["C4"], "drop 0.67 vs 1.43 points (+0.76)", _fmt(cmp), _test(cmp, +1),
                "paired (B->D drop) - (A->C drop); reproduced if > 0 with p < 0.05", cmp["p_value"])


def _c5(results: Results) -> dict[str, Any]:
    p = results.config["prune"]
    reduction = 100 * statistics.fmean(_seeds(results, "mixup_pruned", "param_reduction"))
    if (p["conv_amount"], p["fc_amount"]) == PAPER_AMOUNTS and p.get("method", "unstructured") == "unstructured":
        return _row("C5", CLAIMS["C5"], "62.7% (43.5 -> 16.1 x10^4)", f"{reduction:.1f}% fewer nonzero parameters",
                    "inconsistent in the paper", "20% of conv and 30% of FC weights are 13,002 of 44,190 weights: "
                    "29.3% of the parameters, which is what was measured; the paper's 435K/161K counts fit no "
                    "LeNet-5 of Table 1 (44,426 parameters)")
    return _row("C5", CLAIMS["C5"], "62.7%", f"{reduction:.1f}%", "reproduced" if reduction >= 62.7 else "not reproduced",
                "measured reduction of nonzero parameters with this run's pruning settings")


def _c7(results: Results) -> dict[str, Any]:
    fp16 = statistics.fmean(_seeds(results, "mixup_pruned", "size_bytes_fp16")) / 1e6
    sparse = statistics.fmean(_seeds(results, "mixup_pruned", "size_bytes_sparse")) / 1e6
    return _row("C7", CLAIMS["C7"], "~0.17 MB in 16-bit; 'file size 6.2 MB'",
                f"fp16 file {fp16:.3f} MB, sparse fp16 file {sparse:.3f} MB", "inconsistent in the paper",
                "161K parameters in 16 bits are 0.32 MB, not 0.17 MB, and 6.2 MB fits neither count; the measured "
                "files are what this network actually needs")


def _c8(results: Results) -> dict[str, Any]:
    classes = results.classes
    hard, f1_a, f1_b = _difficult(results)
    cmp = paired(f1_a, f1_b)
    return _row("C8", CLAIMS["C8"], "> +3 points", _fmt(cmp), _test(cmp, +1, 3.0),
                f"mean F1 of the {DIFFICULT_CLASSES} lowest-F1 baseline classes ({', '.join(classes[c] for c in hard)}), "
                "paired Mixup - Baseline; reproduced if > +3 points with p < 0.05", cmp["p_value"])


def _c9(results: Results) -> dict[str, Any]:
    return _paired_claim(results, "C9", CLAIMS["C9"], "+2.84 points", ("pruned", "test_accuracy"),
                         ("mixup_pruned", "test_accuracy"), +1,
                         "paired D - C accuracy; reproduced if > 0 with p < 0.05. The paper's 2.84 is Pruned(B) - "
                         "Pruned(A) = 89.75 - 86.91, i.e. the same comparison")


def _c10(results: Results) -> dict[str, Any]:
    return _row("C10", CLAIMS["C10"], "218 ms -> 83 ms", "-", "not testable here",
                "needs a Raspberry Pi 4B; `mixprune bench` on the device would measure it")


def _c11(results: Results) -> dict[str, Any]:
    return _row("C11", CLAIMS["C11"], "cited, not shown", "-", "not testable here",
                "needs an alpha x sparsity sweep, which `mixprune reproduce` does not run")


def _speed_claim(results: Results) -> dict[str, Any]:
    base = _seeds(results, "baseline", "latency_ms_batch1")
    try:
        key, pruned = "latency_ms_slim_batch1", _seeds(results, "pruned", "latency_ms_slim_batch1")
    except MissingMetric:
        key, pruned = "latency_ms_batch1", _seeds(results, "pruned", "latency_ms_batch1")
    ratio = statistics.fmean(base) / statistics.fmean(pruned)
    what = "slimmed" if key.startswith("latency_ms_slim") else "as stored (dense kernels)"
    return _row("C6", CLAIMS["C6"], "119.3 -> 65.8 ms (1.8x); the paper also says 1.0-1.1x with "
                "dense kernels", f"{ratio:.2f}x at batch 1, CPU, pruned model {what}",
                "reproduced" if ratio >= 1.5 else "not reproduced",
                "mean baseline / pruned latency; reproduced if >= 1.5x. The paper's own text gives 1.0-1.1x for "
                "dense kernels, and 119 ms per LeNet inference is ~1,000x what it takes")


def _robustness_claim(results: Results) -> dict[str, Any]:
    noise = paired(_seeds(results, "baseline", "noise_accuracy"), _seeds(results, "mixup", "noise_accuracy"))
    fgsm = paired(_seeds(results, "baseline", "fgsm_accuracy"), _seeds(results, "mixup", "fgsm_accuracy"))
    verdicts = {_test(noise, +1), _test(fgsm, +1)}
    verdict = verdicts.pop() if len(verdicts) == 1 else (
        "too few seeds" if "too few seeds" in verdicts else "not reproduced")
    return _row("C12", CLAIMS["C12"], "cited (ImageNet, adversarial), not shown for this model",
                f"Gaussian noise {_fmt(noise)}, FGSM {_fmt(fgsm)} points", verdict,
                "paired Mixup - Baseline accuracy under Gaussian noise (sigma 0.3) and under FGSM (epsilon 0.05), "
                "inputs in [-1, 1]; reproduced if both > 0 with p < 0.05", fgsm["p_value"])


_BUILDERS = {"C1": _c1, "C2": _c2, "C3": _c3, "C4": _c4, "C5": _c5, "C6": _speed_claim, "C7": _c7, "C8": _c8,
             "C9": _c9, "C10": _c10, "C11": _c11, "C12": _robustness_claim}


def add_claims(results: Results) -> None:
    """The study's finish step (study.run_study's `finish`): the claims audit where the run is the paper's study;
    on other data, networks or designs the paper's claims are not about it, and no claim is audited."""
    results.claims = audit_claims(results) if paper_setting(results) else []
