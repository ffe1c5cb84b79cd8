"""Reports over many runs: a sweep's cells, or any directory holding run directories.

    runs = find_runs(Path("runs/alpha-x-sparsity"))      # [(run dir, results.json content), ...]
    text = write_collection_report(root, runs_below(root))   # report.md, report.html, plots/ in root

Runs are compared by the config fields that differ between them. When Mixup strength and pruning
amount both vary (an alpha x sparsity sweep), the report adds accuracy against sparsity per alpha with
95% CI bands, the Mixup effect at each sparsity as a paired comparison on the same seeds (Mixup+Pruned
vs Pruned of the same cell), the best alpha per sparsity against the rule alpha ~ sqrt(sparsity) (claim
C11), Pareto fronts of accuracy against file size and latency, and per-layer sparsity. Every number
comes from the runs' results.json files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..core.atomic import ensure_dir, write_text_atomic
from ..core.config import PLACEMENT_FIELDS
from ..core.errors import OutputError
from ..deploy.encodings import ENCODINGS, artifact_accuracy
from ..study.results import Results
from .html import markdown_to_html
from .report import table
from .stats import format_ci, mean_ci, paired, pareto

EXECUTION_ONLY = {*PLACEMENT_FIELDS, "workers", "threads", "device", "data.data_dir", "data.memory_budget_mb"}
ALPHA, SPARSITY = "mixup.alpha", "prune.sparsity"
P_LEVEL = 0.05


Runs = list[tuple[Path, Results]]


def find_runs(root: Path) -> Runs:
    """Every complete run below root, in path order."""
    runs = []
    for path in sorted(Path(root).rglob("results.json")):  # cache entries hold no results.json
        if (results := Results.load_complete(path)) is not None:
            runs.append((path.parent, results))
    return runs


def flat_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def varying(runs: Runs) -> list[str]:
    """Config fields whose values differ between runs (execution-only fields left out)."""
    flats = [flat_config(r.config) for _, r in runs]
    keys = [k for k in flats[0] if k not in EXECUTION_ONLY]
    keys = [k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]
    if SPARSITY in keys:  # the amounts follow from it
        keys = [k for k in keys if k not in ("prune.conv_amount", "prune.fc_amount")]
    return keys


def depends_on(model: str, keys: list[str], results: Results) -> list[str]:
    """The varying fields that can change `model`: A sees neither Mixup nor pruning, B no pruning, C no Mixup
    (read from the variant table: Mixup down its line, a prune step down its line)."""
    line = results.design.ancestors(model)
    mixup = any(v.mixup for v in line)
    pruned = any(v.step == "prune" for v in line)
    return [k for k in keys if (mixup or not k.startswith("mixup.")) and (pruned or not k.startswith("prune."))]


def seed_values(results: Results, model: str, metric: str) -> dict[int, float]:
    return {s: float(v) for s, v in results.by_seed(model, metric).items()}


def smallest_file(results: Results, model: str) -> float | None:
    """Mean over seeds of the smallest artifact's bytes among files whose decoded model was measured."""
    sizes = []
    for m in results.seeds(model).values():
        cands = [m[f"size_bytes_{e.kind}"] for e in ENCODINGS
                 if f"size_bytes_{e.kind}" in m and artifact_accuracy(m, e.kind)]
        if cands:
            sizes.append(min(cands))
    return sum(sizes) / len(sizes) if sizes else None


def front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (cost, accuracy, label) points no other point beats on both (stats.pareto), by cost."""
    return pareto(points, cost=lambda p: p[0], score=lambda p: p[1])


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in values.items()) or "run"


def runs_table(runs: Runs, keys: list[str]) -> str:
    rows = []
    for path, r in runs:
        flat = flat_config(r.config)
        accs = [format_ci(mean_ci(list(seed_values(r, name, "test_accuracy").values()))) for name in r.names]
        rows.append([str(flat.get(k)) for k in keys] + accs + [str(len(r.seeds_run)), path.name])
    design = runs[0][1].design
    return table(keys + [design.label(n) for n in design.names] + ["seeds", "run"], rows)


def mixup_effects(runs: Runs) -> list[dict[str, Any]]:
    """Per run: alpha, measured sparsity of C, D's accuracy CI and D - C paired on the same seeds."""
    out = []
    for path, r in runs:
        pair = r.design.mixup_pair("prune")
        if pair is None:  # a design without a pruned variant and its Mixup twin: no Mixup effect to pair
            continue
        c, d = seed_values(r, pair[0], "test_accuracy"), seed_values(r, pair[1], "test_accuracy")
        seeds = sorted(set(c) & set(d))
        if not seeds:
            continue
        sparsity = list(seed_values(r, pair[0], "sparsity").values())
        out.append({"alpha": r.config["mixup"]["alpha"], "sparsity": sum(sparsity) / len(sparsity),
                    "d": mean_ci([d[s] for s in seeds]), "c": mean_ci([c[s] for s in seeds]),
                    "d_minus_c": paired([c[s] for s in seeds], [d[s] for s in seeds]), "run": path.name})
    return out


def best_alphas(effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sparsity level: the alpha with the highest mean accuracy (alpha 0 = no Mixup = C) and whether
    it beats no Mixup significantly (paired over seeds)."""
    by_s: dict[float, list[dict[str, Any]]] = {}
    for e in effects:
        by_s.setdefault(round(e["sparsity"], 3), []).append(e)
    out = []
    for s, group in sorted(by_s.items()):
        best = max(group, key=lambda e: e["d"]["mean"] if e["alpha"] > 0 else e["c"]["mean"])
        acc = best["d"]["mean"] if best["alpha"] > 0 else best["c"]["mean"]
        p = best["d_minus_c"]["p_value"] if best["alpha"] > 0 else None
        out.append({"sparsity": s, "alpha": best["alpha"] if best["alpha"] > 0 else 0.0, "accuracy": acc,
                    "gain": best["d_minus_c"]["mean"] if best["alpha"] > 0 else 0.0, "p_value": p,
                    "significant": p is not None and p < P_LEVEL and best["d_minus_c"]["mean"] > 0})
    return out


def c11_verdict(best: list[dict[str, Any]]) -> str:
    """Claim C11, 'the best Mixup strength grows with sparsity (alpha ~ sqrt(s))', judged on the sweep."""
    if len(best) < 3:
        return "not testable: fewer than 3 sparsity levels"
    if not any(b["significant"] for b in best):
        return ("not reproduced: at no sparsity does any alpha > 0 beat no Mixup significantly (paired t-test, "
                f"p < {P_LEVEL}), so there is no best alpha to follow sqrt(sparsity)")
    alphas = [b["alpha"] for b in best]
    rising = all(a <= b for a, b in zip(alphas, alphas[1:]))
    err = max(abs(b["alpha"] - math.sqrt(b["sparsity"])) for b in best)
    if rising and err <= 0.25:
        return f"reproduced: the best alpha rises with sparsity and stays within {err:.2f} of sqrt(sparsity)"
    return f"not reproduced: best alpha per sparsity {alphas} does not follow sqrt(sparsity) (largest gap {err:.2f})"


def _front_points(runs: Runs, keys: list[str], cost: str) -> list[tuple[float, float, str]]:
    """(cost, mean accuracy, label) per distinct model: a model shared by several runs (the Baseline of every
    cell, the Pruned model of every alpha, B and D at alpha 0) counts once."""
    pts, seen = [], set()
    for _, r in runs:
        flat = flat_config(r.config)
        design = r.design
        for name in design.names:
            if r.config["mixup"]["alpha"] == 0 and design.without_mixup(name):
                continue  # the same models as their twins without Mixup (B and D are A and C)
            identity = (name, tuple(json.dumps(flat.get(k)) for k in depends_on(name, keys, r)))
            if identity in seen:
                continue
            seen.add(identity)
            acc = mean_ci(list(seed_values(r, name, "test_accuracy").values()))["mean"]
            if cost == "size":
                value = smallest_file(r, name)
            else:  # the faster of the stored network and its slimmed form (what one would deploy)
                lat = [min(v for v in (m.get(cost), m.get(cost.replace("_batch", "_slim_batch"))) if v is not None)
                       for m in r.seeds(name).values() if m.get(cost) is not None]
                value = sum(lat) / len(lat) if lat else None
            if value:
                where = _label({k: flat.get(k) for k in depends_on(name, keys, r)})
                pts.append((value, acc, f"{design.label(name)} ({where})"))
    return pts


def render(root: Path, runs: Runs, plots: dict[str, Path]) -> str:
    keys = varying(runs) if len(runs) > 1 else []
    lines = ["# mixprune: report over runs", "",
             f"{len(runs)} complete runs below `{root}`; they differ in: {', '.join(keys) or 'nothing'}.",
             "Test accuracy (%), mean [95% CI] over seeds:", "", runs_table(runs, keys), ""]
    effects = mixup_effects(runs)
    if ALPHA in keys and ({SPARSITY, "prune.fc_amount", "prune.conv_amount"} & set(keys)):
        best = best_alphas(effects)
        lines += ["## Mixup strength x sparsity", "",
                  "Mixup+Pruned (D) minus Pruned (C) of the same cell, paired on the same seeds (alpha 0: no Mixup, D = C):", "",
                  table(["alpha", "weights pruned (%)", "D accuracy", "D - C [95% CI]", "p"],
                        [[f"{e['alpha']}", f"{100 * e['sparsity']:.1f}", f"{e['d']['mean']:.2f}",
                          format_ci(e["d_minus_c"], signed=True), _p(e["d_minus_c"]["p_value"])] for e in sorted(
                              effects, key=lambda e: (e["sparsity"], e["alpha"])) if e["alpha"] > 0]), "",
                  "Best alpha per sparsity (highest mean accuracy; alpha 0 means no Mixup was best):", "",
                  table(["weights pruned (%)", "best alpha", "sqrt(sparsity)", "accuracy", "gain over no Mixup", "p",
                         "significant"],
                        [[f"{100 * b['sparsity']:.1f}", f"{b['alpha']}", f"{math.sqrt(b['sparsity']):.2f}",
                          f"{b['accuracy']:.2f}", f"{b['gain']:+.2f}", _p(b["p_value"]), "yes" if b["significant"] else "no"]
                         for b in best]), "",
                  f"**C11** (best alpha grows with sparsity, alpha ~ sqrt(s)): {c11_verdict(best)}.", ""]
    for kind, label in (("size", "smallest file (bytes)"), ("latency", "latency at batch 256 (ms)")):
        if kind in plots:
            pts = _front_points(runs, keys, "size" if kind == "size" else "latency_ms_batch256")
            best = front(pts)
            spread = max(p[0] for p in pts) / min(p[0] for p in pts)
            lines += [f"## Pareto front: accuracy vs {label}", ""]
            if kind == "latency" and _same_shapes(runs):
                lines += [f"Every model here runs the same dense shapes (unstructured zeros are still multiplied), so "
                          f"the {spread:.2f}x spread of these timings is measurement noise, not a speed difference "
                          "between the models.", ""]
            lines += [
                      table([label, "accuracy (%)", "model"], [[f"{c:,.3g}" if kind == "latency" else f"{c:,.0f}",
                                                                 f"{a:.2f}", n] for c, a, n in best]), ""]
    captions = {"alpha": "Mixup+Pruned accuracy against weights pruned, one line per alpha, 95% CI bands",
                "best": "Best alpha per sparsity against alpha = sqrt(sparsity)",
                "size": "Accuracy against the smallest file of each model, Pareto front in red",
                "latency": "Accuracy against latency at batch 256, Pareto front in red",
                "layers": "Weights pruned per layer of the Pruned model (C), per run"}
    if plots:
        lines += ["## Figures", ""]
        for key, path in plots.items():
            lines += [f"![{captions[key]}]({path.relative_to(root).as_posix()})", "", captions[key] + ".", ""]
    return "\n".join(lines) + "\n"


def _same_shapes(runs: Runs) -> bool:
    """True when no model of any run slims to other layer widths than the dense network's."""
    shapes = {(tuple(m.get("widths", ())), json.dumps(m.get("pruned_channels") or {}, sort_keys=True))
              for _, r in runs for name in r.names for m in r.seeds(name).values()}
    return len(shapes) <= 1


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}"


def collection_plots(root: Path, runs: Runs) -> dict[str, Path]:
    import matplotlib

    from .plots import accuracy_vs_sparsity, best_alpha_plot, layer_sparsity_bars, mean_layer_sparsity, pareto_plot

    matplotlib.use("Agg")
    plots_dir = ensure_dir(root / "plots")
    keys = varying(runs) if len(runs) > 1 else []
    out: dict[str, Path] = {}
    effects = mixup_effects(runs)
    if ALPHA in keys and len({round(e["sparsity"], 3) for e in effects}) > 1:
        curves: dict[str, list[tuple[float, float, float, float]]] = {}
        for e in effects:
            acc = e["d"] if e["alpha"] > 0 else e["c"]
            lo, hi = acc["ci95"] or (acc["mean"], acc["mean"])
            curves.setdefault(f"alpha = {e['alpha']}" if e["alpha"] > 0 else "no Mixup (C)", []).append(
                (e["sparsity"], acc["mean"], lo, hi))
        out["alpha"] = accuracy_vs_sparsity(curves, plots_dir / "accuracy_vs_sparsity.png", "test accuracy (%)")
        out["best"] = best_alpha_plot([(b["sparsity"], b["alpha"]) for b in best_alphas(effects)],
                                      plots_dir / "best_alpha.png")
    for kind, cost, xlabel in (("size", "size", "smallest file (bytes, log scale)"),
                               ("latency", "latency_ms_batch256", "latency at batch 256 (ms, log scale)")):
        pts = _front_points(runs, keys, cost)
        if len(pts) > 1:
            out[kind] = pareto_plot(pts, front(pts), plots_dir / f"pareto_{kind}.png", xlabel)
    layers = {}
    pruning_keys = [k for k in keys if k != ALPHA]  # C does not depend on alpha: one bar group per pruning setting
    for path, r in runs:
        pair = r.design.mixup_pair("prune")
        per_layer = mean_layer_sparsity(r, pair[0]) if pair else None
        label = _label({k: flat_config(r.config).get(k) for k in pruning_keys}) if pruning_keys else path.name
        if per_layer and label not in layers and len(layers) < 8:  # a readable number of bar groups
            layers[label] = per_layer
    if layers:
        out["layers"] = layer_sparsity_bars(layers, plots_dir / "layer_sparsity.png")
    return out


def runs_below(root: Path) -> Runs:
    """find_runs, or OutputError (one line) where root holds no complete run."""
    runs = find_runs(root)
    if not runs:
        raise OutputError(f"{root} holds no complete run of this mixprune version (no results.json with "
                          "\"complete\": true below it); pass a run or sweep directory")
    return runs


def write_collection_report(root: Path, runs: Runs) -> str:
    """report.md, report.html and plots/ in root, over the complete runs below it (runs_below)."""
    root = Path(root)
    plots = collection_plots(root, runs)
    text = render(root, runs, plots)
    write_text_atomic(root / "report.md", text)
    write_text_atomic(root / "report.html", markdown_to_html(text, root, "mixprune report over runs"))
    return text
