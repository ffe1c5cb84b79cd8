"""`mixprune compress`'s report: compress.md (original vs each compressed network, the budget curve as a table),
budget.png (test accuracy against MACs kept), budget.csv and report.html, all from what results.json holds.

    write_compress_report(result, out_dir)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path, write_text_atomic
from .html import markdown_to_html
from .stats import format_ci


def _mean(seeds: list[dict[str, Any]], key: str) -> float:
    return sum(s[key] for s in seeds) / len(seeds)


def _ms(seeds: list[dict[str, Any]], key: str) -> str:
    """Mean milliseconds over seeds, or "-" where latency was not measured (--no-latency)."""
    return f"{_mean(seeds, key):.3f}" if key in seeds[0] else "-"


def _verdict(t: dict[str, Any], max_drop: float) -> str:
    parts = []
    if "budget_met" in t:
        parts.append("budget met" if t["budget_met"] else "**budget missed**")
    kept = t["accuracy_kept"]
    parts.append(f"accuracy kept within {max_drop:g} points with 95% confidence" if kept else
                 f"**not shown to keep accuracy within {max_drop:g} points** (95% CI)" if kept is False else
                 "one seed: no confidence interval for the accuracy change")
    return "; ".join(parts)


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per network (the original, then each target): what the table and budget.csv show."""
    o = result["original"]
    rows = [{"network": "original", "target": "-", "achieved": "-", "test_accuracy": f"{o['test_accuracy']:.2f}",
             "change": "-", "params": o["params"], "macs": o["macs"], "bytes_fp32": o["bytes_fp32"],
             "bytes_onnx_int8": o["bytes_onnx_int8"], "latency_ms": _ms([o], "latency_ms"),
             "ort_latency_ms": _ms([o], "ort_latency_ms")}]
    for t in result["targets"]:
        s = t["seeds"]
        achieved = "-" if "achieved" not in t else f"{t['achieved']:,.6g} ({t['achieved_ratio']:.3f}x)"
        rows.append({"network": t["label"], "target": f"<= {t['limit']:,.6g}" if "limit" in t else "-", "achieved": achieved,
                     "test_accuracy": format_ci(t["test_accuracy"]),
                     "change": format_ci(t["accuracy_change"], signed=True, n=True),
                     "params": round(_mean(s, "params")), "macs": round(_mean(s, "macs")),
                     "bytes_fp32": round(_mean(s, "bytes_fp32")), "bytes_onnx_int8": round(_mean(s, "bytes_onnx_int8")),
                     "latency_ms": _ms(s, "latency_ms"), "ort_latency_ms": _ms(s, "ort_latency_ms")})
    return rows


def compress_markdown(result: dict[str, Any]) -> str:
    o, bench = result["original"], result["bench"]
    lines = [f"# mixprune compress: {result['arch']} on {result['dataset']}", "",
             f"Weights: `{result['weights'] or 'given to the Python API'}`. Every design was chosen on "
             f"{result['validation_examples']} validation images held out from the training images; the test split "
             f"({result['test_examples']} images) was used once per network. Recovery: {result['finetune_epochs']} "
             f"epochs of fine-tuning on {result['training_examples']} images while channels were removed in steps"
             + (", distilled from the original" if result["distill"] else "")
             + (f", Mixup alpha {result['mixup_alpha']:g}" if result["mixup_alpha"] else "") + "; "
             f"seeds {', '.join(map(str, result['seeds']))}. Latency: median ms per batch of {bench['batch']} on "
             f"{bench['threads']} thread(s) of this CPU (PyTorch eager, and ONNX Runtime for the .onnx file).", "",
             f"If the original was trained on all the training images, it has seen the validation split: its "
             f"validation accuracy ({o['val_accuracy']:.2f}%) is then optimistic, and so are the drops the design "
             "was chosen from.", "", "## Budgets", ""]
    for t in result["targets"]:
        lines.append(f"- **{t['label']}**: {_verdict(t, result['max_drop'])}; test accuracy change "
                     f"{format_ci(t['accuracy_change'], signed=True, n=True)} points.")
    cols = [("network", "network"), ("target", "target"), ("achieved", "achieved (measured)"),
            ("test_accuracy", "test acc (%)"), ("change", "change (points, 95% CI)"), ("params", "params"),
            ("macs", "MACs/image"), ("bytes_fp32", "fp32 bytes"), ("bytes_onnx_int8", "int8 ONNX bytes"),
            ("latency_ms", "eager ms"), ("ort_latency_ms", "ORT ms")]
    lines += ["", "| " + " | ".join(c for _, c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in cols) + " |" for r in _rows(result)]
    lines += ["", "## Channels removed per group", "", "| network | " + " | ".join(
        f"{g['group']} ({g['channels']})" for g in result["groups"]) + " | predicted validation drop |",
        "|" + "---|" * (len(result["groups"]) + 2)]
    for t in result["targets"]:
        lines.append(f"| {t['label']} | " + " | ".join(str(t["removed"][g["group"]]) for g in result["groups"])
                     + f" | {t['predicted_drop']:.2f} |")
    lines += ["", "The predicted drop sums each group's drop when pruned alone, before fine-tuning: it ranks designs, "
              "it does not forecast the final accuracy.", "", "## Files (first seed)", ""]
    for t in result["targets"]:
        s = t["seeds"][0]
        lines.append(f"- {t['label']}/seed{s['seed']}/: model.safetensors ({s['bytes_fp32']:,} B), model.fp16.safetensors "
                     f"({s['bytes_fp16']:,} B), model.onnx ({s['bytes_onnx']:,} B; ONNX Runtime agrees with PyTorch on "
                     f"{100 * s['onnx_prediction_agreement']:.2f}% of test images), model.int8.onnx "
                     f"({s['bytes_onnx_int8']:,} B; {s['onnx_int8_test_accuracy']:.2f}% in ONNX Runtime)")
    lines += ["", "## Per-class F1", "", "| class | original | " + " | ".join(t["label"] for t in result["targets"])
              + " |", "|" + "---|" * (len(result["targets"]) + 2)]
    for k, f1 in enumerate(o["per_class_f1"]):
        means = [sum(s["per_class_f1"][k] for s in t["seeds"]) / len(t["seeds"]) for t in result["targets"]]
        lines.append(f"| {k} | {f1:.3f} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", "![test accuracy against MACs kept](budget.png)", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), ""]
    return "\n".join(lines)


def budget_plot(result: dict[str, Any], path: Path) -> Path:
    """Test accuracy (mean, 95% CI over seeds) against the share of the original's MACs kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = result["original"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([1.0], [o["test_accuracy"]], "ks", label="original")
    for t in result["targets"]:
        x = _mean(t["seeds"], "macs") / o["macs"]
        acc = t["test_accuracy"]
        err = [[acc["mean"] - acc["ci95"][0]], [acc["ci95"][1] - acc["mean"]]] if acc["ci95"] else None
        ax.errorbar([x], [acc["mean"]], yerr=err, fmt="o", capsize=3, label=t["label"])
    ax.set(xlabel="MACs kept (share of the original's)", ylabel="test accuracy (%)",
           title=f"{result['arch']} on {result['dataset']}: budget curve")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_compress_report(result: dict[str, Any], out_dir: Path) -> None:
    """compress.md, budget.png, budget.csv and report.html in out_dir (each written whole, then renamed)."""
    rows = _rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_dir / "budget.csv", buf.getvalue())
    budget_plot(result, out_dir / "budget.png")
    md = compress_markdown(result)
    write_text_atomic(out_dir / "compress.md", md)
    write_text_atomic(out_dir / "report.html", markdown_to_html(md, out_dir, "mixprune compress"))
