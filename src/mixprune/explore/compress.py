"""`mixprune compress`: a trained network made to fit budgets (MACs, parameters, file bytes, latency, accuracy drop),
recovered by fine-tuning against the original, measured, and written as files a runtime runs.

    spec = CompressSpec(targets=(parse_target("macs", "0.5x"),))
    result = run_compress(cfg, spec, Path("runs/c"))            # cfg.model.weights: the trained network
    result = run_compress(cfg, spec, out, model=my_trained_module, dataset=(train_x, train_y, test_x, test_y))

Order of work: every input is checked and the design of every target is chosen before anything is written: the
data (a validation split held out from the training images, compress.sensitivity's per-group drops on it), the
weights (models.weights, or a mixprune model file), the original measured (the reference of every budget), a
greedy removal path (compress.budgets) met per target, an unreachable target refused with the smallest reachable
cost. Then, per target and seed, the original loses its channels in steps during fine-tuning (the gradual
structured pruner) with the original as distillation teacher, is slimmed, and is measured on the test split once;
each finished (target, seed) is written whole at once, and a rerun resumes from what is on disk.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.budgets import RemovalPath, Step, Target, floor, meet, parse_target, within_drop
from ..compress.pruning import make_permanent
from ..compress.sensitivity import LADDER, sensitivity
from ..compress.structured import (
    GradualStructuredPruner,
    ShapeCosts,
    check_exact,
    shrink,
    slim_network,
    unit_groups,
)
from ..core.atomic import ensure_dir, read_text_capped, write_text_atomic
from ..core.config import StudyConfig, to_dict, toml_text, what_it_computes, with_overrides
from ..core.errors import ConfigError
from ..core.outputs import check_location, claimed
from ..core.runtime import available_cores, generator, resolve_device
from ..data.dataset import Dataset
from ..data.prepare import Tensors, prepare_dataset, prepare_tensors
from ..deploy.encodings import BY_KIND
from ..deploy.files import load_model, load_weights, save_safetensors
from ..deploy.onnx import export_onnx, onnx_logits, ort_session, quantize_onnx_int8
from ..deploy.timing import latency_ms, time_ms
from ..models import check_input, count_params, describe, kind, evaluate_loss_accuracy, macs_per_image, predict
from ..reporting.compress_report import write_compress_report
from ..reporting.stats import mean_ci
from ..study.evaluation import classification_metrics
from ..study.backends import run_tasks
from ..study.jobs import Problem, fit_spec, finetune_lr
from ..study.observer import Observer
from ..train.engine import fit, steps_per_epoch

FORMATS = ("fp32", "fp16", "sparse", "sparse_int8", "onnx", "onnx_int8")  # --format: encodings of deploy.encodings
CALIBRATION_IMAGES = 1000  # first training images: int8 activation ranges


@dataclass(frozen=True)
class CompressSpec:
    """What `compress` is asked: the trained weights, the budgets, and how the compressed network recovers."""
    targets: tuple[Target, ...] = ()  # none: the accuracy budget alone (cfg.prune.max_drop) chooses the design
    format: str = "fp32"  # the file --target-bytes counts
    bench_batch: int = 1  # latency: batch size and threads of every timing
    bench_threads: int = 1
    distill: bool = True  # fine-tune against the original (cfg.distill: temperature, weight)
    mixup_alpha: float = 0.0  # Mixup while fine-tuning; 0: off

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"invalid --format {self.format!r}: one of {', '.join(FORMATS)}")
        if not 1 <= self.bench_batch <= 65_536 or not 1 <= self.bench_threads <= available_cores():
            raise ConfigError(f"invalid --bench-batch {self.bench_batch} / --bench-threads {self.bench_threads}: batch "
                              f"in 1..65536, threads in 1..{available_cores()}")
        if not 0.0 <= self.mixup_alpha <= 100.0:
            raise ConfigError(f"invalid --mixup-alpha {self.mixup_alpha}: in 0..100 (0: Mixup off)")
        if len({t.label for t in self.targets}) != len(self.targets):
            raise ConfigError("the same target is given twice; give each --target-* value once")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": [{"metric": t.metric, "text": t.text} for t in self.targets]}


SPEC_KEYS = {"target_macs": list, "target_params": list, "target_bytes": list, "target_latency": list,
             "format": str, "bench_batch": int, "bench_threads": int, "distill": bool, "mixup_alpha": (int, float)}


def compress_spec(values: dict[str, Any], where: str = "flags") -> CompressSpec:
    """A CompressSpec from flags or a config file's [compress] table (target_macs = ["0.5x"], ...), every name and
    type checked (ConfigError naming `where`), every target parsed."""
    for key, value in values.items():
        kind = SPEC_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(SPEC_KEYS)}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} = {value!r} is not a {getattr(kind, '__name__', 'number')}")
    targets = tuple(parse_target(metric, str(v)) for metric in ("macs", "params", "bytes", "latency")
                    for v in values.get(f"target_{metric}", ()))
    spec = CompressSpec(**{k: v for k, v in values.items() if not k.startswith("target_")}, targets=targets)
    spec.check()
    return spec


@dataclass
class Plan:
    """The design of one target, chosen on the validation split: channels removed per group, the predicted drop
    (groups pruned alone, summed), the absolute limit, and the planned cost."""
    target: Target | None
    limit: float | None
    step: Step
    planned: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.target.label if self.target else "max-drop"


def _given(model: nn.Module, ds: Dataset) -> nn.Module:
    """A copy of a trained nn.Module given to the Python API, checked to take the dataset's images and give its
    classes (models.check_input)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a trained torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    model.input_shape = tuple(getattr(model, "input_shape", ds.shape))
    model.arch = getattr(model, "arch", f"python:{type(model).__name__}")
    model.output_classes = ds.num_classes
    check_input(model, model.arch, ds.shape, ds.num_classes)
    return model


def _with_test(data: Tensors, x: Any, y: torch.Tensor) -> Tensors:
    """data whose evaluation split is (x, y): fine-tuning's per-epoch figures come from the validation split, so
    the test split is looked at once, at the end."""
    return Tensors(data.train_x, data.train_y, x, y, data.val_x, data.val_y)


def _file_bytes(model: nn.Module, fmt: str, where: Path, calibration: torch.Tensor) -> int:
    """Bytes of the `fmt` file of model, written into `where`."""
    if fmt == "onnx":
        return export_onnx(model, where / "m.onnx")
    if fmt == "onnx_int8":
        export_onnx(model, where / "m.onnx")
        return quantize_onnx_int8(where / "m.onnx", where / "m.int8.onnx", calibration[:64])
    return BY_KIND[fmt].write(model, where / "m.safetensors")


class Costs:
    """Every cost of a removal (channels per group), on a copy of the original with those channels removed
    (Torch-Pruning): measured, never assumed."""

    def __init__(self, model: nn.Module, groups: list, spec: CompressSpec, calibration: torch.Tensor, scratch: Path):
        self.model, self.spec, self.calibration, self.scratch = model, spec, calibration, scratch
        self._last: tuple[tuple, nn.Module] | None = None  # the last network built: measures of one removal share it
        # MACs and parameters from the layers' shapes where they equal the shrunk network's (checked on two removals):
        # ResNet-18's path to 0.5x took 240 shrinks of ~0.5 s each, the shapes take microseconds
        shapes = ShapeCosts(model, groups)
        half = {g.name: g.size // 2 for g in groups}
        deepest = {g.name: min(round(0.9 * g.size), g.size - 1) for g in groups}
        self.shapes = shapes if shapes.matches([half, deepest]) else None

    def network(self, removal: dict[str, int]) -> nn.Module:
        key = tuple(sorted(removal.items()))
        if self._last is None or self._last[0] != key:
            self._last = (key, shrink(copy.deepcopy(self.model).cpu().eval(),
                                      {name: list(range(n)) for name, n in removal.items() if n}))
        return self._last[1]

    def of(self, metric: str, model: nn.Module) -> float:
        if metric == "macs":
            return float(macs_per_image(model))
        if metric == "params":
            return float(count_params(model))
        if metric == "bytes":
            return float(_file_bytes(model, self.spec.format, self.scratch, self.calibration))
        return latency_ms(copy.deepcopy(model).cpu(), self.spec.bench_batch, 0.3, self.spec.bench_threads,
                          adaptive=True)

    def measure(self, metric: str) -> Callable[[dict[str, int]], float]:
        if self.shapes is not None and metric in ("macs", "params"):
            return getattr(self.shapes, metric)
        return lambda removal: self.of(metric, self.network(removal))


def _plans(model: nn.Module, groups: list, rows: list[dict], spec: CompressSpec, cfg: StudyConfig,
           costs: Costs, original: dict[str, float]) -> list[Plan]:
    """Each target's design on one greedy path by MACs (by parameters for parameter and byte budgets); ConfigError
    for a target the path cannot reach, naming the smallest cost it reaches."""
    paths = {"macs": RemovalPath(groups, rows, costs.measure("macs")),
             "params": RemovalPath(groups, rows, costs.measure("params"))}
    if not spec.targets:
        step = within_drop(paths["macs"], cfg.prune.max_drop)
        return [Plan(None, None, step, {"macs": step.cost})]
    plans = []
    for t in spec.targets:
        path = paths["params" if t.metric in ("params", "bytes") else "macs"]
        limit = t.absolute(original[t.metric])
        least = costs.measure(t.metric)(floor(path))
        step = meet(path, costs.measure(t.metric), limit, every=0.05 if t.metric == "latency" else 0.0) \
            if least <= limit else None
        if step is None:
            raise ConfigError(f"--target-{t.metric} {t.text} cannot be met: at most {limit:,.6g} {t.metric} asked, and "
                              f"the smallest this network reaches by removing channels (90 percent of every group but "
                              f"the classifier and --keep) is {least:,.6g}; ask for more, or --keep fewer layers")
        plans.append(Plan(t, limit, step, {t.metric: costs.of(t.metric, costs.network(step.removal))}))
    return plans


def _original_costs(model: nn.Module, spec: CompressSpec, costs: Costs) -> dict[str, float]:
    metrics = {"macs", "params"} | {t.metric for t in spec.targets}
    return {m: costs.of(m, model.cpu().eval()) for m in sorted(metrics)}


def _setup(cfg: StudyConfig, spec: CompressSpec, dataset: Dataset | None, model: nn.Module | None, scratch: Path
           ) -> dict[str, Any]:
    """Everything checked and planned before anything is written: data, network and weights, groups, original
    costs, sensitivity on the validation split, and each target's plan."""
    spec.check()
    if cfg.backend != "local" or cfg.cache_dir:
        raise ConfigError("mixprune compress runs on this machine for now (--workers N: N recoveries at once in worker "
                          "processes); drop --backend ray / --cache-dir")
    if not cfg.bench.latency and any(t.metric == "latency" for t in spec.targets):
        raise ConfigError("--target-latency needs latency measured; drop --no-latency / --quick")
    ds = prepare_dataset(cfg, dataset)
    if ds.val_y is None:
        ds = ds.hold_out(cfg.prune.val_fraction)
    device = resolve_device(cfg.device)
    problem = Problem(ds.shape, ds.num_classes)
    if model is None:
        if not cfg.model.weights:
            raise ConfigError("mixprune compress needs --weights FILE: the trained network to compress")
        model = load_weights(problem.build(cfg, generator(0, "init")), cfg.model.weights, cfg.model.arch)
    else:
        model = _given(model, ds)
    groups = unit_groups(model.eval(), cfg.prune.keep_layers())
    if not groups:
        raise ConfigError(f"{getattr(model, 'arch', 'the network')} has no channel group to prune (every layer is the "
                          "classifier or in --keep)")
    check_exact(model, groups, {g.name: torch.arange(g.size) % 2 == 0 for g in groups})
    data = prepare_tensors(ds, device)
    calibration = data.train_x[:CALIBRATION_IMAGES].cpu()
    costs = Costs(model, groups, spec, calibration, scratch)
    original = _original_costs(model, spec, costs)
    model = model.to(device)
    ladder = tuple(sorted(set(LADDER) | {0.05, 0.15, 0.25, 0.35, 0.45}))
    base, rows = sensitivity(model, groups, data.val_x, data.val_y, ladder, cfg.prune.importance, cfg.prune.norm,
                             cfg.train.eval_batch_size)
    plans = _plans(model, groups, rows, spec, cfg, costs, original)
    return {"ds": ds, "data": data, "model": model, "groups": groups, "rows": rows, "val_accuracy": base,
            "original_costs": original, "plans": plans, "calibration": calibration, "device": device}


def _ort_ms(path: Path, spec: CompressSpec, shape: tuple[int, ...]) -> float:
    import numpy as np

    session = ort_session(path, spec.bench_threads)
    x = np.zeros((spec.bench_batch, *shape), dtype=np.float32)
    return time_ms(lambda: session.run(["logits"], {"input": x}), spec.bench_threads, 0.3, adaptive=True)["median_ms"]


def measure(model: nn.Module, data: Tensors, spec: CompressSpec, where: Path, num_classes: int,
            calibration: torch.Tensor) -> dict[str, Any]:
    """One network's figures: validation and test accuracy (test: once), loss, per-class F1, parameters, MACs, and the
    bytes of each file written into `where` (fp32 and fp16 safetensors, ONNX verified in ONNX Runtime on the test
    split, int8 ONNX scored there too)."""
    model = model.eval()
    ensure_dir(where)
    logits = predict(model, data.test_x).cpu()
    test = classification_metrics(logits, data.test_y, num_classes)
    y = data.test_y.cpu()
    cpu = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    out = {"val_accuracy": evaluate_loss_accuracy(model, data.val_x, data.val_y)[1],
           "test_accuracy": test["test_accuracy"], "test_loss": test["test_loss"], "per_class_f1": test["per_class_f1"],
           "params": count_params(cpu), "macs": macs_per_image(cpu),
           "bytes_fp32": save_safetensors(cpu, where / "model.safetensors"),
           "bytes_fp16": save_safetensors(cpu, where / "model.fp16.safetensors", torch.float16),
           "bytes_onnx": export_onnx(cpu, where / "model.onnx")}
    x = torch.cat([data.test_x[i:i + 1000].cpu() for i in range(0, len(y), 1000)])
    ort = onnx_logits(where / "model.onnx", x)
    out["onnx_test_accuracy"] = 100.0 * (ort.argmax(1) == y).double().mean().item()
    out["onnx_prediction_agreement"] = (ort.argmax(1) == logits.argmax(1)).double().mean().item()
    out["bytes_onnx_int8"] = quantize_onnx_int8(where / "model.onnx", where / "model.int8.onnx", calibration)
    int8 = onnx_logits(where / "model.int8.onnx", x)
    out["onnx_int8_test_accuracy"] = 100.0 * (int8.argmax(1) == y).double().mean().item()
    out["bytes"] = {fmt: out[f"bytes_{fmt}"] for fmt in ("fp32", "fp16", "onnx", "onnx_int8")}
    if spec.format in ("sparse", "sparse_int8"):
        out["bytes"][spec.format] = BY_KIND[spec.format].write(cpu, where / f"model.{BY_KIND[spec.format].suffix}")
    return out


def timings(model: nn.Module, where: Path, spec: CompressSpec) -> dict[str, float]:
    """Median ms per --bench-batch of the network in PyTorch eager and of its ONNX files (fp32, int8) in ONNX Runtime,
    on --bench-threads threads; run with nothing else training, so the figures are comparable."""
    cpu = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    shape = tuple(cpu.input_shape)
    return {"latency_ms": latency_ms(cpu, spec.bench_batch, 0.5, spec.bench_threads, adaptive=True),
            "ort_latency_ms": _ort_ms(where / "model.onnx", spec, shape),
            "ort_int8_latency_ms": _ort_ms(where / "model.int8.onnx", spec, shape)}


def recover(original: nn.Module, groups: list, plan: Plan, cfg: StudyConfig, spec: CompressSpec, data: Tensors,
            seed: int, observer: Any) -> nn.Module:
    """A copy of the original that loses the plan's channels in steps while it fine-tunes (re-ranked by its current
    weights at each step, the last step at --gradual-end of the epochs), against the original as teacher unless
    --no-distill; then the removed channels are cut out (slimmed)."""
    student = copy.deepcopy(original)
    ratios = {g.name: plan.step.removal[g.name] / g.size for g in groups}
    epochs = cfg.prune.finetune_epochs
    total = epochs * steps_per_epoch(len(data.train_x), cfg.train.batch_size)
    pruner = GradualStructuredPruner(student, groups, ratios, max(1, round(cfg.prune.gradual_end * total)),
                                     cfg.prune.gradual_every, cfg.prune.importance, cfg.prune.norm)
    run = cfg if spec.mixup_alpha == 0 else with_overrides(cfg, {"mixup.alpha": spec.mixup_alpha})
    fspec = fit_spec(run, epochs, finetune_lr(cfg), spec.mixup_alpha > 0, "kd" if spec.distill else "ce", pruner,
                     original if spec.distill else None)
    observer.phase_start(plan.label, seed, epochs)
    fit(student, _with_test(data, data.val_x, data.val_y), fspec, generator(seed, "finetune-order"),
        generator(seed, "finetune-mixup") if spec.mixup_alpha > 0 else None, "recover",
        [lambda r: observer.epoch_end(plan.label, seed, r)])
    pruner.prune_to(1.0)
    small = slim_network(make_permanent(student))
    small.input_shape, small.arch = original.input_shape, getattr(original, "arch", "model")
    small.output_classes = getattr(original, "output_classes", None)
    return small.to(data.train_x.device)


def verdict(plan: Plan, seeds: list[dict[str, Any]], original: dict[str, Any], spec: CompressSpec,
            max_drop: float) -> dict[str, Any]:
    """The accuracy change over seeds (mean, 95% CI), the cost each seed's network achieved, and whether the budget
    was met (every seed at or under the limit; latency: the median seed) and the accuracy kept within max_drop
    with 95% confidence (the CI's lower end; None with one seed)."""
    change = mean_ci([s["test_accuracy"] - original["test_accuracy"] for s in seeds])
    out: dict[str, Any] = {"accuracy_change": change, "test_accuracy": mean_ci([s["test_accuracy"] for s in seeds])}
    if plan.target is not None:
        metric = plan.target.metric
        values = sorted(_achieved(s, metric, spec) for s in seeds)
        achieved = values[len(values) // 2] if metric == "latency" else values[-1]
        out.update(achieved=achieved, limit=plan.limit, achieved_ratio=achieved / original_cost(original, metric, spec),
                   budget_met=bool(achieved <= plan.limit))
    out["accuracy_kept"] = None if change["ci95"] is None else bool(change["ci95"][0] >= -max_drop)
    return out


def _achieved(metrics: dict[str, Any], metric: str, spec: CompressSpec) -> float:
    return metrics["bytes"][spec.format] if metric == "bytes" else metrics["latency_ms" if metric == "latency" else metric]


def original_cost(original: dict[str, Any], metric: str, spec: CompressSpec) -> float:
    return _achieved(original, metric, spec)


def _settings(cfg: StudyConfig, spec: CompressSpec, weights_digest: str | None) -> dict[str, Any]:
    return {"config": what_it_computes(to_dict(cfg)), "compress": spec.as_dict(), "weights_sha256": weights_digest}


def _same(root: Path, settings: dict[str, Any]) -> bool | None:
    try:
        return json.loads(read_text_capped(root / "compress.json", 1 << 24)) == settings
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return False


def _digest(model: nn.Module) -> str:
    """sha256 of the original's weights: a rerun resumes only for the same trained network."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_compress(cfg: StudyConfig, spec: CompressSpec, out_dir: Path, model: nn.Module | None = None,
                 dataset: Dataset | None = None, observer: Any = None) -> dict[str, Any]:
    """Compress the trained network to each target (see the module's docstring); returns what results.json holds.
    `model`: a trained nn.Module (the Python API) instead of --arch and --weights."""
    observer = observer or Observer()
    check_location(out_dir, "--out")
    with tempfile.TemporaryDirectory(prefix="mixprune-compress-") as scratch:
        s = _setup(cfg, spec, dataset, model, Path(scratch))
        settings = _settings(cfg, spec, _digest(s["model"]))
        with claimed(out_dir, "compress", functools.partial(_same, settings=settings), cfg.overwrite) as where:
            write_text_atomic(where / "compress.json", json.dumps(settings, indent=1))
            result = _run(cfg, spec, s, where, observer)
            write_text_atomic(where / "config.toml", _toml(cfg, spec))
            write_text_atomic(where / "results.json", json.dumps(result, indent=1))
            write_compress_report(result, where)
    return result


_ORIGINALS: dict[str, nn.Module] = {}  # per worker process: the original, read once from its file


def _original(shared: dict[str, Any]) -> nn.Module:
    """The original network: the one in memory (in this process), or in a worker read from original/model.safetensors
    (the fp32 file measure wrote: the same weights, bit for bit)."""
    if shared["original"] is not None:
        return shared["original"]
    path = str(shared["where"] / "original" / "model.safetensors")
    if path not in _ORIGINALS:
        arch = shared["cfg"].model.arch
        model = load_model(path, arch=arch if kind(arch) == "file" else None)
        model.arch = arch
        _ORIGINALS[path] = model.to(shared["data"].train_x.device)
    return _ORIGINALS[path]


def _recover_task(shared: dict[str, Any], task: tuple[Plan, int], observer: Any, emit: Any) -> list:
    """One (target, seed): recover, measure, write its files and, last, its metrics.json (timed here only where
    nothing else trains beside it)."""
    plan, seed = task
    cfg, spec, data = shared["cfg"], shared["spec"], shared["data"]
    small = recover(_original(shared), shared["groups"], plan, cfg, spec, data, seed, observer)
    cell = shared["where"] / plan.label / f"seed{seed}"
    metrics = {"seed": seed, "shape": describe(small),
               **measure(small, data, spec, cell, shared["num_classes"], shared["calibration"])}
    if shared["time_here"]:
        metrics.update(timings(small, cell, spec))
    _finish(cell, metrics)
    return []


def _timed(where: Path, metrics: dict[str, Any], model: Callable[[], nn.Module], spec: CompressSpec) -> dict[str, Any]:
    """metrics with latency, timed now (and written) where it lacks it: a network recovered in a worker, or one
    an interrupted run measured but did not time."""
    if "latency_ms" in metrics:
        return metrics
    return _finish(where, {**metrics, **timings(model(), where, spec)})


def _run(cfg: StudyConfig, spec: CompressSpec, s: dict[str, Any], where: Path, observer: Any) -> dict[str, Any]:
    data, num_classes = s["data"], s["ds"].num_classes
    original = _done(where / "original" / "metrics.json") or \
        _finish(where / "original", measure(s["model"], data, spec, where / "original", num_classes, s["calibration"]))
    if cfg.bench.latency:
        original = _timed(where / "original", original, lambda: s["model"], spec)
    todo = [(plan, seed) for plan in s["plans"] for seed in cfg.seeds
            if _done(where / plan.label / f"seed{seed}" / "metrics.json") is None]
    in_process = kind(getattr(s["model"], "arch", "python:")) == "python"  # a module given as Python code
    workers = 1 if in_process else min(max(cfg.workers, 1), max(len(todo), 1))
    threads = cfg.threads or (torch.get_num_threads() if workers == 1 else max(1, available_cores() // workers))
    shared = {"cfg": cfg, "spec": spec, "data": data, "groups": s["groups"], "where": where,
              "num_classes": num_classes, "calibration": s["calibration"],
              "original": s["model"] if workers == 1 else None, "time_here": workers == 1 and cfg.bench.latency}
    run_tasks(_recover_task, todo, shared, workers, threads, observer, on_result=lambda item: None)
    targets = []
    for plan in s["plans"]:
        seeds = []
        for seed in cfg.seeds:
            cell = where / plan.label / f"seed{seed}"
            metrics = _done(cell / "metrics.json")
            if cfg.bench.latency:
                metrics = _timed(cell, metrics, lambda: _slimmed(cell, s["model"], cfg), spec)
            observer.model_done(plan.label, seed, {"test_accuracy": metrics["test_accuracy"],
                                                   "params_nonzero": metrics["params"]})
            seeds.append(metrics)
        targets.append({"label": plan.label, "target": plan.target and {"metric": plan.target.metric,
                                                                        "text": plan.target.text},
                        "removed": plan.step.removal, "predicted_drop": plan.step.drop, "planned": plan.planned,
                        "seeds": seeds, **verdict(plan, seeds, original, spec, cfg.prune.max_drop)})
    return {"arch": getattr(s["model"], "arch", "model"), "dataset": s["ds"].name, "weights": cfg.model.weights,
            "validation_examples": len(s["ds"].val_y), "training_examples": len(s["ds"].train_y),
            "test_examples": len(s["ds"].test_y), "seeds": list(cfg.seeds), "max_drop": cfg.prune.max_drop,
            "format": spec.format, "bench": {"batch": spec.bench_batch, "threads": spec.bench_threads},
            "distill": spec.distill, "mixup_alpha": spec.mixup_alpha, "finetune_epochs": cfg.prune.finetune_epochs,
            "execution": {"workers": workers, "threads": threads},
            "groups": [{"group": g.name, "channels": g.size} for g in s["groups"]],
            "sensitivity": s["rows"], "original": original, "targets": targets, "versions": _versions()}


def _slimmed(cell: Path, original: nn.Module, cfg: StudyConfig) -> nn.Module:
    """A recovered network read back from its fp32 file (rebuilt from its description; a network given as Python
    code: the original with the same channels removed)."""
    arch = getattr(original, "arch", cfg.model.arch)
    python = kind(arch) == "python"
    model = load_model(cell / "model.safetensors", arch=arch if kind(arch) == "file" else None,
                       model=copy.deepcopy(original).cpu() if python else None)
    model.input_shape = original.input_shape
    return model


def _done(path: Path) -> dict[str, Any] | None:
    """A finished (target, seed)'s metrics, written last: its files are all there."""
    try:
        return json.loads(read_text_capped(path, 1 << 24))
    except (FileNotFoundError, ValueError):
        return None


def _finish(where: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    write_text_atomic(where / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("mixprune", "torch", "torch-pruning", "onnx", "onnxruntime"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _toml(cfg: StudyConfig, spec: CompressSpec) -> str:
    """config.toml: the study settings and a [compress] table; `mixprune compress --config config.toml` re-runs it."""
    text = toml_text(cfg).replace("mixprune reproduce --config", "mixprune compress --config")
    d = spec.as_dict()
    lines = ["", "[compress]"]
    for metric in ("macs", "params", "bytes", "latency"):
        values = [t["text"] for t in d["targets"] if t["metric"] == metric]
        if values:
            lines.append(f"target_{metric} = {json.dumps(values)}")
    lines += [f"format = {json.dumps(d['format'])}", f"bench_batch = {d['bench_batch']}",
              f"bench_threads = {d['bench_threads']}", f"distill = {'true' if d['distill'] else 'false'}",
              f"mixup_alpha = {float(d['mixup_alpha'])!r}"]
    return text + "\n".join(lines) + "\n"
