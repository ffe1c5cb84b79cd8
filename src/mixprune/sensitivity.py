"""Per-group sensitivity to structured pruning, measured on a validation split, and ratios chosen from it.

    groups = unit_groups(model)
    base, rows = sensitivity(model, groups, val_x, val_y)     # each group pruned alone at each rung of LADDER
    ratios = choose_ratios(groups, rows, max_drop=1.0)        # {group: largest ratio costing <= 1 point}

A group is pruned alone (its lowest-ranked channels' producing weights zeroed, as the study's masks do)
and the accuracy is measured on images held out from the training split: never the test split, which
must stay unseen by every choice the study makes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .engine import evaluate_loss_accuracy
from .structured import UnitGroup, structured_keep, unit_masks

LADDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _accuracy_without(model: nn.Module, masks: dict[tuple[str, str], torch.Tensor], x: Any, y: torch.Tensor,
                      batch_size: int) -> float:
    """Accuracy with the masked entries zeroed in place, the weights restored afterwards."""
    saved = {}
    with torch.no_grad():
        for (name, param), mask in masks.items():
            t = getattr(model.get_submodule(name), param)
            saved[(name, param)] = t.detach().clone()
            t.mul_(mask.to(t.device))
    try:
        return evaluate_loss_accuracy(model, x, y, batch_size)[1]
    finally:
        with torch.no_grad():
            for (name, param), value in saved.items():
                getattr(model.get_submodule(name), param).copy_(value)


def sensitivity(model: nn.Module, groups: list[UnitGroup], x: Any, y: torch.Tensor, ladder: tuple[float, ...] = LADDER,
                importance: str = "magnitude", norm: float = 1.0, batch_size: int = 1000
                ) -> tuple[float, list[dict[str, Any]]]:
    """(accuracy of the unpruned model, rows): per group and ratio of the ladder that removes at least one
    channel but not all, the accuracy with that group pruned alone and the drop in points."""
    base = evaluate_loss_accuracy(model, x, y, batch_size)[1]
    rows = []
    for g in groups:
        for ratio in ladder:
            removed = round(ratio * g.size)
            if removed == 0 or removed >= g.size:
                continue
            keep = structured_keep(model, [g], {g.name: ratio}, importance, norm)
            acc = _accuracy_without(model, unit_masks(model, [g], keep), x, y, batch_size)
            rows.append({"group": g.name, "kind": g.kind, "channels": g.size, "ratio": ratio, "removed": removed,
                         "accuracy": acc, "drop": base - acc})
    return base, rows


def choose_ratios(groups: list[UnitGroup], rows: list[dict[str, Any]], max_drop: float) -> dict[str, float]:
    """Per group, the largest ratio of the ladder whose drop, and that of every smaller ratio, stays within
    max_drop points (0 where even the smallest costs more): the drop is not always monotone in the ratio, and
    a ratio past a harmful one is not trusted."""
    out = {}
    for g in groups:
        chosen = 0.0
        for r in sorted((r for r in rows if r["group"] == g.name), key=lambda r: r["ratio"]):
            if r["drop"] > max_drop:
                break
            chosen = r["ratio"]
        out[g.name] = chosen
    return out


def ratios_flag(ratios: dict[str, float]) -> str:
    """The --prune-ratios value for these ratios (groups at 0 left out: they keep --conv/--fc-amount otherwise)."""
    return ",".join(f"{name}={ratio:g}" for name, ratio in ratios.items())


def run_sensitivity(cfg: Any, model_file: str | None = None, ladder: tuple[float, ...] = LADDER,
                    observer: Any = None) -> dict[str, Any]:
    """`mixprune sensitivity`: hold out cfg.prune.val_fraction of the training images, take the model (from
    model_file, or the dense Baseline trained here on the rest with cfg's recipe and first seed), measure each
    group's drop along the ladder and choose ratios within cfg.prune.max_drop. Returns what sensitivity.json
    holds."""
    from .errors import ConfigError
    from .export import load_model
    from .jobs import Problem, dense_job, prepare_tensors, run_jobs
    from .models import kind
    from .engine import resolve_device
    from .study import Observer, prepare_dataset
    from .structured import unit_groups
    from .variants import Design

    if any(not 0.0 < r < 1.0 for r in ladder):
        raise ConfigError(f"invalid --ladder {list(ladder)}: every ratio must be in (0, 1)")
    ds = prepare_dataset(cfg, None)
    if ds.val_y is None:
        ds = ds.hold_out(cfg.prune.val_fraction)
    device = resolve_device(cfg.device)
    data = prepare_tensors(ds, device)
    if model_file is not None:
        model = load_model(model_file, cfg.model.arch if kind(cfg.model.arch) == "file" else None).to(device)
        if tuple(model.input_shape) != ds.shape:
            raise ConfigError(f"{model_file} takes {list(model.input_shape)} inputs, the dataset has {list(ds.shape)}; "
                              "choose the dataset it was trained on (--dataset, --image-size)")
        source = f"{model_file} (its training images are not known here: the split may not be held out from it)"
    else:
        seed = cfg.seeds[0]
        dense = next(v for v in Design().variants if v.step == "dense" and not v.mixup)
        job = dense_job(cfg, Problem(ds.shape, ds.num_classes), seed, dense, device)
        model = run_jobs([job], data, observer or Observer())[0].model
        source = (f"{dense.label} trained here (seed {seed}, {cfg.train.epochs} epochs) on the training images "
                  "minus the validation split")
    groups = unit_groups(model.eval(), cfg.prune.keep_layers())
    base, rows = sensitivity(model, groups, data.val_x, data.val_y, ladder, cfg.prune.importance, cfg.prune.norm,
                             cfg.train.eval_batch_size)
    chosen = choose_ratios(groups, rows, cfg.prune.max_drop)
    return {"model": source, "arch": getattr(model, "arch", "lenet5"), "dataset": ds.name,
            "validation_examples": len(ds.val_y), "training_examples": len(ds.train_y),
            "importance": cfg.prune.importance, "norm": cfg.prune.norm, "ladder": list(ladder),
            "max_drop": cfg.prune.max_drop, "base_accuracy": base,
            "groups": [{"group": g.name, "kind": g.kind, "channels": g.size} for g in groups],
            "rows": rows, "chosen": chosen, "prune_ratios_flag": ratios_flag(chosen)}


def write_sensitivity(result: dict[str, Any], out_dir: Any) -> None:
    """sensitivity.json, sensitivity.csv and sensitivity.png in out_dir (each written whole, then renamed)."""
    import csv
    import io
    import json
    from pathlib import Path

    from .atomic import atomic_path, ensure_dir, write_text_atomic

    out = Path(out_dir)
    ensure_dir(out)
    write_text_atomic(out / "sensitivity.json", json.dumps(result, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["group", "kind", "channels", "ratio", "removed", "accuracy", "drop"])
    writer.writeheader()
    writer.writerows(result["rows"])
    write_text_atomic(out / "sensitivity.csv", buf.getvalue())
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
    with atomic_path(out / "sensitivity.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
