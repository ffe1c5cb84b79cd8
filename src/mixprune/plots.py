"""Figures for a study's report (matplotlib, Agg backend, PNG) and the self-contained report.html.

    written = write_plots(results, history_rows, Path("runs/x/plots"))   # {"curves": Path, ...}
    html = markdown_to_html(report_md_text, base_dir)                   # images embedded as data URIs

Every figure is drawn from results.json / history.csv of the run, nothing else.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from .artifacts import ARTIFACTS, artifact_accuracy
from .atomic import atomic_path, ensure_dir
from .results import class_names
from .variants import Design, from_results

MAX_TICK_CLASSES = 20  # more class names than this make unreadable axes: ticks are left unlabelled


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _epochs_before(design: Design, name: str, rows: list[dict[str, Any]]) -> int:
    """Epochs of the variant's ancestors (its curve continues theirs on the x axis)."""
    return sum(max((int(r["epoch"]) for r in rows if r["model"] == v.name), default=0)
               for v in design.ancestors(name)[:-1])


def training_curves(rows: list[dict[str, Any]], path: Path, design: Design | None = None) -> Path:
    """Test accuracy per epoch, mean over seeds, one line per model (fine-tuning continues the x axis)."""
    import matplotlib.pyplot as plt

    design = design or Design()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name in design.names:
        by_epoch: dict[int, list[float]] = {}
        for r in rows:
            if r["model"] == name:
                by_epoch.setdefault(int(r["epoch"]), []).append(float(r["test_accuracy"]))
        if by_epoch:
            xs = sorted(by_epoch)
            offset = _epochs_before(design, name, rows)
            ax.plot([x + offset for x in xs], [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs], marker="o",
                    label=design.label(name))
    ax.set_xlabel("epoch (fine-tuning epochs follow training)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.lines:  # a run without history rows (a report over an incomplete run) has no curve to name
        ax.legend(fontsize=8)
    return _save(fig, path)


def _class_ticks(ax: Any, classes: list[str], axes: str = "xy", rotation: int = 90) -> None:
    if len(classes) > MAX_TICK_CLASSES:
        return
    if "x" in axes:
        ax.set_xticks(range(len(classes)), [c[:7] for c in classes], rotation=rotation, fontsize=6)
    if "y" in axes:
        ax.set_yticks(range(len(classes)), [c[:7] for c in classes], fontsize=6)


def confusion_matrices(results: dict[str, Any], path: Path) -> Path:
    """Confusion matrix of each model, summed over seeds, rows = true class."""
    import matplotlib.pyplot as plt
    import numpy as np

    design, classes = from_results(results), class_names(results)
    fig, axes = plt.subplots(1, len(design.names), figsize=(4 * len(design.names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], design.names):
        mats = [np.array(m["confusion"]) for m in results["models"][name]["seeds"].values() if "confusion" in m]
        total = sum(mats) if mats else np.zeros((len(classes), len(classes)))
        ax.imshow(total, cmap="Blues")
        ax.set_title(design.label(name), fontsize=9)
        _class_ticks(ax, classes)
    return _save(fig, path)


def per_class_f1(results: dict[str, Any], path: Path) -> Path:
    """Per-class F1 (mean over seeds) of every variant, grouped by class."""
    import matplotlib.pyplot as plt

    design = from_results(results)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(design.names)
    for i, name in enumerate(design.names):
        f1 = results["models"][name]["summary"].get("per_class_f1", {}).get("mean")
        if f1:
            ax.bar([c + (i - (len(design.names) - 1) / 2) * width for c in range(len(f1))], [100 * v for v in f1], width,
                   label=design.label(name))
    _class_ticks(ax, class_names(results), "x", rotation=30)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(50, 100)
    ax.legend(fontsize=7, ncol=4)
    return _save(fig, path)


def size_vs_accuracy(results: dict[str, Any], path: Path) -> Path:
    """Every artifact as a point: bytes on disk against the accuracy of the decoded model (mean over seeds)."""
    import matplotlib.pyplot as plt

    design = from_results(results)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name in design.names:
        s = results["models"][name]["summary"]
        pts = []
        for kind, _ in ARTIFACTS:
            size = s.get(f"size_bytes_{kind}")
            acc = artifact_accuracy(s, kind)
            if size and acc:
                pts.append((size["mean"] / 1024, acc["mean"]))
        if pts:
            ax.scatter(*zip(*pts), label=design.label(name), s=18)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log scale)")
    ax.set_ylabel("test accuracy of the decoded file (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def mean_layer_sparsity(entry: dict[str, Any]) -> dict[str, float] | None:
    """Per-layer fraction of zero weights of one model, mean over its seeds (None for older results)."""
    per_seed = [m["layer_sparsity"] for m in entry["seeds"].values() if "layer_sparsity" in m]
    if not per_seed:
        return None
    return {layer: sum(s[layer] for s in per_seed) / len(per_seed) for layer in per_seed[0]}


def layer_sparsity_bars(series: dict[str, dict[str, float]], path: Path, title: str = "") -> Path:
    """Grouped bars: the fraction of zero weights in each layer, one bar per series (model or run)."""
    import matplotlib.pyplot as plt
    import numpy as np

    layers = list(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / len(series)
    for i, (label, per_layer) in enumerate(series.items()):
        ax.bar(np.arange(len(layers)) + i * width - 0.4 + width / 2, [100 * per_layer[n] for n in layers], width,
               label=label)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("weights pruned (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def write_plots(results: dict[str, Any], rows: list[dict[str, Any]], plots_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    ensure_dir(plots_dir)
    design = from_results(results)
    out = {"curves": training_curves(rows, plots_dir / "training_curves.png", design),
           "confusion": confusion_matrices(results, plots_dir / "confusion.png"),
           "f1": per_class_f1(results, plots_dir / "per_class_f1.png"),
           "size": size_vs_accuracy(results, plots_dir / "size_vs_accuracy.png")}
    layers = {v.label: mean_layer_sparsity(results["models"][v.name]) for v in design.variants if v.step == "prune"}
    if layers and all(layers.values()):
        out["layers"] = layer_sparsity_bars(layers, plots_dir / "layer_sparsity.png")  # type: ignore[arg-type]
    return out


def accuracy_vs_sparsity(curves: dict[str, list[tuple[float, float, float, float]]], path: Path,
                         ylabel: str) -> Path:
    """One line per label (e.g. alpha) through (sparsity, mean, CI low, CI high) points, with a CI band."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, pts in curves.items():
        pts = sorted(pts)
        xs = [100 * p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", ms=3, label=label)
        ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15)
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pareto_plot(points: list[tuple[float, float, str]], front: list[tuple[float, float, str]], path: Path,
                xlabel: str, log_x: bool = True) -> Path:
    """Every (cost, accuracy) point in grey; the Pareto front (no point cheaper and more accurate) in red."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=10, color="0.6", label="model (mean over seeds)")
    front = sorted(front)
    ax.plot([p[0] for p in front], [p[1] for p in front], color="tab:red", marker="o", ms=4, label="Pareto front")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def best_alpha_plot(best: list[tuple[float, float]], path: Path) -> Path:
    """The best Mixup alpha per sparsity (by mean accuracy) against the rule alpha = sqrt(sparsity)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    xs = np.linspace(0, 1, 101)
    ax.plot(100 * xs, np.sqrt(xs), color="0.5", ls="--", label="alpha = sqrt(sparsity)")
    ax.plot([100 * s for s, _ in best], [a for _, a in best], marker="o", color="tab:blue", label="best alpha measured")
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel("Mixup alpha")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str, base: Path, title: str = "mixprune report") -> str:
    """The markdown subset report.md uses (headings, paragraphs, bullets, pipe tables, images) as one
    self-contained HTML page: images are embedded, nothing is fetched."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
           "img{max-width:100%}</style></head><body>"]
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, body = block[0], block[2:]  # block[1] is the |---| rule
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
            continue
        img = re.match(r"!\[(.*?)\]\((.+?)\)", line)
        if img:
            data = base64.b64encode((base / img.group(2)).read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(img.group(1))}' src='data:image/png;base64,{data}'></p>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out + ["</body></html>"])


def plot_search_pareto(summary: dict[str, Any], path: Path) -> Path | None:
    """`mixprune search`: every point (validation accuracy against bytes, MACs and latency) with its Pareto front
    drawn as a line and the chosen design marked; one panel per cost that the points have."""
    import matplotlib.pyplot as plt

    costs = [c for c, front in summary["pareto"].items() if front]
    if not costs:
        return None
    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.6), squeeze=False)
    chosen = summary.get("chosen")
    for ax, cost in zip(axes[0], costs):
        pts = [p for p in summary["points"] if p.get(cost) is not None]
        ax.scatter([p[cost] for p in pts], [p["val_accuracy"] for p in pts], s=10, alpha=0.4, label="candidates")
        front = summary["pareto"][cost]
        ax.plot([p[cost] for p in front], [p["val_accuracy"] for p in front], "-o", ms=3, color="C1",
                label="Pareto front")
        if chosen is not None and chosen.get(cost) is not None:
            ax.scatter([chosen[cost]], [chosen["val_accuracy"]], marker="*", s=140, color="C3", label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel({"bytes": "file bytes", "macs": "MACs", "latency": "latency, batch 1 (ms)"}[cost] + " (log)")
        ax.set_ylabel("validation accuracy of the decoded file (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
