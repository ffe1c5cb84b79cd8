"""Figures for the reports (matplotlib, Agg backend, PNG): a study's, a sweep's, a search's, a sensitivity table's.

    written = write_plots(results, history_rows, Path("runs/x/plots"))   # {"curves": Path, ...}
    sensitivity_plot(result, Path("runs/s/sensitivity.png"))             # `mixprune sensitivity`

Every figure is drawn from results (results.json, history.csv) and the commands' summaries, nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path, ensure_dir
from ..deploy.encodings import ENCODINGS, artifact_accuracy
from ..study.results import Results
from ..study.variants import Design

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


def confusion_matrices(results: Results, path: Path) -> Path:
    """Confusion matrix of each model, summed over seeds, rows = true class."""
    import matplotlib.pyplot as plt
    import numpy as np

    design, classes = results.design, results.classes
    fig, axes = plt.subplots(1, len(design.names), figsize=(4 * len(design.names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], design.names):
        mats = [np.array(m) for m in results.values(name, "confusion")]
        total = sum(mats) if mats else np.zeros((len(classes), len(classes)))
        ax.imshow(total, cmap="Blues")
        ax.set_title(design.label(name), fontsize=9)
        _class_ticks(ax, classes)
    return _save(fig, path)


def per_class_f1(results: Results, path: Path) -> Path:
    """Per-class F1 (mean over seeds) of every variant, grouped by class."""
    import matplotlib.pyplot as plt

    design = results.design
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(design.names)
    for i, name in enumerate(design.names):
        f1 = (results.summary(name, "per_class_f1") or {}).get("mean")
        if f1:
            ax.bar([c + (i - (len(design.names) - 1) / 2) * width for c in range(len(f1))], [100 * v for v in f1], width,
                   label=design.label(name))
    _class_ticks(ax, results.classes, "x", rotation=30)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(50, 100)
    ax.legend(fontsize=7, ncol=4)
    return _save(fig, path)


def size_vs_accuracy(results: Results, path: Path) -> Path:
    """Every artifact as a point: bytes on disk against the accuracy of the decoded model (mean over seeds)."""
    import matplotlib.pyplot as plt

    design = results.design
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name in design.names:
        s = results.summary(name)
        pts = []
        for enc in ENCODINGS:
            size = s.get(f"size_bytes_{enc.kind}")
            acc = artifact_accuracy(s, enc.kind)
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


def mean_layer_sparsity(results: Results, name: str) -> dict[str, float] | None:
    """Per-layer fraction of zero weights of one model, mean over its seeds (None for older results)."""
    per_seed = results.values(name, "layer_sparsity")
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


def write_plots(results: Results, rows: list[dict[str, Any]], plots_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    ensure_dir(plots_dir)
    design = results.design
    out = {"curves": training_curves(rows, plots_dir / "training_curves.png", design),
           "confusion": confusion_matrices(results, plots_dir / "confusion.png"),
           "f1": per_class_f1(results, plots_dir / "per_class_f1.png"),
           "size": size_vs_accuracy(results, plots_dir / "size_vs_accuracy.png")}
    layers = {v.label: mean_layer_sparsity(results, v.name) for v in design.variants if v.step == "prune"}
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


def sensitivity_plot(result: dict[str, Any], path: Path) -> Path:
    """`mixprune sensitivity`: each group's validation accuracy drop against the share of its channels removed,
    with the --max-drop line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in result["groups"]:
        mine = [r for r in result["rows"] if r["group"] == g["group"]]
        ax.plot([r["ratio"] for r in mine], [r["drop"] for r in mine], marker="o", ms=3,
                label=f"{g['group']} ({g['channels']})")
    ax.axhline(result["max_drop"], color="k", ls="--", lw=0.8, label=f"--max-drop {result['max_drop']:g}")
    ax.set(xlabel="share of the group's channels removed (alone)", ylabel="validation accuracy drop (points)",
           title=f"Sensitivity of {result['arch']} on {result['dataset']} "
                 f"({result['validation_examples']} validation images)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
