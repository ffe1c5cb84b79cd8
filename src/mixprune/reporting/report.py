"""The report of any run (any dataset, network and variant table): the measurements per variant, read from its
Results; the paper's own tables and claims are paper_report's, and publish.py picks between the two.

    text = generic_report(results)        # markdown; every number comes from the run's results
    variants_table(results), artifact_table(results), f1_table(results), observations...

Numbers are shown as mean ± sample std over seeds (n given); where n = 1 there is no spread to show.
"""

from __future__ import annotations

from typing import Any

from ..deploy.encodings import ENCODINGS, artifact_accuracy
from ..study.results import Results
from .stats import paired


def fmt(summary: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, show_n: bool = True) -> str:
    """'88.34 ± 0.12 (n=3)' from a summary entry; '-' when missing."""
    if not summary:
        return "-"
    n = f" (n={summary['n']})" if show_n else ""
    mean = summary["mean"] * scale
    if summary.get("std") is None:
        return f"{mean:.{digits}f}{n}"
    return f"{mean:.{digits}f} ± {summary['std'] * scale:.{digits}f}{n}"


def paired_change(results: Results, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """metric(b) - metric(a) over the seeds both models have, paired by seed (stats.paired: mean, std, CI, p);
    None where they share no seed."""
    sa, sb = results.by_seed(a, metric), results.by_seed(b, metric)
    seeds = [s for s in sa if s in sb]
    return paired([sa[s] for s in seeds], [sb[s] for s in seeds]) if seeds else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def variants_table(results: Results) -> str:
    """One row per variant: what it is made from and what it scores, costs and weighs."""
    design = results.design
    rows = []
    for v in design.variants:
        g = lambda key, digits=2, scale=1.0: fmt(results.summary(v.name, key), digits, scale, show_n=False)  # noqa: E731
        change = fmt(paired_change(results, v.parent, v.name, "test_accuracy")) if v.parent else "-"
        rows.append([v.label, design.label(v.parent) if v.parent else "initial weights", g("test_accuracy"),
                     g("test_loss", 3), change, g("params_nonzero", 0), g("macs_dense", 0), g("latency_ms_batch256", 3),
                     g("size_bytes_fp32", 1, 1 / 1024), g("size_bytes_sparse", 1, 1 / 1024)])
    return table(["Variant", "made from", "acc (%)", "loss", "acc change vs parent (points, paired)",
                  "nonzero params", "MACs", "latency b=256 (ms)", "fp32 file (KiB)", "sparse file (KiB)"], rows)


def ledger_table(results: Results) -> str:
    """Counts and MACs per model (mean over seeds)."""
    design = results.design
    rows = []
    for name in design.names:
        g = lambda key: fmt(results.summary(name, key), 0, show_n=False)  # noqa: E731
        rows.append([design.label(name), g("params_total"), g("params_nonzero"), g("params_present"), g("macs_dense"),
                     g("macs_effective"), g("macs_slim")])
    return table(["Model", "params total", "params nonzero", "params physically present (slimmed)", "MACs dense",
                  "MACs on nonzero weights", "MACs slimmed"], rows)


def structure_lines(results: Results) -> list[str]:
    """Structured pruning: per pruned model and seed, each group's ratio and the channels slimming removed,
    and which network the ONNX files hold ([] for other methods)."""
    p = results.config["prune"]
    if p["method"] != "structured":
        return []
    design = results.design
    how = ("chosen per group from the sensitivity on a validation split of "
           f"{results.data.get('validation_examples', '?')} held-out training images (--max-drop "
           f"{p['max_drop']})" if p["ratios"] == "auto" else "as configured")
    lines = ["## Structured pruning", "",
             f"Channel groups from Torch-Pruning's dependency graph, ranked by {p['importance']} "
             f"({p['scope']}, {p['schedule']}); ratios {how}. Per model and seed: ratio per group, channels removed "
             "by slimming, and the network the ONNX files hold.", ""]
    for name in design.names:
        for seed, m in results.seeds(name).items():
            if "prune_ratios" not in m:
                continue
            removed = m.get("pruned_channels") or ({"widths": m["widths"]} if "widths" in m else {})
            ratios = ", ".join(f"{g} {r:g}" for g, r in m["prune_ratios"].items())
            lines.append(f"- {design.label(name)}, seed {seed}: ratios {ratios}; slimmed: {removed}; ONNX: "
                         f"{m.get('onnx_network', 'not written')}.")
    return lines + [""]


def artifact_table(results: Results) -> str:
    """Every file written per model: bytes, gzip bytes and test accuracy of the decoded model (mean over seeds)."""
    design = results.design
    rows = []
    for name in design.names:
        for enc in ENCODINGS:
            size = results.summary(name, f"size_bytes_{enc.kind}")
            if not size:
                continue
            acc = artifact_accuracy(results.summary(name), enc.kind)
            rows.append([design.label(name), enc.label, fmt(size, 0, show_n=False),
                         fmt(results.summary(name, f"gzip_bytes_{enc.kind}"), 0, show_n=False), fmt(acc, 2, show_n=False)])
    return table(["Model", "artifact", "bytes", "gzip -9 bytes", "test acc of the decoded file (%)"], rows)


def smallest_artifact(results: Results, min_accuracy: float = 0.0) -> str | None:
    """'X bytes (gzip Y): MODEL, ARTIFACT, Z%' for the smallest file whose decoded model scores >= min_accuracy."""
    design = results.design
    best = None
    for name in design.names:
        for seed, m in results.seeds(name).items():
            for enc in ENCODINGS:
                if f"size_bytes_{enc.kind}" not in m:
                    continue
                acc = artifact_accuracy(m, enc.kind)
                if acc is not None and acc >= min_accuracy and (best is None or m[f"size_bytes_{enc.kind}"] < best[0]):
                    best = (m[f"size_bytes_{enc.kind}"], m[f"gzip_bytes_{enc.kind}"], design.label(name), seed, enc.label, acc)
    if best is None:
        return None
    return f"{best[0]:,} bytes (gzip {best[1]:,}): {best[2]} seed {best[3]}, {best[4]}, {best[5]:.2f}% test accuracy"


def f1_table(results: Results, gain_header: str | None = None) -> str:
    """Per-class F1 of every variant (mean over seeds), and where the table has a dense variant with Mixup and its
    twin without, the difference between the two (headed `gain_header`, else by their labels)."""
    design = results.design
    rows = []
    means = {n: (results.summary(n, "per_class_f1") or {}).get("mean") for n in design.names}
    if not all(means.values()):
        return "_no per-class F1 recorded_"
    pair = design.mixup_pair("dense")
    for i, cls in enumerate(results.classes):
        row = [cls] + [f"{100 * means[n][i]:.1f}" for n in design.names]
        if pair:
            row.append(f"{100 * (means[pair[1]][i] - means[pair[0]][i]):+.1f}")
        rows.append(row)
    gain = [gain_header or f"{design.label(pair[1])} - {design.label(pair[0])}"] if pair else []
    return table(["Class"] + [design.label(n) for n in design.names] + gain, rows)


def variant_observations(results: Results) -> list[str]:
    """Each made variant against its parent, paired by seed."""
    design = results.design
    out = []
    for v in design.variants:
        if v.parent is None:
            continue
        d = paired_change(results, v.parent, v.name, "test_accuracy")
        nz, tot = results.summary(v.name, "params_nonzero"), results.summary(v.name, "params_total")
        if d and nz and tot:
            out.append(f"{v.label} vs {design.label(v.parent)}: accuracy {fmt(d)} points, {nz['mean']:.0f} of "
                       f"{tot['mean']:.0f} parameters nonzero ({100 * (1 - nz['mean'] / tot['mean']):.1f}% fewer).")
    return out


def common_observations(results: Results) -> list[str]:
    """ONNX verification, the smallest file, and how many seeds there are."""
    out = []
    checks = [(n, s, m) for n in results.names for s, m in results.seeds(n).items()
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
    n_seeds = len(results.config["seeds"])
    if n_seeds < 5:
        out.append(f"These are {n_seeds} seed(s): too few for a verdict on significance; run with "
                   "`--seeds 0 1 2 3 4` or more.")
    return out


def latency_sharing(results: Results) -> str | None:
    """Which models' latency figures are one timing: models that run the same kernels on the same shapes
    (deploy.fingerprint.computation_key) are timed once; None where every model was timed itself."""
    groups: dict[str, list[str]] = {}
    for name in results.names:
        for seed, m in results.seeds(name).items():
            if "latency_measured_on" in m:
                groups.setdefault(m["latency_measured_on"], []).append(f"{name}-seed{seed}")
    others = {timed: [m for m in members if m != timed] for timed, members in groups.items()}
    if not any(others.values()):
        return None
    parts = [f"{timed}'s for {', '.join(rest)}" for timed, rest in others.items() if rest]
    return (f"Latency was timed once per distinct computation ({len(groups)} timing(s) for "
            f"{sum(map(len, groups.values()))} models): models that run the same kernels on the same shapes share "
            f"one figure, which removes timing noise from their comparison. Shared figures: {'; '.join(parts)}.")


def generic_report(results: Results) -> str:
    cfg, env, data = results.config, results.environment, results.data
    shape = "x".join(str(v) for v in data.get("input_shape", [])) or "?"
    norm = data.get("normalization", {})
    parts = ["# mixprune reproduce: report", "",
             f"Network `{cfg['model']['arch']}` on `{data.get('dataset')}` ({shape} inputs, "
             f"{len(results.classes)} classes): {data.get('train_examples')} train / {data.get('test_examples')} "
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
    parts += [f"- {line}" for line in variant_observations(results) + common_observations(results)]
    return "\n".join(parts) + "\n"
