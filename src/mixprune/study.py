"""The paper's four-model study over seeds, written to a results directory as it goes.

    results = run_study(StudyConfig(seeds=(0, 1, 2)))      # Baseline, Mixup, Pruned, Mixup+Pruned
    results["models"]["mixup"]["summary"]["test_accuracy"]  # {"mean": .., "std": .., "n": 3}

Per seed: A (Baseline) and B (Mixup) start from the same initial weights and see the same batches;
C prunes A's weights and fine-tunes without Mixup; D prunes B's and fine-tunes with Mixup; C and D
fine-tune on the same data order. results.json, history.csv and the model files are rewritten
atomically after every model, so an interrupted study keeps everything it finished.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .atomic import ensure_dir, write_text_atomic
from .config import StudyConfig, to_dict
from .data import Dataset, load_fashion_mnist, to_model_inputs
from .engine import (EpochRecord, FitSpec, Tensors, constant_lr, evaluate_loss_accuracy, fit, generator,
                     lr_steps, predict, resolve_device)
from .evaluation import classification_metrics
from .export import latency_ms, save_safetensors, save_sparse
from .model import LeNet5, count_nonzero, count_params, macs_per_image, weight_sparsity
from .paths import MODEL_NAMES, RunPaths, default_out_dir
from .pruning import attach_masks, l1_masks, make_permanent

SCHEMA_VERSION = 1
SCALAR_METRICS = ("test_accuracy", "test_loss", "params_total", "params_nonzero", "sparsity",
                  "compression_ratio", "train_seconds", "latency_ms_batch1", "latency_ms_batch256",
                  "size_bytes_fp32", "size_bytes_fp16", "size_bytes_sparse", "macs_dense",
                  "accuracy_before_finetune", "param_reduction", "test_accuracy_range_last3")
LIST_METRICS = ("per_class_f1", "per_class_precision", "per_class_recall")


class Observer:
    """Receives progress events; the CLI's progress display subclasses it. Methods do nothing here."""

    def phase_start(self, model: str, seed: int, epochs: int) -> None: ...

    def epoch_end(self, model: str, seed: int, record: EpochRecord) -> None: ...

    def model_done(self, model: str, seed: int, metrics: dict) -> None: ...


@dataclass
class Trained:
    """One trained model of one seed with its per-epoch history and extra measurements."""
    model: LeNet5
    history: list[EpochRecord]
    extra: dict[str, float] = field(default_factory=dict)


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded with every result."""
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "processor": _cpu_name(), "torch_threads": torch.get_num_threads(),
           "device": str(device), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    env["versions"] = {p: version(p) for p in ("mixprune", "torch", "torchvision", "numpy", "safetensors",
                                                "torchmetrics", "rich")}
    env["versions"]["torch_build"] = torch.__version__  # e.g. 2.14.1+cu130: says which wheel ran
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prepare_tensors(ds: Dataset, device: torch.device) -> Tensors:
    return Tensors(to_model_inputs(ds.train_x, device), ds.train_y.to(device),
                   to_model_inputs(ds.test_x, device), ds.test_y.to(device))


def train_dense(cfg: StudyConfig, data: Tensors, seed: int, mixup: bool, obs: Observer, name: str,
                device: torch.device) -> Trained:
    """Model A (mixup=False) or B (mixup=True): same init and batch order for a given seed."""
    t = cfg.train
    model = LeNet5(dropout=cfg.model.dropout, generator=generator(seed, "init")).to(device)
    model.generator = generator(seed, f"dropout-{name}") if cfg.model.dropout > 0 else None
    spec = FitSpec(epochs=t.epochs, lr=lr_steps(t.lr, t.lr_decay_epoch, t.lr_decay_factor), batch_size=t.batch_size,
                   momentum=t.momentum, weight_decay=t.weight_decay, eval_batch_size=t.eval_batch_size,
                   mixup_alpha=cfg.mixup.alpha if mixup else None)
    obs.phase_start(name, seed, t.epochs)
    hist = fit(model, data, spec, generator(seed, "order"), generator(seed, "mixup") if mixup else None,
               phase="train", callbacks=[lambda r: obs.epoch_end(name, seed, r)])
    return Trained(model, hist)


def prune_and_finetune(cfg: StudyConfig, data: Tensors, dense: Trained, seed: int, mixup: bool, obs: Observer,
                       name: str) -> Trained:
    """Model C (from A, no Mixup) or D (from B, Mixup): L1 masks, fine-tune with masks held, prune.remove."""
    p, t = cfg.prune, cfg.train
    model = copy.deepcopy(dense.model)
    model.generator = generator(seed, f"dropout-{name}") if cfg.model.dropout > 0 else None
    attach_masks(model, l1_masks(model, p.conv_amount, p.fc_amount, p.scope))
    _, acc_before = evaluate_loss_accuracy(model, data.test_x, data.test_y, t.eval_batch_size)
    spec = FitSpec(epochs=p.finetune_epochs, lr=constant_lr(p.finetune_lr), batch_size=t.batch_size,
                   momentum=t.momentum, weight_decay=t.weight_decay, eval_batch_size=t.eval_batch_size,
                   mixup_alpha=cfg.mixup.alpha if mixup else None)
    obs.phase_start(name, seed, p.finetune_epochs)
    hist = fit(model, data, spec, generator(seed, "finetune-order"),
               generator(seed, "finetune-mixup") if mixup else None, phase="finetune",
               callbacks=[lambda r: obs.epoch_end(name, seed, r)])
    make_permanent(model)
    return Trained(model, hist, {"accuracy_before_finetune": acc_before})


def measure(cfg: StudyConfig, trained: Trained, data: Tensors, paths: RunPaths, name: str, seed: int,
            device: torch.device) -> dict[str, Any]:
    """Every metric of one model: test metrics, counts, file sizes, latency."""
    model = trained.model.eval()
    metrics = classification_metrics(predict(model, data.test_x, cfg.train.eval_batch_size), data.test_y)
    total, nonzero = count_params(model), count_nonzero(model)
    metrics.update(params_total=total, params_nonzero=nonzero, sparsity=weight_sparsity(model),
                   compression_ratio=total / nonzero, param_reduction=1.0 - nonzero / total,
                   train_seconds=sum(r.seconds for r in trained.history),
                   macs_dense=macs_per_image(model), **trained.extra)
    last = [r.test_accuracy for r in trained.history[-3:]]
    if last:
        metrics["test_accuracy_range_last3"] = max(last) - min(last)
    metrics["size_bytes_fp32"] = save_safetensors(model, paths.model_file(name, seed, "safetensors"))
    metrics["size_bytes_fp16"] = save_safetensors(model, paths.model_file(name, seed, "fp16.safetensors"),
                                                  torch.float16)
    metrics["size_bytes_sparse"] = save_sparse(model, paths.model_file(name, seed, "sparse.safetensors"))
    if cfg.bench.latency:
        cpu_model = copy.deepcopy(model).cpu()
        for batch in (1, 256):
            metrics[f"latency_ms_batch{batch}"] = latency_ms(cpu_model, batch, cfg.bench.min_run_time)
        metrics["latency_device"] = "cpu"
        metrics["latency_threads"] = torch.get_num_threads()
    return metrics


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mean, sample std (None for n = 1) and n of each scalar metric; element-wise for per-class lists."""
    def stats(values: list[float]) -> dict[str, Any]:
        n = len(values)
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else None, "n": n}
    seeds = list(per_seed.values())
    out: dict[str, Any] = {}
    for key in SCALAR_METRICS:
        vals = [m[key] for m in seeds if m.get(key) is not None]
        if vals:
            out[key] = stats([float(v) for v in vals])
    for key in LIST_METRICS:
        rows = [m[key] for m in seeds if key in m]
        if rows:
            per_class = [stats([r[i] for r in rows]) for i in range(len(rows[0]))]
            out[key] = {"mean": [s["mean"] for s in per_class], "std": [s["std"] for s in per_class], "n": len(rows)}
    return out


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = ["model", "seed", "phase", "epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds"]
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def toml_text(cfg: StudyConfig) -> str:
    """The resolved config as TOML (None values are left out: they mean 'default')."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else str(v)
        return json.dumps(v)  # ints and strings: JSON's quoting is valid TOML
    raw = to_dict(cfg)
    lines = ["# mixprune resolved config; reuse with: mixprune reproduce --config config.toml"]
    lines += [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict) and v is not None]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {value(v)}" for k, v in body.items() if v is not None]
    return "\n".join(lines) + "\n"


def run_study(cfg: StudyConfig, dataset: Dataset | None = None, observer: Observer | None = None,
              out_dir: Path | None = None) -> dict[str, Any]:
    """Train, prune, evaluate and save the four models for every seed; returns results.json's content."""
    obs = observer or Observer()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = dataset if dataset is not None else load_fashion_mnist(cfg.data.data_dir)
    ds = ds.subset(cfg.data.train_subset, cfg.data.test_subset)
    data = prepare_tensors(ds, device)
    paths = RunPaths(Path(out_dir or cfg.out or default_out_dir()))  # created only once the data is good
    ensure_dir(paths.models_dir)
    write_text_atomic(paths.config_toml, toml_text(cfg))
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "output_dir": str(paths.root),
                               "config": to_dict(cfg),
                               "environment": environment(device),
                               "data": {"source": str(ds.source), "train_examples": len(ds.train_y),
                                        "test_examples": len(ds.test_y)},
                               "models": {n: {"seeds": {}, "summary": {}} for n in MODEL_NAMES}}
    history: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        for name, trained in _train_seed(cfg, data, seed, obs, device):
            metrics = measure(cfg, trained, data, paths, name, seed, device)
            entry = results["models"][name]
            entry["seeds"][str(seed)] = metrics
            entry["summary"] = summarize(entry["seeds"])
            history += [{"model": name, "seed": seed, **r.as_dict()}
                        for r in trained.history]
            obs.model_done(name, seed, metrics)
            write_text_atomic(paths.results_json, json.dumps(results, indent=1))
            write_text_atomic(paths.history_csv, history_csv(history))
    return results


def _train_seed(cfg: StudyConfig, data: Tensors, seed: int, obs: Observer, device: torch.device):
    """Yield (name, Trained) for A, B, C, D of one seed, in an order that frees nothing it still needs."""
    baseline = train_dense(cfg, data, seed, False, obs, "baseline", device)
    yield "baseline", baseline
    mixup = train_dense(cfg, data, seed, True, obs, "mixup", device)
    yield "mixup", mixup
    yield "pruned", prune_and_finetune(cfg, data, baseline, seed, False, obs, "pruned")
    yield "mixup_pruned", prune_and_finetune(cfg, data, mixup, seed, True, obs, "mixup_pruned")


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json written by run_study (plain JSON, never executed)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))

