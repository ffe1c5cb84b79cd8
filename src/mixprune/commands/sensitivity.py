"""`mixprune sensitivity`: prune each channel group alone at a ladder of ratios, measure the accuracy drop on a
validation split held out from the training images, and choose per-group ratios within --max-drop.

    result = run_sensitivity(cfg, model_file=None)     # what sensitivity.json holds
    write_sensitivity(result, Path("runs/sens"))       # sensitivity.json, .csv, .png

The algorithm is compress.sensitivity's; this is the command around it: the data, the model (a file, or the
Baseline trained here), the files.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.sensitivity import LADDER, choose_ratios, ratios_flag, sensitivity
from ..compress.structured import unit_groups
from ..core.atomic import ensure_dir, read_text_capped, write_text_atomic
from ..core.config import StudyConfig, to_dict, what_it_computes
from ..core.errors import ConfigError
from ..core.outputs import check_location, claimed
from ..core.runtime import generator, resolve_device
from ..data.dataset import Dataset
from ..data.prepare import prepare_dataset, prepare_tensors
from ..deploy.files import load_weights, model_from_bytes, read_model_file
from ..models import LENET, describe, kind
from ..reporting.plots import sensitivity_plot
from ..study.jobs import Problem, dense_job, run_jobs
from ..study.observer import Observer
from ..study.variants import PAPER


def run_sensitivity(cfg: StudyConfig, model_file: str | None = None, ladder: tuple[float, ...] = LADDER,
                    observer: Any = None, out_dir: Path | None = None) -> dict[str, Any]:
    """`mixprune sensitivity`: hold out cfg.prune.val_fraction of the training images, take the model (from
    model_file, or the dense Baseline trained here on the rest with cfg's recipe and first seed), measure each
    group's drop along the ladder and choose ratios within cfg.prune.max_drop. Returns what sensitivity.json
    holds; with `out_dir`, claimed (core.outputs) before anything trains, also writes it there. Every input is
    checked first: the data, the model file (its network, input shape and classes), the groups left to prune."""
    if any(not 0.0 < r < 1.0 for r in ladder):
        raise ConfigError(f"invalid --ladder {list(ladder)}: every ratio must be in (0, 1)")
    ds = prepare_dataset(cfg, None)
    if ds.val_y is None:
        ds = ds.hold_out(cfg.prune.val_fraction)
    device = resolve_device(cfg.device)
    data = read_model_file(model_file) if model_file is not None else None
    model = _model_file(cfg, model_file, data, ds) if data is not None else None
    if cfg.model.weights:  # trained weights of --arch: measured as they are, like a --model file
        if model_file is not None:
            raise ConfigError("give --model FILE or --weights FILE, not both: either is the trained network measured")
        model = load_weights(Problem(ds.shape, ds.num_classes).build(cfg, generator(0, "init")), cfg.model.weights,
                             cfg.model.arch)
        model_file = cfg.model.weights
    _check_groups(cfg, model or Problem(ds.shape, ds.num_classes).build(cfg, generator(0, "init")),
                  model_file or cfg.model.arch)
    if out_dir is None:
        return _sensitivity(cfg, ds, device, model, model_file, ladder, observer)
    check_location(out_dir, "--out")
    settings = {"config": what_it_computes(to_dict(cfg)),
                "ladder": list(ladder), "model": data and hashlib.sha256(data).hexdigest()}
    with claimed(out_dir, "sensitivity", functools.partial(_same, settings=settings), cfg.overwrite) as where:
        result = _sensitivity(cfg, ds, device, model, model_file, ladder, observer)
        write_sensitivity({**result, "settings": settings}, where)
    return result


def _same(root: Path, settings: dict[str, Any]) -> bool | None:
    """Whether root holds a sensitivity table of the same settings (it is measured again), another one, or none."""
    try:
        earlier = json.loads(read_text_capped(root / "sensitivity.json", 1 << 24)).get("settings")
        return {**earlier, "config": what_it_computes(earlier["config"])} == settings  # written before a late field
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, AttributeError, KeyError, TypeError):
        return False


def _model_file(cfg: StudyConfig, model_file: str, data: bytes, ds: Dataset) -> nn.Module:
    """The --model network from its file's bytes, checked to take the dataset's images and give its classes."""
    model = model_from_bytes(data, model_file, cfg.model.arch if kind(cfg.model.arch) == "file" else None)
    if tuple(model.input_shape) != ds.shape:
        raise ConfigError(f"{model_file} takes {list(model.input_shape)} inputs, the dataset has {list(ds.shape)}; "
                          "choose the dataset it was trained on (--dataset, --image-size)")
    classes = describe(model)["num_classes"]
    if classes != ds.num_classes:
        raise ConfigError(f"{model_file} gives {classes} classes, the dataset has {ds.num_classes}; choose the dataset "
                          "it was trained on (--dataset)")
    return model


def _check_groups(cfg: StudyConfig, model: nn.Module, what: str) -> None:
    """ConfigError where --keep leaves the network no channel group to prune (found before anything trains)."""
    if not unit_groups(model.eval(), cfg.prune.keep_layers()):
        raise ConfigError(f"--prune-method structured: {what} has no channel group to prune (every layer is the "
                          "classifier or in --keep)")


def _sensitivity(cfg: StudyConfig, ds: Dataset, device: torch.device, model: nn.Module | None,
                 model_file: str | None, ladder: tuple[float, ...], observer: Any) -> dict[str, Any]:
    data = prepare_tensors(ds, device)
    if model is not None:
        model = model.to(device)
        source = f"{model_file} (its training images are not known here: the split may not be held out from it)"
    else:
        seed = cfg.seeds[0]
        dense = next(v for v in PAPER if v.step == "dense" and not v.mixup)
        job = dense_job(cfg, Problem(ds.shape, ds.num_classes), seed, dense, device)
        model = run_jobs([job], data, observer or Observer())[0].model
        source = (f"{dense.label} trained here (seed {seed}, {cfg.train.epochs} epochs) on the training images "
                  "minus the validation split")
    groups = unit_groups(model.eval(), cfg.prune.keep_layers())
    base, rows = sensitivity(model, groups, data.val_x, data.val_y, ladder, cfg.prune.importance, cfg.prune.norm,
                             cfg.train.eval_batch_size)
    chosen = choose_ratios(groups, rows, cfg.prune.max_drop)
    return {"model": source, "arch": getattr(model, "arch", LENET), "dataset": ds.name,
            "validation_examples": len(ds.val_y), "training_examples": len(ds.train_y),
            "importance": cfg.prune.importance, "norm": cfg.prune.norm, "ladder": list(ladder),
            "max_drop": cfg.prune.max_drop, "base_accuracy": base,
            "groups": [{"group": g.name, "kind": g.kind, "channels": g.size} for g in groups],
            "rows": rows, "chosen": chosen, "prune_ratios_flag": ratios_flag(chosen)}


def write_sensitivity(result: dict[str, Any], out_dir: Path) -> None:
    """sensitivity.json, sensitivity.csv and sensitivity.png in out_dir (each written whole, then renamed)."""
    out = Path(out_dir)
    ensure_dir(out)
    write_text_atomic(out / "sensitivity.json", json.dumps(result, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["group", "kind", "channels", "ratio", "removed", "accuracy", "drop"])
    writer.writeheader()
    writer.writerows(result["rows"])
    write_text_atomic(out / "sensitivity.csv", buf.getvalue())
    sensitivity_plot(result, out / "sensitivity.png")
