"""report.md from results.json: for the paper's study, its Tables 2-4 with the paper's figures beside
ours and the claims audit; for any other dataset, network or design, the same measurements per variant.

    text = render_report(results)           # markdown; every "ours" number comes from results
    write_report(results, RunPaths(out))    # atomic write of report.md, figures, report.html

Ours are shown as mean +- sample std over seeds (n given); where n = 1 there is no spread to show.
"""

from __future__ import annotations

import statistics
from typing import Any

from . import paper
from .artifacts import ARTIFACTS, artifact_accuracy
from .atomic import write_text_atomic
from .audit import paper_setting
from .paths import RunPaths
from .results import class_names
from .variants import from_results


def fmt(summary: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, show_n: bool = True) -> str:
    """'88.34 ± 0.12 (n=3)' from a summary entry; '-' when missing."""
    if not summary:
        return "-"
    n = f" (n={summary['n']})" if show_n else ""
    mean = summary["mean"] * scale
    if summary.get("std") is None:
        return f"{mean:.{digits}f}{n}"
    return f"{mean:.{digits}f} ± {summary['std'] * scale:.{digits}f}{n}"


def paper_fig(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def paired(results: dict, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """Summary of metric(b) - metric(a) over the seeds both models have (paired by seed)."""
    sa, sb = results["models"][a]["seeds"], results["models"][b]["seeds"]
    diffs = [sb[s][metric] - sa[s][metric] for s in sa if s in sb]
    if not diffs:
        return None
    return {"mean": statistics.fmean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else None,
            "n": len(diffs)}


def _summ(results: dict, name: str, metric: str) -> dict[str, Any] | None:
    return results["models"][name]["summary"].get(metric)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table2(results: dict) -> str:
    design = from_results(results)
    rows = []
    for name in ("baseline", "mixup"):
        rows.append([design.label(name), paper_fig(paper.TEST_ACCURACY[name]), fmt(_summ(results, name, "test_accuracy")),
                     paper_fig(paper.TEST_LOSS[name], 3), fmt(_summ(results, name, "test_loss"), 3),
                     paper.CONVERGENCE[name], fmt(_summ(results, name, "test_accuracy_range_last3"))])
    return table(["Model", "Paper acc (%)", "Ours acc (%)", "Paper loss", "Ours loss", "Paper: stability",
                  "Ours: test-acc range over last 3 epochs (points)"], rows)


def table3(results: dict) -> str:
    design = from_results(results)
    rows = []
    for name in ("pruned", "mixup_pruned"):
        reduction = _summ(results, name, "param_reduction")
        drop = paired(results, design[name].parent, name, "test_accuracy")
        rows.append([design.label(name), paper_fig(paper.PARAM_REDUCTION_PCT[name], 1, "%"),
                     fmt(reduction, 1, 100.0) + " %" if reduction else "-",
                     paper_fig(paper.TEST_ACCURACY[name]), fmt(_summ(results, name, "test_accuracy")),
                     paper_fig(paper.ACCURACY_DROP[name]), fmt(drop),
                     fmt(_summ(results, name, "accuracy_before_finetune"))])
    return table(["Model", "Paper param. reduction", "Ours param. reduction", "Paper acc (%)", "Ours acc (%)",
                  "Paper drop (points)", "Ours drop (points, paired)", "Ours acc before fine-tuning (%)"], rows)


def table4(results: dict) -> str:
    design = from_results(results)
    rows = []
    for name in design.names:
        rows.append([design.label(name), paper_fig(paper.PARAMS_E4.get(name), 1),
                     fmt(_summ(results, name, "params_nonzero"), 2, 1e-4),
                     paper_fig(paper.INFERENCE_MS.get(name), 1),
                     fmt(_summ(results, name, "latency_ms_batch1"), 3), fmt(_summ(results, name, "latency_ms_batch256"), 3),
                     fmt(_summ(results, name, "size_bytes_fp32"), 1, 1 / 1024),
                     fmt(_summ(results, name, "size_bytes_fp16"), 1, 1 / 1024),
                     fmt(_summ(results, name, "size_bytes_sparse"), 1, 1 / 1024),
                     fmt(_summ(results, name, "size_bytes_onnx"), 1, 1 / 1024)])
    return table(["Model", "Paper params (x10^4)", "Ours nonzero params (x10^4)", "Paper inference (ms)",
                  "Ours latency b=1 (ms)", "Ours latency b=256 (ms)", "fp32 file (KiB)", "fp16 file (KiB)",
                  "sparse file (KiB)", "ONNX file (KiB)"], rows)


def ledger_table(results: dict) -> str:
    """Counts and MACs per model (mean over seeds)."""
    design = from_results(results)
    rows = []
    for name in design.names:
        g = lambda key: fmt(_summ(results, name, key), 0, show_n=False)  # noqa: E731
        rows.append([design.label(name), g("params_total"), g("params_nonzero"), g("params_present"), g("macs_dense"),
                     g("macs_effective"), g("macs_slim")])
    return table(["Model", "params total", "params nonzero", "params physically present (slimmed)", "MACs dense",
                  "MACs on nonzero weights", "MACs slimmed"], rows)


def structure_lines(results: dict) -> list[str]:
    """Structured pruning: per pruned model and seed, each group's ratio and the channels slimming removed,
    and which network the ONNX files hold ([] for other methods)."""
    p = results["config"]["prune"]
    if p["method"] != "structured":
        return []
    design = from_results(results)
    how = ("chosen per group from the sensitivity on a validation split of "
           f"{results.get('data', {}).get('validation_examples', '?')} held-out training images (--max-drop "
           f"{p['max_drop']})" if p["ratios"] == "auto" else "as configured")
    lines = ["## Structured pruning", "",
             f"Channel groups from Torch-Pruning's dependency graph, ranked by {p['importance']} "
             f"({p['scope']}, {p['schedule']}); ratios {how}. Per model and seed: ratio per group, channels removed "
             "by slimming, and the network the ONNX files hold.", ""]
    for name in design.names:
        for seed, m in results["models"][name]["seeds"].items():
            if "prune_ratios" not in m:
                continue
            removed = m.get("pruned_channels") or ({"widths": m["widths"]} if "widths" in m else {})
            ratios = ", ".join(f"{g} {r:g}" for g, r in m["prune_ratios"].items())
            lines.append(f"- {design.label(name)}, seed {seed}: ratios {ratios}; slimmed: {removed}; ONNX: "
                         f"{m.get('onnx_network', 'not written')}.")
    return lines + [""]


def artifact_table(results: dict) -> str:
    """Every file written per model: bytes, gzip bytes and test accuracy of the decoded model (mean over seeds)."""
    design = from_results(results)
    rows = []
    for name in design.names:
        for kind, label in ARTIFACTS:
            size = _summ(results, name, f"size_bytes_{kind}")
            if not size:
                continue
            acc = artifact_accuracy(results["models"][name]["summary"], kind)
            rows.append([design.label(name), label, fmt(size, 0, show_n=False),
                         fmt(_summ(results, name, f"gzip_bytes_{kind}"), 0, show_n=False), fmt(acc, 2, show_n=False)])
    return table(["Model", "artifact", "bytes", "gzip -9 bytes", "test acc of the decoded file (%)"], rows)


def smallest_artifact(results: dict, min_accuracy: float = 0.0) -> str | None:
    """'X bytes (gzip Y): MODEL, ARTIFACT, Z%' for the smallest file whose decoded model scores >= min_accuracy."""
    design = from_results(results)
    best = None
    for name in design.names:
        for seed, m in results["models"][name]["seeds"].items():
            for kind, label in ARTIFACTS:
                if f"size_bytes_{kind}" not in m:
                    continue
                acc = artifact_accuracy(m, kind)
                if acc is not None and acc >= min_accuracy and (best is None or m[f"size_bytes_{kind}"] < best[0]):
                    best = (m[f"size_bytes_{kind}"], m[f"gzip_bytes_{kind}"], design.label(name), seed, label, acc)
    if best is None:
        return None
    return f"{best[0]:,} bytes (gzip {best[1]:,}): {best[2]} seed {best[3]}, {best[4]}, {best[5]:.2f}% test accuracy"


def f1_table(results: dict) -> str:
    design = from_results(results)
    rows = []
    means = {n: (_summ(results, n, "per_class_f1") or {}).get("mean") for n in design.names}
    if not all(means.values()):
        return "_no per-class F1 recorded_"
    mixup_gain = "mixup" in means and "baseline" in means
    for i, cls in enumerate(class_names(results)):
        row = [cls] + [f"{100 * means[n][i]:.1f}" for n in design.names]
        if mixup_gain:
            row.append(f"{100 * (means['mixup'][i] - means['baseline'][i]):+.1f}")
        rows.append(row)
    return table(["Class"] + [design.label(n) for n in design.names] + (["Mixup - Baseline"] if mixup_gain else []),
                 rows)


def observations(results: dict) -> list[str]:
    """Plain statements of what this run measured (no significance test): against the paper's headline claims
    for the paper's study, per variant against its parent otherwise."""
    lines = paper_observations(results) if paper_setting(results) else variant_observations(results)
    return lines + common_observations(results)


def variant_observations(results: dict) -> list[str]:
    """Each made variant against its parent, paired by seed."""
    design = from_results(results)
    out = []
    for v in design.variants:
        if v.parent is None:
            continue
        d = paired(results, v.parent, v.name, "test_accuracy")
        nz, tot = _summ(results, v.name, "params_nonzero"), _summ(results, v.name, "params_total")
        if d and nz and tot:
            out.append(f"{v.label} vs {design.label(v.parent)}: accuracy {fmt(d)} points, {nz['mean']:.0f} of "
                       f"{tot['mean']:.0f} parameters nonzero ({100 * (1 - nz['mean'] / tot['mean']):.1f}% fewer).")
    return out


def paper_observations(results: dict) -> list[str]:
    """The run against the paper's headline claims."""
    design = from_results(results)
    out = []
    d_acc = paired(results, "baseline", "mixup", "test_accuracy")
    d_loss = paired(results, "baseline", "mixup", "test_loss")
    if d_acc:
        verb = "raised" if d_acc["mean"] > 0 else "did not raise"
        out.append(f"Mixup {verb} test accuracy: Mixup - Baseline = {fmt(d_acc)} points (paper: +2.08).")
    if d_loss:
        verb = "lowered" if d_loss["mean"] < 0 else "did not lower"
        out.append(f"Mixup {verb} test loss: Mixup - Baseline = {fmt(d_loss, 3)} (paper: -0.067). "
                   "Mixup-trained models are less confident, which moves the loss independently of accuracy.")
    drops = {n: paired(results, design[n].parent, n, "test_accuracy") for n in ("pruned", "mixup_pruned")}
    if all(drops.values()):
        out.append(f"Pruning + fine-tuning changed accuracy by {fmt(drops['pruned'])} points without Mixup and "
                   f"{fmt(drops['mixup_pruned'])} with it (paper: -1.43 and -0.67).")
    nz = _summ(results, "mixup_pruned", "params_nonzero")
    tot = _summ(results, "mixup_pruned", "params_total")
    present = _summ(results, "mixup_pruned", "params_present")
    if nz and tot:
        line = (f"Pruned models keep {nz['mean']:.0f} of {tot['mean']:.0f} parameters nonzero, a "
                f"{100 * (1 - nz['mean'] / tot['mean']):.1f}% reduction (paper: 62.7%)")
        if present and present["mean"] < tot["mean"]:
            line += f"; {present['mean']:.0f} remain physically in the slimmed network"
        out.append(line + ".")
    lat = {n: _summ(results, n, "latency_ms_batch256") for n in ("baseline", "pruned")}
    slim_lat = _summ(results, "pruned", "latency_ms_slim_batch256")
    if all(lat.values()) and slim_lat:
        out.append(f"Latency at batch 256: baseline {lat['baseline']['mean']:.3f} ms, pruned as stored "
                   f"{lat['pruned']['mean']:.3f} ms, pruned and slimmed {slim_lat['mean']:.3f} ms "
                   f"({lat['baseline']['mean'] / slim_lat['mean']:.2f}x faster than the baseline; paper: 119.3 -> 65.8 ms).")
    elif all(lat.values()):
        out.append(f"Dense-kernel latency at batch 256: baseline {lat['baseline']['mean']:.3f} ms, pruned "
                   f"{lat['pruned']['mean']:.3f} ms: unstructured masks leave the dense computation unchanged, "
                   "so any difference is measurement noise (paper: 119.3 -> 65.8 ms).")
    return out


def common_observations(results: dict) -> list[str]:
    """ONNX verification, the smallest file, and how many seeds there are."""
    out = []
    checks = [(n, s, m) for n in from_results(results).names for s, m in results["models"][n]["seeds"].items()
              if "onnx_verified" in m]
    if checks:
        failed = [f"{n} seed {s} (agreement {100 * m['onnx_prediction_agreement']:.2f}%)" for n, s, m in checks
                  if not m["onnx_verified"]]
        worst = min(m["onnx_prediction_agreement"] for _, _, m in checks)
        out.append(f"ONNX: {len(checks) - len(failed)} of {len(checks)} exported models match PyTorch in ONNX Runtime "
                   f"on the whole test split (>= 99.9% identical predictions, accuracy within 0.05 points; lowest "
                   f"agreement {100 * worst:.2f}%)" + (f"; failed: {', '.join(failed)}." if failed else "."))
    shared = latency_sharing(results)
    if shared:
        out.append(shared)
    smallest = smallest_artifact(results)
    if smallest:
        out.append(f"Smallest file written: {smallest}.")
    n_seeds = len(results["config"]["seeds"])
    if n_seeds < 5:
        out.append(f"These are {n_seeds} seed(s): too few for a verdict on significance; run with "
                   "`--seeds 0 1 2 3 4` or more.")
    return out


def latency_sharing(results: dict) -> str | None:
    """Which models' latency figures are one timing: models that run the same kernels on the same shapes
    (measure.computation_key) are timed once; None where every model was timed itself."""
    groups: dict[str, list[str]] = {}
    for name, entry in results["models"].items():
        for seed, m in entry["seeds"].items():
            if "latency_measured_on" in m:
                groups.setdefault(m["latency_measured_on"], []).append(f"{name}-seed{seed}")
    others = {timed: [m for m in members if m != timed] for timed, members in groups.items()}
    if not any(others.values()):
        return None
    parts = [f"{timed}'s for {', '.join(rest)}" for timed, rest in others.items() if rest]
    return (f"Latency was timed once per distinct computation ({len(groups)} timing(s) for "
            f"{sum(map(len, groups.values()))} models): models that run the same kernels on the same shapes share "
            f"one figure, which removes timing noise from their comparison. Shared figures: {'; '.join(parts)}.")


def claims_table(results: dict) -> str:
    from .audit import audit_claims

    rows = results.get("claims") or audit_claims(results)
    return table(["", "Claim", "Paper", "Ours: mean [95% CI]", "p", "Verdict", "How decided"],
                 [[r["id"], r["claim"], r["paper"], r["ours"], "-" if r["p_value"] is None else f"{r['p_value']:.3g}",
                   f"**{r['verdict']}**", r["reason"]] for r in rows])


def render_report(results: dict) -> str:
    """The paper's report for the paper's study; the same measurements per variant for any other."""
    return paper_report(results) if paper_setting(results) else generic_report(results)


def variants_table(results: dict) -> str:
    """One row per variant: what it is made from and what it scores, costs and weighs."""
    design = from_results(results)
    rows = []
    for v in design.variants:
        g = lambda key, digits=2, scale=1.0: fmt(_summ(results, v.name, key), digits, scale, show_n=False)  # noqa: E731
        change = fmt(paired(results, v.parent, v.name, "test_accuracy")) if v.parent else "-"
        rows.append([v.label, design.label(v.parent) if v.parent else "initial weights", g("test_accuracy"),
                     g("test_loss", 3), change, g("params_nonzero", 0), g("macs_dense", 0), g("latency_ms_batch256", 3),
                     g("size_bytes_fp32", 1, 1 / 1024), g("size_bytes_sparse", 1, 1 / 1024)])
    return table(["Variant", "made from", "acc (%)", "loss", "acc change vs parent (points, paired)",
                  "nonzero params", "MACs", "latency b=256 (ms)", "fp32 file (KiB)", "sparse file (KiB)"], rows)


def generic_report(results: dict) -> str:
    cfg, env, data = results["config"], results["environment"], results.get("data", {})
    shape = "x".join(str(v) for v in data.get("input_shape", [])) or "?"
    norm = data.get("normalization", {})
    parts = ["# mixprune reproduce: report", "",
             f"Network `{cfg['model']['arch']}` on `{data.get('dataset')}` ({shape} inputs, "
             f"{len(class_names(results))} classes): {data.get('train_examples')} train / {data.get('test_examples')} "
             f"{data.get('evaluation', 'test split')} images from `{data.get('source')}`, normalized with mean "
             f"{norm.get('mean')} / std {norm.get('std')} (from {norm.get('from', '?')}). Seeds {cfg['seeds']}, "
             f"{cfg['train']['epochs']} epochs (+{cfg['prune']['finetune_epochs']} fine-tuning epochs at LR "
             f"{cfg['prune']['finetune_lr']}), Mixup alpha {cfg['mixup']['alpha']}, pruning {cfg['prune']['method']} "
             f"conv {cfg['prune']['conv_amount']} / FC {cfg['prune']['fc_amount']} ({cfg['prune']['scope']}). Device "
             f"{env['device']} ({env['processor']}), torch {env['versions'].get('torch')}, {env['torch_threads']} threads.",
             "", "Mean ± sample standard deviation over seeds; every number was measured by this run.", "",
             "The paper's claims audit is about its four variants of LeNet-5 on FashionMNIST; this run is another "
             "setting, so the claims are not audited here (run `mixprune reproduce` on the defaults for that).", "",
             "## Variants", "", variants_table(results), "",
             f"Latency: CPU, median of torch.utils.benchmark after warm-up, {env['torch_threads']} threads.", "",
             "## Compression ledger", "", ledger_table(results), "",
             f"MACs per {shape} input. 'On nonzero weights' is what ideal sparse kernels would do; 'slimmed' is the "
             "dense network left after removing the channels that emit exact zeros (pruned whole) and, for "
             "LeNet-5, units that cannot affect the output.", "", artifact_table(results), "",
             "Lossy files are decoded back into a model and scored on the evaluation split; the ONNX files are "
             "scored in ONNX Runtime.", "", *structure_lines(results),
             "## Per-class F1 (%)", "", f1_table(results), "",
             "## What this run shows", ""]
    parts += [f"- {line}" for line in observations(results)]
    return "\n".join(parts) + "\n"


def paper_report(results: dict) -> str:
    cfg, env, data = results["config"], results["environment"], results.get("data", {})
    parts = ["# mixprune reproduce: report", "",
             f"Seeds {cfg['seeds']}, {cfg['train']['epochs']} epochs (+{cfg['prune']['finetune_epochs']} "
             f"fine-tuning epochs at LR {cfg['prune']['finetune_lr']}), Mixup alpha {cfg['mixup']['alpha']}, "
             f"pruning conv {cfg['prune']['conv_amount']} / FC {cfg['prune']['fc_amount']} ({cfg['prune']['scope']}). "
             f"Data: {data.get('train_examples')} train / {data.get('test_examples')} test images from "
             f"`{data.get('source')}`. Device {env['device']} ({env['processor']}), torch "
             f"{env['versions'].get('torch')}, {env['torch_threads']} threads.", "",
             "Ours: mean ± sample standard deviation over seeds. Every number in an 'Ours' column was measured "
             "by this run; 'Paper' columns quote the paper.", "",
             "## Claims audit", "", claims_table(results), "",
             "Statistical claims need at least 5 seeds for a verdict (`--seeds 0 1 2 3 4`); paired tests compare "
             "models that share initial weights and data order, seed by seed.", "",
             "## Table 2: Mixup vs Baseline", "", table2(results), "",
             "## Table 3: pruning and fine-tuning", "", table3(results), "",
             "Parameter reduction = 1 - nonzero / total parameters (biases included). Drop = pruned accuracy "
             "minus its dense parent's, per seed.", "",
             "## Table 4: size and speed", "", table4(results), "",
             f"Latency: CPU, median of torch.utils.benchmark after warm-up, {env['torch_threads']} threads. "
             "The paper's inference times are on an RTX 3060 with unstated batch size.", "",
             "## Compression ledger", "", ledger_table(results), "",
             "MACs per 28x28 image. 'On nonzero weights' is what ideal sparse kernels would do; 'slimmed' is the "
             "dense network left after removing filters/neurons that are pruned whole or cannot affect the output.",
             "", artifact_table(results), "",
             "Lossy files are decoded back into a model and scored on the test split; the ONNX files are scored in "
             "ONNX Runtime.", "", *structure_lines(results),
             "## Per-class F1 (%)", "", f1_table(results), "",
             "## What this run shows", ""]
    parts += [f"- {line}" for line in observations(results)]
    parts += ["", "## Inconsistencies in the paper", ""] + [f"- {line}" for line in paper.INCONSISTENCIES]
    return "\n".join(parts) + "\n"


def figures_section(results: dict, paths: RunPaths) -> list[str]:
    """Draw the figures from results.json and history.csv; markdown lines that show them."""
    import csv

    from .plots import write_plots

    rows = list(csv.DictReader(paths.history_csv.open(encoding="utf-8"))) if paths.history_csv.is_file() else []
    figures = write_plots(results, rows, paths.plots_dir)
    captions = {"curves": "Test accuracy per epoch, mean over seeds", "f1": "Per-class F1, mean over seeds",
                "confusion": "Confusion matrices, summed over seeds (rows: true class)",
                "size": "File size of every artifact against the test accuracy of the decoded file",
                "layers": "Weights pruned per layer (mean over seeds)"}
    out = ["## Figures", ""]
    for key, path in figures.items():
        out += [f"![{captions[key]}]({path.relative_to(paths.root).as_posix()})", "", captions[key] + ".", ""]
    return out


def write_report(results: dict, paths: RunPaths) -> str:
    """report.md, the figures in plots/, and report.html (self-contained) for one run."""
    from .plots import markdown_to_html

    text = render_report(results)
    head, sep, tail = text.partition("## Per-class F1")
    text = head + "\n".join(figures_section(results, paths)) + "\n" + sep + tail
    write_text_atomic(paths.report_md, text)
    write_text_atomic(paths.report_html, markdown_to_html(text, paths.root))
    return text
