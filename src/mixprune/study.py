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
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path, ensure_dir, exclusive_dir, write_text_atomic
from .audit import audit_claims
from .backends import available_cores, run_tasks
from .cache import ModelCache, bench_key, data_fingerprint, model_key
from .config import StudyConfig, to_dict, uses_mixup
from .data import Dataset, load_fashion_mnist, to_model_inputs
from .engine import (
    EpochRecord,
    FitSpec,
    Tensors,
    constant_lr,
    evaluate_loss_accuracy,
    fit,
    generator,
    lr_steps,
    memory_format,
    predict,
    resolve_device,
    steps_per_epoch,
)
from .evaluation import classification_metrics, expected_calibration_error, fgsm_accuracy, noise_accuracy
from .export import (
    export_onnx,
    gzip_size,
    latency_ms,
    load_model,
    quantize_onnx_int8,
    save_safetensors,
    save_sparse,
    verify_onnx,
)
from .model import (
    LeNet5,
    count_nonzero,
    count_params,
    effective_macs,
    layer_sparsity,
    macs_per_image,
    weight_sparsity,
)
from .paths import MODEL_NAMES, RunPaths, default_out_dir
from .pruning import GradualPruner, attach_masks, l1_masks, make_permanent, pruned_counts, semi_structured_masks
from .slimming import slim, structured_keep, unit_masks
from .stacked import Member, fit_stacked, stackable

# results.json's format. Raised when a field is removed or changes meaning; fields are only ever added
# within a version, and readers treat added fields as optional (e.g. layer_sparsity, reused_models).
SCHEMA_VERSION = 1
ONNX_MIN_AGREEMENT, ONNX_MAX_ACC_DIFF = 0.999, 0.05  # ONNX Runtime vs PyTorch on the test split (points)
CALIBRATION_IMAGES = 1000  # first training images, for int8 activation ranges


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
    env["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["determinism_note"] = ("CUDA: cuDNN may choose non-deterministic convolution kernels and index_add/"
                                   "scatter backward passes use atomics, so reruns can differ in the last digits")
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
    fmt = memory_format(device)
    return Tensors(to_model_inputs(ds.train_x, device).contiguous(memory_format=fmt), ds.train_y.to(device),
                   to_model_inputs(ds.test_x, device).contiguous(memory_format=fmt), ds.test_y.to(device))


def fit_spec(cfg: StudyConfig, epochs: int, lr: Callable[[int], float], mixup: bool,
             step_hook: Callable[[int], None] | None = None) -> FitSpec:
    """The training settings of cfg for one phase (training or fine-tuning)."""
    t = cfg.train
    return FitSpec(epochs=epochs, lr=lr, batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
                   eval_batch_size=t.eval_batch_size,
                   mixup_alpha=cfg.mixup.alpha if mixup and cfg.mixup.alpha > 0 else None,  # alpha 0: Mixup off
                   step_hook=step_hook, cuda_graphs=t.cuda_graphs)


@dataclass
class Job:
    """One model's training, set up (weights, masks, settings, random streams) but not yet run."""
    name: str
    seed: int
    model: LeNet5
    spec: FitSpec
    order_gen: torch.Generator
    mixup_gen: torch.Generator | None
    phase: str  # "train" or "finetune"
    extra: dict[str, Any] = field(default_factory=dict)


def dense_job(cfg: StudyConfig, seed: int, mixup: bool, name: str, device: torch.device) -> Job:
    """Model A (mixup=False) or B (mixup=True): same init and batch order for a given seed."""
    t = cfg.train
    model = LeNet5(dropout=cfg.model.dropout, generator=generator(seed, "init"))
    model = model.to(device=device, memory_format=memory_format(device))
    model.generator = generator(seed, f"dropout-{name}") if cfg.model.dropout > 0 else None
    spec = fit_spec(cfg, t.epochs, lr_steps(t.lr, t.lr_decay_epoch, t.lr_decay_factor), mixup)
    return Job(name, seed, model, spec, generator(seed, "order"), generator(seed, "mixup") if mixup else None, "train")


def attach_pruning(cfg: StudyConfig, model: LeNet5, n_train: int) -> GradualPruner | None:
    """Put the configured masks on model; for the gradual schedule, return the step hook that grows them."""
    p = cfg.prune
    if p.method == "2:4":
        masks, _ = semi_structured_masks(model)
        attach_masks(model, masks)
        return None
    if p.method == "structured":
        keep = structured_keep(model, p.conv_amount, p.fc_amount, p.norm)
        attach_masks(model, unit_masks(model, keep), bias_masks=keep)
        return None
    if p.schedule == "oneshot":
        attach_masks(model, l1_masks(model, p.conv_amount, p.fc_amount, p.scope))
        return None
    total = p.finetune_epochs * steps_per_epoch(n_train, cfg.train.batch_size)
    return GradualPruner(model, pruned_counts(model, p.conv_amount, p.fc_amount), end_step=max(1, round(p.gradual_end * total)),
                         every=p.gradual_every, scope=p.scope)


def finetune_job(cfg: StudyConfig, data: Tensors, dense: Trained, seed: int, name: str) -> Job:
    """Model C (from A) or D (from B): masks on a copy of the dense weights, to be fine-tuned with the
    masks held (Mixup as --finetune-mixup says: by default D with it, C without)."""
    p, t = cfg.prune, cfg.train
    model = copy.deepcopy(dense.model)
    model.generator = generator(seed, f"dropout-{name}") if cfg.model.dropout > 0 else None
    hook = attach_pruning(cfg, model, len(data.train_x))
    extra: dict[str, Any] = {}
    if hook is None:  # one-shot: how much the pruning itself cost, before fine-tuning repairs it
        extra["accuracy_before_finetune"] = evaluate_loss_accuracy(model, data.test_x, data.test_y, t.eval_batch_size)[1]
    ft_mixup = uses_mixup(cfg, name, "finetune")
    spec = fit_spec(cfg, p.finetune_epochs, constant_lr(p.finetune_lr), ft_mixup, hook)
    return Job(name, seed, model, spec, generator(seed, "finetune-order"),
               generator(seed, "finetune-mixup") if ft_mixup else None, "finetune", extra)


def _finish(job: Job, history: list[EpochRecord]) -> Trained:
    """After training: a fine-tuned model's masks become zeros in plain parameters (prune.remove)."""
    if job.phase == "finetune":
        hook = job.spec.step_hook
        if isinstance(hook, GradualPruner) and job.spec.epochs == 0:
            hook(hook.end_step)  # no steps to spread it over: prune at once
        make_permanent(job.model)
    return Trained(job.model, history, job.extra)


def run_jobs(jobs: list[Job], data: Tensors, obs: Observer, stack: int = 0) -> list[Trained]:
    """Train each job; with stack (a stack size, 0: none), those that can train together do so in one pass
    (stacked.py) in a stack of that size, the others (gradual pruning, dropout) one after another. Results
    come back in the order of `jobs`."""
    def callbacks(job: Job) -> list[Callable[[EpochRecord], None]]:
        return [lambda r, j=job: obs.epoch_end(j.name, j.seed, r)]
    for job in jobs:
        obs.phase_start(job.name, job.seed, job.spec.epochs)
    together = [j for j in jobs if stack and stackable(j.model, j.spec)]
    histories = dict(zip(map(id, together), fit_stacked(
        [Member(j.model, j.spec, j.order_gen, j.mixup_gen, callbacks(j), f"{j.name} seed {j.seed}") for j in together],
        data, together[0].phase, stack))) if together else {}
    for job in jobs:
        if id(job) not in histories:
            histories[id(job)] = fit(job.model, data, job.spec, job.order_gen, job.mixup_gen, phase=job.phase,
                                     callbacks=callbacks(job))
    return [_finish(job, histories[id(job)]) for job in jobs]


def measure_latency(cfg: StudyConfig, trained: Trained) -> dict[str, Any]:
    """CPU latency at batch 1 and 256 (and of the slimmed network, when slimming removes units), with
    --threads threads or all cores."""
    cpu_model = copy.deepcopy(trained.model).cpu().to(memory_format=torch.contiguous_format)
    threads = cfg.threads or available_cores()
    out: dict[str, Any] = {f"latency_ms_batch{b}": latency_ms(cpu_model, b, cfg.bench.min_run_time, threads)
                           for b in (1, 256)}
    small = slim(trained.model)
    if small.widths != trained.model.widths:
        out.update({f"latency_ms_slim_batch{b}": latency_ms(small, b, cfg.bench.min_run_time, threads) for b in (1, 256)})
    out.update(latency_device="cpu", latency_threads=threads)
    return out


def measure(cfg: StudyConfig, trained: Trained, data: Tensors, paths: RunPaths, name: str, seed: int) -> dict[str, Any]:
    """Every metric of one model but latency: test metrics, counts, file sizes (the files are written here)."""
    model = trained.model.eval()
    logits = predict(model, data.test_x, cfg.train.eval_batch_size)
    metrics = classification_metrics(logits, data.test_y)
    total, nonzero = count_params(model), count_nonzero(model)
    metrics.update(params_total=total, params_nonzero=nonzero, sparsity=weight_sparsity(model),
                   layer_sparsity=layer_sparsity(model),
                   compression_ratio=total / nonzero, param_reduction=1.0 - nonzero / total,
                   train_seconds=sum(r.seconds for r in trained.history),
                   macs_dense=macs_per_image(model), **trained.extra)
    last = [r.test_accuracy for r in trained.history[-3:]]
    if last:
        metrics["test_accuracy_range_last3"] = max(last) - min(last)
    metrics.update(robustness(model, logits, data, seed))
    small = slim(model)
    metrics.update(params_present=count_params(small), widths=list(small.widths), macs_slim=macs_per_image(small),
                   macs_effective=effective_macs(model))
    metrics.update(write_artifacts(cfg, model, small, logits, data, paths, name, seed))
    return metrics


NOISE_SIGMA, FGSM_EPSILON = 0.3, 0.05  # in normalized input units: inputs span [-1, 1]


def robustness(model: LeNet5, logits: torch.Tensor, data: Tensors, seed: int) -> dict[str, float]:
    """Calibration and robustness on the test split: ECE, accuracy under Gaussian noise and under FGSM."""
    return {"ece": expected_calibration_error(logits, data.test_y),
            "noise_accuracy": noise_accuracy(model, data.test_x, data.test_y, NOISE_SIGMA, generator(seed, "noise")),
            "fgsm_accuracy": fgsm_accuracy(model, data.test_x, data.test_y, FGSM_EPSILON)}


def write_artifacts(cfg: StudyConfig, model: LeNet5, small: LeNet5, logits: torch.Tensor, data: Tensors,
                    paths: RunPaths, name: str, seed: int) -> dict[str, Any]:
    """Write every deployable file of one model and measure each: bytes, gzip bytes, and for lossy
    encodings the test accuracy of the model decoded back from the file."""
    out: dict[str, Any] = {}

    def record(kind: str, path: Path, size: int, lossy: bool) -> None:
        out[f"size_bytes_{kind}"] = size
        out[f"gzip_bytes_{kind}"] = gzip_size(path)
        if lossy:
            decoded = load_model(path).to(device=data.test_x.device)
            out[f"test_accuracy_{kind}"] = evaluate_loss_accuracy(decoded, data.test_x, data.test_y,
                                                                  cfg.train.eval_batch_size)[1]

    for kind, suffix, writer, lossy in (
            ("fp32", "safetensors", lambda p: save_safetensors(model, p), False),
            ("fp16", "fp16.safetensors", lambda p: save_safetensors(model, p, torch.float16), True),
            ("sparse", "sparse.safetensors", lambda p: save_sparse(model, p, "fp16"), True),
            ("sparse_int8", "sparse-int8.safetensors", lambda p: save_sparse(model, p, "int8"), True)):
        path = paths.model_file(name, seed, suffix)
        record(kind, path, writer(path), lossy)
    if small.widths != model.widths:
        path = paths.model_file(name, seed, "slim.safetensors")
        record("slim", path, save_safetensors(small, path), True)
    if cfg.bench.onnx:
        onnx_path = paths.model_file(name, seed, "onnx")
        record("onnx", onnx_path, export_onnx(model, onnx_path), False)
        out.update(verify_onnx(onnx_path, logits, data.test_x, data.test_y))
        out["onnx_verified"] = (out["onnx_prediction_agreement"] >= ONNX_MIN_AGREEMENT and
                                abs(out["onnx_test_accuracy"] - 100.0 * (logits.argmax(1) == data.test_y).double()
                                    .mean().item()) <= ONNX_MAX_ACC_DIFF)
        int8_path = paths.model_file(name, seed, "int8.onnx")
        calibration = data.train_x[:CALIBRATION_IMAGES]
        record("onnx_int8", int8_path, quantize_onnx_int8(onnx_path, int8_path, calibration), False)
        check = verify_onnx(int8_path, logits, data.test_x, data.test_y)
        out.update(test_accuracy_onnx_int8=check["onnx_test_accuracy"],
                   onnx_int8_prediction_agreement=check["onnx_prediction_agreement"])
    return out


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mean, sample std (None for n = 1) and n of each scalar metric; element-wise for per-class lists."""
    def stats(values: list[float]) -> dict[str, Any]:
        n = len(values)
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else None, "n": n}
    seeds = list(per_seed.values())
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for m in seeds for k in m))
    for key in keys:
        vals = [m[key] for m in seeds if key in m and m[key] is not None]
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = stats([float(v) for v in vals])
        elif key.startswith("per_class_") and vals:
            per_class = [stats([r[i] for r in vals]) for i in range(len(vals[0]))]
            out[key] = {"mean": [s["mean"] for s in per_class], "std": [s["std"] for s in per_class], "n": len(vals)}
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


CHAINS = {False: ("baseline", "pruned"), True: ("mixup", "mixup_pruned")}  # mixup? -> (dense, pruned)


def run_chains(cfg: StudyConfig, data: Tensors, chains: list[tuple[int, bool]], obs: Observer,
               keys: list[tuple[str, str]] | None = None, stack: int = 0) -> list[tuple[str, Trained, bool]]:
    """Chains (seed, mixup): A then C (mixup=False) or B then D (mixup=True); chains share nothing with each
    other. All dense models first, then all pruned ones: with stack (a stack size, 0: none), each phase is
    one stacked pass of that size, whatever part of it the cache already holds.
    With cfg.cache_dir and keys (dense, pruned) per chain, a model already in the cache is loaded, not
    trained. Returns (name, trained, loaded from the cache) per model, chain by chain."""
    device = data.train_x.device
    cache = ModelCache(Path(cfg.cache_dir)) if cfg.cache_dir and keys else None
    dense = _phase(cache, [k[0] for k in keys] if keys else None, cfg, device, obs, data, stack,
                   [(seed, CHAINS[mixup][0], lambda s=seed, m=mixup: dense_job(cfg, s, m, CHAINS[m][0], device))
                    for seed, mixup in chains])
    pruned = _phase(cache, [k[1] for k in keys] if keys else None, cfg, device, obs, data, stack,
                    [(seed, CHAINS[mixup][1], lambda s=seed, m=mixup, d=d: finetune_job(cfg, data, d[0], s, CHAINS[m][1]))
                     for (seed, mixup), d in zip(chains, dense)])
    return [item for (seed, mixup), a, c in zip(chains, dense, pruned)
            for item in ((CHAINS[mixup][0], *a), (CHAINS[mixup][1], *c))]


def _phase(cache: ModelCache | None, keys: list[str] | None, cfg: StudyConfig, device: torch.device, obs: Observer,
           data: Tensors, stack: int, todo: list[tuple[int, str, Callable[[], Job]]]) -> list[tuple[Trained, bool]]:
    """One phase (dense or pruned) of several chains: (trained, from the cache) per entry of `todo`."""
    out: list[tuple[Trained, bool] | None] = []
    jobs: list[tuple[int, Job]] = []
    for i, (seed, name, make) in enumerate(todo):
        hit = cache.load_trained(keys[i]) if cache is not None and keys else None
        if hit is not None:
            trained = _rebuild(cfg, *hit, device)
            obs.phase_start(name, seed, len(trained.history))
            for r in trained.history:  # progress displays see the (recorded) epochs of the reused model
                obs.epoch_end(name, seed, r)
            out.append((trained, True))
        else:
            out.append(None)
            jobs.append((i, make()))
    for (i, _), trained in zip(jobs, run_jobs([j for _, j in jobs], data, obs, stack)):
        if cache is not None and keys:
            cache.save_trained(keys[i], trained.model.state_dict(), [r.as_dict() for r in trained.history], trained.extra)
        out[i] = (trained, False)
    return out  # type: ignore[return-value]


_ON_DEVICE: dict[tuple[int, str], Tensors] = {}  # per process: the shared CPU tensors, moved to the GPU once


def on_device(data: Tensors, device: torch.device) -> Tensors:
    """data on `device`: GPU workers receive CPU tensors (shared memory) and move them once per process."""
    if data.train_x.device == device:
        return data
    key = (id(data), str(device))
    if key not in _ON_DEVICE:
        fmt = memory_format(device)
        _ON_DEVICE[key] = Tensors(data.train_x.to(device).contiguous(memory_format=fmt), data.train_y.to(device),
                                  data.test_x.to(device).contiguous(memory_format=fmt), data.test_y.to(device))
    return _ON_DEVICE[key]


def _chains_task(data: Tensors, task: tuple[StudyConfig, tuple[tuple[int, bool], ...], str | None],
                 obs: Observer) -> list[dict[str, Any]]:
    """Worker entry: run a group of chains (stacked when there are several and --stack-models is on);
    return plain payloads (state dicts, histories), never pickled modules."""
    cfg, chains, fingerprint = task
    device = resolve_device(cfg.device)
    data = on_device(data, device)
    # group_chains puts several chains in a task only when stacking; the stack size is the task's, even when
    # the cache holds some of its models, so that every model computes as a fresh run computes it
    stack = len(chains) if len(chains) > 1 else 0
    keys = None
    if fingerprint is not None:
        keys = [tuple(model_key(cfg, seed, n, fingerprint, device.type, torch.get_num_threads(), stack or None)
                      for n in CHAINS[mixup]) for seed, mixup in chains]
    trained = run_chains(cfg, data, list(chains), obs, keys, stack)  # two models per chain, in chain order
    return [{"name": name, "seed": chains[j // 2][0], "state": {k: v.cpu() for k, v in t.model.state_dict().items()},
             "history": [r.as_dict() for r in t.history], "extra": t.extra, "cached": hit,
             "key": keys[j // 2][j % 2] if keys else None}
            for j, (name, t, hit) in enumerate(trained)]


def _stack_blocked(cfg: StudyConfig) -> str | None:
    """Why the chains of a worker cannot train stacked under cfg, or None when they can."""
    if cfg.model.dropout > 0:
        return "not with dropout (its masks are drawn per model)"
    if cfg.backend == "ray":
        return "with Ray every chain is its own task"
    return None


def stacking(cfg: StudyConfig, device: torch.device) -> bool:
    """Whether chains of one worker train stacked: asked for (by default on a GPU, where it pays; not on the
    CPU, where it is slower: README, Performance) and possible."""
    wanted = device.type == "cuda" if cfg.train.stack_models is None else cfg.train.stack_models
    return wanted and _stack_blocked(cfg) is None


def _stack_note(cfg: StudyConfig, tasks: list) -> str | None:
    """Why --stack-models trained nothing together, when it was asked for and did not."""
    if not cfg.train.stack_models or any(len(t[1]) > 1 for t in tasks):
        return None
    why = _stack_blocked(cfg) or "one chain per worker, nothing to stack (fewer --workers would stack them)"
    return f"--stack-models: {why}; models trained separately"


def group_chains(chains: list[tuple[int, bool]], workers: int, stack: bool) -> list[tuple[tuple[int, bool], ...]]:
    """The tasks: one chain each, or with stacking the chains dealt round-robin to `workers` groups."""
    if not stack:
        return [(c,) for c in chains]
    return [g for g in (tuple(chains[i::workers]) for i in range(workers)) if g]


def _rebuild(cfg: StudyConfig, state: dict[str, torch.Tensor], history: list[dict], extra: dict,
             device: torch.device) -> Trained:
    """A Trained from plain data (a worker's payload or a cache entry), on the device where the data is."""
    model = LeNet5(dropout=cfg.model.dropout)
    model.load_state_dict(state)
    model = model.to(device=device, memory_format=memory_format(device))
    return Trained(model, [EpochRecord(**r) for r in history], extra)


def plan_workers(cfg: StudyConfig, device: torch.device, n_tasks: int) -> tuple[int, int]:
    """(worker processes, threads each): one chain per core on the CPU by default; on a GPU one process
    unless --workers asks for more (each worker then drives the GPU with its own CUDA context)."""
    cores = available_cores()
    if cfg.backend == "ray":  # Ray schedules every task; each asks for --threads CPUs (default 1)
        return n_tasks, cfg.threads or 1
    if device.type != "cpu":
        workers = min(cfg.workers or 1, n_tasks)
        return workers, cfg.threads or (torch.get_num_threads() if workers == 1 else 1)
    workers = min(cfg.workers or cores, n_tasks)
    return workers, cfg.threads or max(1, cores // workers)


def _model_order(key: tuple[int, str]) -> tuple[int, int]:
    return key[0], MODEL_NAMES.index(key[1])


def run_study(cfg: StudyConfig, dataset: Dataset | None = None, observer: Observer | None = None,
              out_dir: Path | None = None) -> dict[str, Any]:
    """Train, prune, evaluate and save the four models for every seed; returns results.json's content."""
    obs = observer or Observer()
    device = resolve_device(cfg.device)
    ds = dataset if dataset is not None else load_fashion_mnist(cfg.data.data_dir)
    ds = ds.subset(cfg.data.train_subset, cfg.data.test_subset)
    if cfg.data.cv_fold >= 0:  # the held-out fold replaces the test split
        ds = ds.cv_split(cfg.data.cv_fold, cfg.data.cv_folds)
    data = prepare_tensors(ds, device)
    paths = RunPaths(Path(out_dir or cfg.out or default_out_dir()))  # created only once the data is good
    with exclusive_dir(paths.root):
        return _run_locked(cfg, ds, data, device, paths, obs)


def _run_locked(cfg: StudyConfig, ds: Dataset, data: Tensors, device: torch.device, paths: RunPaths,
                obs: Observer) -> dict[str, Any]:
    ensure_dir(paths.models_dir)
    write_text_atomic(paths.config_toml, toml_text(cfg))
    cache = ModelCache(Path(cfg.cache_dir)) if cfg.cache_dir else None
    fingerprint = data_fingerprint(ds.train_x, ds.train_y, ds.test_x, ds.test_y) if cache else None
    # alpha 0 (and no dropout, whose masks are drawn per model): B and D are A and C, bit for bit; train once
    twins = cfg.mixup.alpha == 0 and cfg.model.dropout == 0
    chains = [(seed, mixup) for seed in cfg.seeds for mixup in ((False,) if twins else (False, True))]
    workers, threads = plan_workers(cfg, device, len(chains))
    tasks = [(cfg, group, fingerprint) for group in group_chains(chains, workers, stacking(cfg, device))]
    cv = cfg.data.cv_fold >= 0
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "complete": False, "output_dir": str(paths.root),
                               "config": to_dict(cfg), "environment": environment(device),
                               "execution": {"backend": cfg.backend, "workers": workers, "threads_per_worker": threads,
                                             "stacked_chains": [len(t[1]) for t in tasks if len(t[1]) > 1],  # per stack
                                             "stack_note": _stack_note(cfg, tasks),
                                             "reused_models": [],
                                             "note": ("alpha 0 turns Mixup off: Mixup (B) and Mixup+Pruned (D) are "
                                                      "Baseline (A) and Pruned (C), trained and measured once")
                                             if twins else None},
                               "data": {"source": str(ds.source), "train_examples": len(ds.train_y),
                                        "test_examples": len(ds.test_y),
                                        "evaluation": (f"cross-validation fold {cfg.data.cv_fold} of {cfg.data.cv_folds} "
                                                       "(held-out training images)") if cv else "test split"},
                               "models": {n: {"seeds": {}, "summary": {}} for n in MODEL_NAMES}}
    trained: dict[tuple[int, str], Trained] = {}
    fresh: dict[tuple[int, str], str | None] = {}  # models measured by this run (not the cache's) -> cache key
    bench = bench_key(cfg)
    start = time.perf_counter()
    # GPU workers get the CPU tensors (shared memory) and move them themselves; CUDA tensors do not travel
    apart = device.type != "cpu" and (workers > 1 or cfg.backend == "ray")
    shared = prepare_tensors(ds, torch.device("cpu")) if apart else data
    for payload in run_tasks(_chains_task, tasks, shared, workers, threads, obs, cfg.backend, cfg.ray_address):
        for p in payload:
            t = _rebuild(cfg, p["state"], p["history"], p["extra"], device)
            name, seed = p["name"], p["seed"]
            trained[(seed, name)] = t
            metrics = None
            if cache is not None and p["key"]:
                metrics = cache.load_measured(p["key"], bench, lambda sfx, n=name, s=seed: paths.model_file(n, s, sfx))
            if p["cached"]:
                results["execution"]["reused_models"].append(f"{name}-seed{seed}" + (" (measured)" if metrics else ""))
            if metrics is None:
                metrics = measure(cfg, t, data, paths, name, seed)
                fresh[(seed, name)] = p["key"]
            _record(results, name, seed, metrics)
            obs.model_done(name, seed, results["models"][name]["seeds"][str(seed)])
            if twins:
                _mirror(results, trained, paths, seed, name)
        _write(results, trained, paths)
    results["execution"]["train_wall_seconds"] = time.perf_counter() - start
    if cfg.bench.latency:  # after training, so that no worker competes for the cores being timed
        for (seed, name) in sorted(fresh, key=_model_order):
            results["models"][name]["seeds"][str(seed)].update(measure_latency(cfg, trained[(seed, name)]))
            _record(results, name, seed, results["models"][name]["seeds"][str(seed)])
            if twins:
                _mirror(results, trained, paths, seed, name, files=False)
    if cache is not None:
        for (seed, name), key in fresh.items():
            if key:
                cache.save_measured(key, bench, results["models"][name]["seeds"][str(seed)], paths.model_files(name, seed))
    results["claims"] = audit_claims(results)
    results["complete"] = True  # a sweep skips this run when it meets it again
    _write(results, trained, paths)
    return results


TWIN = {"baseline": "mixup", "pruned": "mixup_pruned"}


def _mirror(results: dict[str, Any], trained: dict[tuple[int, str], Trained], paths: RunPaths, seed: int,
            name: str, files: bool = True) -> None:
    """Record model `name` of `seed` also as its Mixup twin (alpha 0): same metrics, same files."""
    twin = TWIN[name]
    trained[(seed, twin)] = trained[(seed, name)]
    _record(results, twin, seed, dict(results["models"][name]["seeds"][str(seed)]))
    if files:
        for suffix, f in paths.model_files(name, seed).items():
            with atomic_path(paths.model_file(twin, seed, suffix)) as tmp:
                shutil.copyfile(f, tmp)


def _record(results: dict[str, Any], name: str, seed: int, metrics: dict[str, Any]) -> None:
    entry = results["models"][name]
    entry["seeds"][str(seed)] = metrics
    entry["seeds"] = dict(sorted(entry["seeds"].items(), key=lambda kv: int(kv[0])))
    entry["summary"] = summarize(entry["seeds"])


def _write(results: dict[str, Any], trained: dict[tuple[int, str], Trained], paths: RunPaths) -> None:
    rows = [{"model": name, "seed": seed, **r.as_dict()}
            for (seed, name), t in sorted(trained.items(), key=lambda kv: _model_order(kv[0])) for r in t.history]
    write_text_atomic(paths.results_json, json.dumps(results, indent=1))
    write_text_atomic(paths.history_csv, history_csv(rows))


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json written by run_study (plain JSON, never executed)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def complete_results(path: Path) -> dict[str, Any] | None:
    """results.json at `path` if its run finished under this results format; None when it is absent,
    unreadable, interrupted, or written by a mixprune with another format."""
    try:
        results = load_results(path)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
        return None
    return results if results.get("complete") else None

