"""The paper's report: its Tables 2-4 with the paper's figures beside this run's, the claims audit, and what the
run shows against the paper's headline claims. Only for the paper's study (audit.paper_setting); every other
run gets report.generic_report. The paper's variant names (baseline, mixup, pruned, mixup_pruned) belong here.

    text = paper_report(results)
"""

from __future__ import annotations

from ..study.results import Results
from . import paper
from .audit import audit_claims
from .report import (
    artifact_table,
    common_observations,
    f1_table,
    fmt,
    ledger_table,
    paired_change,
    structure_lines,
    table,
)


def paper_fig(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def table2(results: Results) -> str:
    design = results.design
    rows = []
    for name in ("baseline", "mixup"):
        rows.append([design.label(name), paper_fig(paper.TEST_ACCURACY[name]), fmt(results.summary(name, "test_accuracy")),
                     paper_fig(paper.TEST_LOSS[name], 3), fmt(results.summary(name, "test_loss"), 3),
                     paper.CONVERGENCE[name], fmt(results.summary(name, "test_accuracy_range_last3"))])
    return table(["Model", "Paper acc (%)", "Ours acc (%)", "Paper loss", "Ours loss", "Paper: stability",
                  "Ours: test-acc range over last 3 epochs (points)"], rows)


def table3(results: Results) -> str:
    design = results.design
    rows = []
    for name in ("pruned", "mixup_pruned"):
        reduction = results.summary(name, "param_reduction")
        drop = paired_change(results, design[name].parent, name, "test_accuracy")
        rows.append([design.label(name), paper_fig(paper.PARAM_REDUCTION_PCT[name], 1, "%"),
                     fmt(reduction, 1, 100.0) + " %" if reduction else "-",
                     paper_fig(paper.TEST_ACCURACY[name]), fmt(results.summary(name, "test_accuracy")),
                     paper_fig(paper.ACCURACY_DROP[name]), fmt(drop),
                     fmt(results.summary(name, "accuracy_before_finetune"))])
    return table(["Model", "Paper param. reduction", "Ours param. reduction", "Paper acc (%)", "Ours acc (%)",
                  "Paper drop (points)", "Ours drop (points, paired)", "Ours acc before fine-tuning (%)"], rows)


def table4(results: Results) -> str:
    design = results.design
    rows = []
    for name in design.names:
        rows.append([design.label(name), paper_fig(paper.PARAMS_E4.get(name), 1),
                     fmt(results.summary(name, "params_nonzero"), 2, 1e-4),
                     paper_fig(paper.INFERENCE_MS.get(name), 1),
                     fmt(results.summary(name, "latency_ms_batch1"), 3), fmt(results.summary(name, "latency_ms_batch256"), 3),
                     fmt(results.summary(name, "size_bytes_fp32"), 1, 1 / 1024),
                     fmt(results.summary(name, "size_bytes_fp16"), 1, 1 / 1024),
                     fmt(results.summary(name, "size_bytes_sparse"), 1, 1 / 1024),
                     fmt(results.summary(name, "size_bytes_onnx"), 1, 1 / 1024)])
    return table(["Model", "Paper params (x10^4)", "Ours nonzero params (x10^4)", "Paper inference (ms)",
                  "Ours latency b=1 (ms)", "Ours latency b=256 (ms)", "fp32 file (KiB)", "fp16 file (KiB)",
                  "sparse file (KiB)", "ONNX file (KiB)"], rows)


def claims_table(results: Results) -> str:
    rows = results.claims or audit_claims(results)
    return table(["", "Claim", "Paper", "Ours: mean [95% CI]", "p", "Verdict", "How decided"],
                 [[r["id"], r["claim"], r["paper"], r["ours"], "-" if r["p_value"] is None else f"{r['p_value']:.3g}",
                   f"**{r['verdict']}**", r["reason"]] for r in rows])


def paper_observations(results: Results) -> list[str]:
    """The run against the paper's headline claims."""
    design = results.design
    out = []
    d_acc = paired_change(results, "baseline", "mixup", "test_accuracy")
    d_loss = paired_change(results, "baseline", "mixup", "test_loss")
    if d_acc:
        verb = "raised" if d_acc["mean"] > 0 else "did not raise"
        out.append(f"Mixup {verb} test accuracy: Mixup - Baseline = {fmt(d_acc)} points (paper: +2.08).")
    if d_loss:
        verb = "lowered" if d_loss["mean"] < 0 else "did not lower"
        out.append(f"Mixup {verb} test loss: Mixup - Baseline = {fmt(d_loss, 3)} (paper: -0.067). "
                   "Mixup-trained models are less confident, which moves the loss independently of accuracy.")
    drops = {n: paired_change(results, design[n].parent, n, "test_accuracy") for n in ("pruned", "mixup_pruned")}
    if all(drops.values()):
        out.append(f"Pruning + fine-tuning changed accuracy by {fmt(drops['pruned'])} points without Mixup and "
                   f"{fmt(drops['mixup_pruned'])} with it (paper: -1.43 and -0.67).")
    nz = results.summary("mixup_pruned", "params_nonzero")
    tot = results.summary("mixup_pruned", "params_total")
    present = results.summary("mixup_pruned", "params_present")
    if nz and tot:
        line = (f"Pruned models keep {nz['mean']:.0f} of {tot['mean']:.0f} parameters nonzero, a "
                f"{100 * (1 - nz['mean'] / tot['mean']):.1f}% reduction (paper: 62.7%)")
        if present and present["mean"] < tot["mean"]:
            line += f"; {present['mean']:.0f} remain physically in the slimmed network"
        out.append(line + ".")
    lat = {n: results.summary(n, "latency_ms_batch256") for n in ("baseline", "pruned")}
    slim_lat = results.summary("pruned", "latency_ms_slim_batch256")
    if all(lat.values()) and slim_lat:
        out.append(f"Latency at batch 256: baseline {lat['baseline']['mean']:.3f} ms, pruned as stored "
                   f"{lat['pruned']['mean']:.3f} ms, pruned and slimmed {slim_lat['mean']:.3f} ms "
                   f"({lat['baseline']['mean'] / slim_lat['mean']:.2f}x faster than the baseline; paper: 119.3 -> 65.8 ms).")
    elif all(lat.values()):
        out.append(f"Dense-kernel latency at batch 256: baseline {lat['baseline']['mean']:.3f} ms, pruned "
                   f"{lat['pruned']['mean']:.3f} ms: unstructured masks leave the dense computation unchanged, "
                   "so any difference is measurement noise (paper: 119.3 -> 65.8 ms).")
    return out


def paper_report(results: Results) -> str:
    cfg, env, data = results.config, results.environment, results.data
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
             "## Per-class F1 (%)", "", f1_table(results, "Mixup - Baseline"), "",
             "## What this run shows", ""]
    parts += [f"- {line}" for line in paper_observations(results) + common_observations(results)]
    parts += ["", "## Inconsistencies in the paper", ""] + [f"- {line}" for line in paper.INCONSISTENCIES]
    return "\n".join(parts) + "\n"


def paper_figure(name: str, metric: str) -> float | None:
    """The paper's own figure for a variant (Table 2): test_accuracy or test_loss; None where it gives none."""
    return {"test_accuracy": paper.TEST_ACCURACY, "test_loss": paper.TEST_LOSS}[metric].get(name)
