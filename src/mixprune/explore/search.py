"""`mixprune search`: the smallest model that meets an accuracy target, or the most accurate within a size.

    spec = SearchSpec(min_accuracy=90.0, objective="bytes")
    summary = run_search(base_cfg, spec, Path("runs/search"))   # search.json, search.md, pareto.*, chosen/

Each candidate is one study (sweep machinery: a run directory per candidate, models shared through
OUT/cache, a candidate whose results are complete is skipped when the search runs again, so kill -9
loses at most the candidate in flight) over pruning method x sparsity (x Mixup alpha, x per-group ratios
from sensitivity), with distillation variants, trained on the training images minus a validation split
(cross-validation fold 0) and evaluated on that split only. Every (candidate, variant, file encoding) is
a point: validation accuracy of the model decoded from that file, its bytes, MACs and latency. Selection
and the Pareto fronts use validation accuracy; the test split is used once, for the chosen design, in a
final study over the base config's seeds (>= 3), whose mean and 95% CI say whether the target is met.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.atomic import ensure_dir, read_text_capped, write_text_atomic
from ..core.config import StudyConfig, to_dict, toml_text, what_it_computes, with_overrides
from ..core.errors import ConfigError
from ..core.outputs import check_location, claimed, swap_dirs
from ..data.dataset import Dataset
from ..data.registry import load_dataset
from ..deploy.encodings import SEARCHABLE
from ..reporting.plots import plot_search_pareto
from ..reporting.stats import mean_ci
from ..reporting.stats import pareto as undominated
from ..study.backends import backend_session
from ..study.plan import preflight
from ..study.results import Results
from ..train.engine import TrainingDiverged
from .cells import run_cell

OBJECTIVES = ("bytes", "macs", "latency")


@dataclass(frozen=True)
class SearchSpec:
    """What the search looks for and where. Exactly one of min_accuracy and max_bytes is set."""
    min_accuracy: float | None = None  # percent: the smallest model (by `objective`) at or above it
    max_bytes: int | None = None  # the most accurate model whose file is at most this many bytes
    objective: str = "bytes"  # bytes (deployable file), macs (executed by a dense kernel) or latency (batch 1)
    budget_minutes: float = 60.0  # no new candidate starts after this many minutes (the first always runs, and
    # the final study still runs)
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95)
    methods: tuple[str, ...] = ("unstructured", "structured")
    alphas: tuple[float, ...] = ()  # Mixup alphas to try; empty: the base config's
    max_drops: tuple[float, ...] = (0.5, 2.0)  # structured, per-group ratios from sensitivity (--prune-ratios auto)
    distill: bool = True  # add the Pruned+KD and Mixup+Pruned+KD variants to every candidate
    val_fraction: float = 0.1  # of the training images: the validation split candidates are chosen on
    search_seeds: tuple[int, ...] = (0,)  # seeds every candidate trains (the final study uses the config's seeds)

    def __post_init__(self) -> None:
        if (self.min_accuracy is None) == (self.max_bytes is None):
            raise ConfigError("mixprune search needs exactly one of --min-accuracy PERCENT and --max-bytes N")
        if self.min_accuracy is not None and not 0 < self.min_accuracy <= 100:
            raise ConfigError(f"invalid --min-accuracy {self.min_accuracy}: a percentage in (0, 100]")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"invalid --max-bytes {self.max_bytes}: a positive number of bytes")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"invalid --objective {self.objective!r}: one of {', '.join(OBJECTIVES)}")
        if not self.budget_minutes > 0:
            raise ConfigError(f"invalid --budget-minutes {self.budget_minutes}: must be > 0")
        if not 0 < self.val_fraction <= 0.5:
            raise ConfigError(f"invalid --val-fraction {self.val_fraction}: must be in (0, 0.5]")
        for s in self.sparsities:
            if not 0 <= s < 1:
                raise ConfigError(f"invalid --sparsities value {s}: a fraction in [0, 1)")
        for m in self.methods:
            if m not in ("unstructured", "structured"):
                raise ConfigError(f"invalid --methods value {m!r}: unstructured or structured")
        if not self.search_seeds:
            raise ConfigError("--search-seeds needs at least one seed")


def candidates(base: StudyConfig, spec: SearchSpec) -> list[tuple[str, StudyConfig]]:
    """(name, config) of every candidate, most compressed first within each method (where the smallest models
    are, so that a budget that ends early has looked there). Candidates see only the validation split."""
    folds = max(2, round(1 / spec.val_fraction))
    common = {"data.cv_fold": 0, "data.cv_folds": folds, "seeds": list(spec.search_seeds), "out": None,
              "distill.enabled": spec.distill, "bench.latency": spec.objective == "latency",
              "bench.onnx": True, "bench.quick": False}
    alphas = spec.alphas or (base.mixup.alpha,)
    out = []
    for method in spec.methods:
        for alpha in alphas:
            grid: list[tuple[str, dict[str, Any]]] = [
                (f"{method}-s{s:g}-a{alpha:g}", {"prune.sparsity": s, "prune.ratios": ""})
                for s in sorted(spec.sparsities, reverse=True)]
            if method == "structured":
                grid += [(f"structured-auto{d:g}-a{alpha:g}", {"prune.ratios": "auto", "prune.max_drop": d})
                         for d in spec.max_drops]
            for name, values in grid:
                scope = {"prune.scope": "layerwise"} if method == "structured" and base.prune.schedule == "gradual" \
                    else {}
                out.append((name, with_overrides(base, {**common, **values, **scope, "prune.method": method,
                                                        "mixup.alpha": alpha})))
    return out


def points(name: str, results: Results) -> list[dict[str, Any]]:
    """One point per (variant, encoding) of a candidate's results: validation accuracy of the decoded file (mean
    over the search seeds), bytes (largest over seeds), MACs and batch-1 latency (means)."""
    out = []
    for variant in results.names:
        seeds = list(results.seeds(variant).values())
        for enc_name, enc in SEARCHABLE.items():
            size_key, acc_key = f"size_bytes_{enc.kind}", enc.accuracy
            if not seeds or not all(size_key in s and acc_key in s for s in seeds):
                continue
            macs = "macs_slim" if enc.network == "deployed" else "macs_effective"
            out.append({"candidate": name, "variant": variant, "encoding": enc_name,
                        "val_accuracy": sum(float(s[acc_key]) for s in seeds) / len(seeds),
                        "bytes": max(int(s[size_key]) for s in seeds),
                        "macs": _mean(seeds, macs), "latency": _mean(seeds, "latency_ms_batch1"),
                        "params_nonzero": _mean(seeds, "params_nonzero")})
    return out


def _mean(seeds: list[dict[str, Any]], key: str) -> float | None:
    values = [float(s[key]) for s in seeds if s.get(key) is not None]
    return sum(values) / len(values) if len(values) == len(seeds) else None


def pareto(pts: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """The points no other point beats on both validation accuracy (higher) and `cost` (lower), by cost."""
    return undominated(pts, cost=lambda p: p.get(cost), score=lambda p: p["val_accuracy"])


def margin(target: float, n_val: int) -> float:
    """One binomial standard error (points) of an accuracy near `target` measured on n_val images: a point
    within it of the target is not clearly above it, so selection asks for target + margin."""
    p = min(max(target / 100.0, 1e-3), 1 - 1e-3)
    return 100.0 * math.sqrt(p * (1 - p) / max(n_val, 1))


def choose(pts: list[dict[str, Any]], spec: SearchSpec, n_val: int) -> tuple[dict[str, Any] | None, float]:
    """The selected point (or None where nothing qualifies) and the selection threshold used."""
    if spec.min_accuracy is None:  # --max-bytes (SearchSpec holds exactly one of the two)
        fit = [p for p in pts if p["bytes"] <= (spec.max_bytes or 0)]
        return (max(fit, key=lambda p: (p["val_accuracy"], -p["bytes"])) if fit else None), float(spec.max_bytes or 0)
    threshold = spec.min_accuracy + margin(spec.min_accuracy, n_val)
    fit = [p for p in pts if p["val_accuracy"] >= threshold and p.get(spec.objective) is not None]
    return (min(fit, key=lambda p: (p[spec.objective], -p["val_accuracy"])) if fit else None), threshold


def run_search(base: StudyConfig, spec: SearchSpec, out: Path, dataset: Dataset | None = None,
               observer: Any = None) -> dict[str, Any]:
    """Run the candidates within the budget, choose on the validation split, test the chosen design once over
    the config's seeds; write search.json, search.md, pareto.csv, pareto.png and chosen/ (files + config)."""
    if len(base.seeds) < 3:
        raise ConfigError(f"mixprune search tests the chosen design over --seeds, at least 3 for a 95% CI; got "
                          f"{list(base.seeds)}")
    if base.data.cv_fold >= 0:
        raise ConfigError("mixprune search holds out its own validation split; drop --cv-fold")
    todo = candidates(base, spec)
    if dataset is None:
        dataset = load_dataset(base.data)
    preflight(base, dataset)  # data or a network that cannot run fails here, before OUT exists
    impossible = {}  # candidates this network cannot take (a ratio that removes every channel of a layer)
    for name, cfg in todo:
        try:
            preflight(cfg, dataset)
        except ConfigError as exc:
            impossible[name] = str(exc)
    if len(impossible) == len(todo):
        raise ConfigError(f"no candidate of the search can run on this network: {next(iter(impossible.values()))}")
    check_location(out, "--out")
    summary: dict[str, Any] = {"spec": asdict(spec), "base": to_dict(base), "candidates": [], "points": []}
    with backend_session(base), claimed(out, "search", functools.partial(_same, summary=summary),
                                        base.overwrite) as where:
        return _search(base, spec, todo, where, dataset, observer, impossible, summary)


def _identity(summary: dict[str, Any]) -> str:
    """What a search computes: its spec (but its time budget) and base config (but where outputs go)."""
    spec = {k: v for k, v in summary["spec"].items() if k != "budget_minutes"}
    base = what_it_computes(summary["base"])
    return json.dumps([spec, base], sort_keys=True)


def _same(root: Path, summary: dict[str, Any]) -> bool | None:
    """Whether root holds a search of the same spec and base (it goes on), another search, or no search (None)."""
    try:
        return _identity(json.loads(read_text_capped(root / "search.json", 1 << 28))) == _identity(summary)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return False


def _search(base: StudyConfig, spec: SearchSpec, todo: list[tuple[str, StudyConfig]], out: Path,
            dataset: Dataset, observer: Any, impossible: dict[str, str], summary: dict[str, Any]) -> dict[str, Any]:
    ensure_dir(out / "candidates")
    write_text_atomic(out / "search.json", json.dumps(summary, indent=1))  # says whose OUT this is from the start
    cache = base.cache_dir or str(out / "cache")
    started = time.perf_counter()
    n_val = 0
    for name, cfg in todo:
        run_dir = out / "candidates" / name
        row: dict[str, Any] = {"name": name, "method": cfg.prune.method, "sparsity": cfg.prune.conv_amount,
                               "ratios": cfg.prune.ratios, "max_drop": cfg.prune.max_drop, "alpha": cfg.mixup.alpha}
        results = None
        if name in impossible:
            row["status"] = f"not possible: {impossible[name]}"
        else:
            spent = (time.perf_counter() - started) / 60
            budget = spent < spec.budget_minutes or not summary["points"]  # at least one candidate runs
            # a ratio that removes a whole layer, say, fails this candidate (ConfigError); the rest run
            cell = run_cell(cfg, run_dir, cache, dataset, observer, report=False,
                            tolerate=(TrainingDiverged, ConfigError), start=budget)
            results = cell.results
            if cell.earlier:
                row["status"] = "earlier run"
            elif cell.failed is not None:
                row.update(status=f"failed: {cell.failed}", seconds=cell.seconds)
            elif results is None:
                row["status"] = f"not run: the {spec.budget_minutes:g}-minute budget was spent"
            else:
                row.update(status="run", seconds=cell.seconds)
        if results is not None:
            n_val = results.evaluation_examples  # candidates are evaluated on the validation split
            summary["points"] += points(name, results)
        summary["candidates"].append(row)
        write_text_atomic(out / "search.json", json.dumps(summary, indent=1))
    summary["search_minutes"] = round((time.perf_counter() - started) / 60, 2)
    chosen, threshold = choose(summary["points"], spec, n_val)
    summary["validation_examples"] = n_val
    summary["selection_threshold"] = threshold
    summary["pareto"] = {cost: pareto(summary["points"], cost) for cost in OBJECTIVES}
    summary["chosen"] = chosen
    if chosen is not None:
        summary["final"] = _final(base, spec, chosen, dict(todo)[chosen["candidate"]], out, cache, dataset, observer)
    summary["total_minutes"] = round((time.perf_counter() - started) / 60, 2)
    write_text_atomic(out / "search.json", json.dumps(summary, indent=1))
    write_text_atomic(out / "pareto.csv", pareto_csv(summary["points"]))
    write_text_atomic(out / "search.md", render(summary))
    plot_search_pareto(summary, out / "pareto.png")
    return summary


def final_config(base: StudyConfig, candidate: StudyConfig) -> StudyConfig:
    """The chosen candidate on the whole training split, tested on the test split over the base config's seeds,
    measured as the base config says."""
    return with_overrides(candidate, {"data.cv_fold": -1, "seeds": list(base.seeds), "out": None,
                                      "bench.latency": base.bench.latency, "bench.quick": False,
                                      "bench.onnx": True})


def _final(base: StudyConfig, spec: SearchSpec, chosen: dict[str, Any], candidate: StudyConfig, out: Path,
           cache: str, dataset: Dataset, observer: Any) -> dict[str, Any]:
    """Train and test the chosen design over the base seeds (once: the test split's only use); copy its files."""
    cfg = final_config(base, candidate)
    run_dir = out / "final" / chosen["candidate"]
    results = run_cell(cfg, run_dir, cache, dataset, observer, report=True, tolerate=()).results
    enc = SEARCHABLE[chosen["encoding"]]
    seeds = results.seeds(chosen["variant"])
    accs = [float(seeds[s][enc.accuracy]) for s in cfg.seeds]
    sizes = [int(seeds[s][f"size_bytes_{enc.kind}"]) for s in cfg.seeds]
    ci = mean_ci(accs)
    if ci["ci95"]:  # an accuracy lies in [0, 100]; Student's t does not know that
        ci["ci95"] = [max(ci["ci95"][0], 0.0), min(ci["ci95"][1], 100.0)]
    final: dict[str, Any] = {"seeds": list(cfg.seeds), "test_accuracy": accs, "accuracy": ci, "bytes": sizes,
                             "run": str(run_dir)}
    if spec.min_accuracy is not None:
        final["target_met_95"] = bool(ci["ci95"] is not None and ci["ci95"][0] >= spec.min_accuracy)
    else:
        final["target_met_95"] = bool(max(sizes) <= (spec.max_bytes or 0))
    chosen_dir = out / "chosen"
    tmp = out / ".chosen.new"
    shutil.rmtree(tmp, ignore_errors=True)
    ensure_dir(tmp)
    first = cfg.seeds[0]
    src = run_dir / "models" / f"{chosen['variant']}-seed{first}.{enc.suffix}"
    shutil.copy2(src, tmp / src.name)
    for extra in ("safetensors", "onnx"):  # the full-precision forms beside it, to inspect or re-encode
        other = run_dir / "models" / f"{chosen['variant']}-seed{first}.{extra}"
        if other.is_file() and other.name != src.name:
            shutil.copy2(other, tmp / other.name)
    header = (f"# mixprune search: the chosen design is variant {chosen['variant']!r}, file encoding "
              f"{chosen['encoding']} ({src.name}).\n# Re-run its study with: mixprune reproduce --config "
              "config.toml\n")
    (tmp / "config.toml").write_text(header + toml_text(cfg), encoding="utf-8")
    if chosen_dir.exists():
        swap_dirs(tmp, chosen_dir)
    else:
        tmp.rename(chosen_dir)
    final["files"] = sorted(p.name for p in chosen_dir.iterdir())
    return final


def pareto_csv(pts: list[dict[str, Any]]) -> str:
    cols = ["candidate", "variant", "encoding", "val_accuracy", "bytes", "macs", "latency", "params_nonzero"]
    lines = [",".join(cols)]
    for p in sorted(pts, key=lambda p: p["bytes"]):
        lines.append(",".join("" if p.get(c) is None else str(p[c]) for c in cols))
    return "\n".join(lines) + "\n"


def _fmt_point(p: dict[str, Any]) -> str:
    macs = f"{p['macs']:,.0f}" if p.get("macs") is not None else "-"
    lat = f"{p['latency']:.3f}" if p.get("latency") is not None else "-"
    return f"| {p['candidate']} | {p['variant']} | {p['encoding']} | {p['val_accuracy']:.2f} | {p['bytes']:,} | " \
           f"{macs} | {lat} |"


def render(summary: dict[str, Any]) -> str:
    spec = summary["spec"]
    goal = (f"the smallest model by {spec['objective']} with validation accuracy >= {spec['min_accuracy']}%"
            if spec["min_accuracy"] is not None else f"the most accurate model in at most {spec['max_bytes']:,} bytes")
    lines = ["# mixprune search", "", f"Goal: {goal}.", "",
             f"Candidates were trained on the training images minus a validation split of "
             f"{summary['validation_examples']:,} images and chosen on that split only (selection threshold: "
             f"{summary['selection_threshold']:.2f}{'%' if spec['min_accuracy'] is not None else ' bytes'}"
             + (", the target plus one binomial standard error of the validation accuracy" if spec["min_accuracy"]
                is not None else "") + f"). Search time: {summary['search_minutes']:.1f} min; total with the "
             f"final study: {summary['total_minutes']:.1f} min.", "", "## Candidates", "",
             "| candidate | status | seconds |", "|---|---|---|"]
    lines += [f"| {c['name']} | {c['status']} | {c.get('seconds', '-')} |" for c in summary["candidates"]]
    header = ["| candidate | variant | encoding | val acc (%) | bytes | MACs | latency b=1 (ms) |",
              "|---|---|---|---|---|---|---|"]
    for cost in OBJECTIVES:
        front = summary["pareto"][cost]
        if front:
            lines += ["", f"## Pareto front: validation accuracy vs {cost}", "", *header, *map(_fmt_point, front)]
    lines += ["", "## Chosen design", ""]
    chosen = summary["chosen"]
    if chosen is None:
        lines.append("No candidate met the goal on the validation split; nothing was tested. Widen the search "
                     "(--sparsities, --methods, a stronger --config) or relax the goal.")
        return "\n".join(lines) + "\n"
    lines += [*header, _fmt_point(chosen), ""]
    final = summary["final"]
    ci = final["accuracy"]
    lo, hi = ci["ci95"] if ci["ci95"] else (float("nan"), float("nan"))
    lines += [f"Test split (used once, for this design), {len(final['seeds'])} seeds {final['seeds']}: accuracy of "
              f"the decoded file {ci['mean']:.2f}% (95% CI [{lo:.2f}, {hi:.2f}]), file {max(final['bytes']):,} bytes "
              f"at most.", ""]
    if spec["min_accuracy"] is not None:
        verdict = "met" if final["target_met_95"] else "not met"
        lines.append(f"Target {spec['min_accuracy']}%: **{verdict} with 95% confidence** (the CI's lower bound "
                     f"{lo:.2f}% is {'at or above' if final['target_met_95'] else 'below'} it).")
    else:
        lines.append(f"Size limit {spec['max_bytes']:,} bytes: **{'met' if final['target_met_95'] else 'not met'}** "
                     "by every seed's file.")
    lines += ["", f"Files in chosen/: {', '.join(final['files'])} (the config re-runs the study: `mixprune reproduce "
              "--config chosen/config.toml`)."]
    return "\n".join(lines) + "\n"
