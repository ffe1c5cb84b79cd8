"""The study: every variant of the design (the paper's four by default) over seeds, written to a results
directory as it goes.

    results = run_study(StudyConfig(seeds=(0, 1, 2)))      # Baseline, Mixup, Pruned, Mixup+Pruned
    results["models"]["mixup"]["summary"]["test_accuracy"]  # {"mean": .., "std": .., "n": 3}

The dataset comes from the registry (--dataset) or from the caller; the network from the model registry
(--arch) or from the caller's factory (Problem). Chains of variants (a dense variant and the variants
made from it) are tasks for local worker processes or Ray (backends.py). A local worker measures each
model it trained (measure.py) and writes its files, so the chains' measurements run side by side; Ray
tasks send plain payloads back and the driver measures them. Latency is timed here once training is over,
once per distinct computation. results.json, history.csv and the model files are rewritten atomically
after every model, so an interrupted study keeps everything it finished.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path, ensure_dir, exclusive_dir, read_text_capped, swap_dirs, write_text_atomic
from .audit import audit_claims, paper_setting
from .backends import available_cores, run_tasks
from .cache import ModelCache, Preloaded, bench_key, data_fingerprint, model_key
from .config import PLACEMENT_FIELDS, StudyConfig, load_config_file, to_dict, with_overrides
from .data import Dataset, load_dataset
from .engine import EpochRecord, Tensors, generator, memory_format, resolve_device
from .errors import ConfigError, OutputError
from .export import export_template, load_model
from .jobs import (Chain, Problem, Trained, by_depth, file_teacher, on_device, prepare_tensors, read_teacher,
                   rebuild_trained, run_chains)
from .machine import environment
from .measure import measure, measure_latency
from .models import kind, python_factory, stateless
from .paths import RunPaths, default_out_dir
from .structured import check_exact, ratios_for, structured_keep, unit_groups
from .results import SCHEMA_VERSION, record, toml_text, write_results
from .variants import Design, design_for

__all__ = ["Observer", "run_study", "SCHEMA_VERSION", "toml_text", "stacking", "group_chains", "plan_workers"]


class Observer:
    """Receives progress events; the CLI's progress display subclasses it. Methods do nothing here."""

    def phase_start(self, model: str, seed: int, epochs: int) -> None: ...

    def epoch_end(self, model: str, seed: int, record: EpochRecord) -> None: ...

    def model_done(self, model: str, seed: int, metrics: dict) -> None: ...


@dataclass(frozen=True)
class Task:
    """One worker task: chains to train (stacked when several), and how the worker reaches the cache and the run."""
    cfg: StudyConfig
    problem: Problem
    design: Design
    chains: tuple[Chain, ...]
    fingerprint: str | None  # the data's, for cache keys (None: no cache)
    measuring: tuple[str, str | None] | None = None  # (run directory, ONNX graphs directory): measure in the worker
    cached: dict[str, Any] | None = None  # cache entries read by the driver for a worker that cannot see the cache


def _chains_task(data: Tensors, task: Task, obs: Observer) -> list[dict[str, Any]]:
    """Worker entry: run a group of chains (stacked when there are several: group_chains makes such groups
    only when stacking); return plain payloads (state dicts, histories), never pickled modules. With a run
    directory (the local backend: the worker shares this machine's file system), the worker also measures each
    model it trained and writes its files there, so that the models of different chains are measured side by
    side, as they trained; the payload then carries the metrics."""
    cfg, problem, design, chains, fingerprint = task.cfg, task.problem, task.design, task.chains, task.fingerprint
    device = resolve_device(cfg.device)
    data = on_device(data, device)
    stacked = len(chains) > 1
    keys = None
    if fingerprint is not None:
        keys = chain_keys(cfg, design, chains, fingerprint, device, torch.get_num_threads(), stacked)
    start = time.perf_counter()
    store = Preloaded(task.cached) if task.cached is not None else None  # None: run_chains opens cfg.cache_dir
    done = run_chains(cfg, problem, design, data, list(chains), obs, keys, stacked, store)
    worker = {"pid": os.getpid(), "training_seconds": time.perf_counter() - start}  # per-epoch evaluation included
    payloads = []
    for seed, name, t, hit in done:
        key = keys[(seed, name)] if keys else None
        payload = {"name": name, "seed": seed, "state": {k: v.cpu() for k, v in t.model.state_dict().items()},
                   "history": [r.as_dict() for r in t.history], "extra": t.extra, "cached": hit, "key": key,
                   "worker": worker}
        if task.measuring is not None:  # measured as the driver would measure it: rebuilt from the payload's state
            rebuilt = rebuild_trained(cfg, problem, payload["state"], payload["history"], t.extra, device)
            run_dir, graphs = task.measuring
            payload.update(_measured(cfg, problem, rebuilt, data, RunPaths(Path(run_dir)), name, seed, key,
                                     Path(graphs) if graphs else None))
        payloads.append(payload)
    return payloads


def chain_keys(cfg: StudyConfig, design: Design, chains: tuple[Chain, ...] | list[Chain], fingerprint: str,
               device: torch.device, threads: int, stacked: bool = False) -> dict[tuple[int, str], str]:
    """The cache key of every model of the chains, as the task that trains them computes it: its device and
    thread count, and when stacked each depth's stack size (the task's, even where the cache holds some of it)."""
    return {(seed, name): model_key(cfg, seed, name, fingerprint, device.type, threads,
                                    len(level) if stacked else None, design)
            for level in by_depth(design, list(chains)) for seed, name in level}


def _cached_for(cfg: StudyConfig, cache: ModelCache | None, design: Design, chains: tuple[Chain, ...],
                fingerprint: str | None, device: torch.device, threads: int) -> dict[str, Any]:
    """The cache entries a Ray task may reuse, read here (Ray tasks never stack)."""
    if cache is None or fingerprint is None:
        return {}
    keys = chain_keys(cfg, design, chains, fingerprint, device, threads).values()
    return {k: hit for k in keys if (hit := cache.load_trained(k)) is not None}


def _measured(cfg: StudyConfig, problem: Problem, trained: Trained, data: Tensors, paths: RunPaths, name: str,
              seed: int, key: str | None, graphs: Path | None = None) -> dict[str, Any]:
    """{"metrics": every metric of one model but latency, "fresh": measured now, not taken from the cache}; its
    files are written to (or copied from the cache into) `paths`."""
    if cfg.cache_dir and key:
        metrics = ModelCache(Path(cfg.cache_dir)).load_measured(key, bench_key(cfg),
                                                                lambda sfx: paths.model_file(name, seed, sfx))
        if metrics is not None:
            return {"metrics": metrics, "fresh": False}
    metrics = measure(cfg, trained, data, paths, name, seed, problem.num_classes, file_loader(cfg, problem), graphs)
    return {"metrics": metrics, "fresh": True}


def _stack_blocked(cfg: StudyConfig, problem: Problem | None) -> str | None:
    """Why the chains of a worker cannot train stacked under cfg, or None when they can."""
    if cfg.model.dropout > 0:
        return "not with dropout (its masks are drawn per model)"
    if cfg.backend == "ray":
        return "with Ray every chain is its own task"
    if problem is not None and not problem.stateless:
        return "the network has state besides conv/FC weights (e.g. BatchNorm statistics)"
    return None


def stacking(cfg: StudyConfig, device: torch.device, problem: Problem | None = None) -> bool:
    """Whether chains of one worker train stacked: asked for (by default on a GPU, where it pays; not on the
    CPU, where it is slower: README, Performance) and possible."""
    wanted = device.type == "cuda" if cfg.train.stack_models is None else cfg.train.stack_models
    return wanted and _stack_blocked(cfg, problem) is None


def _stack_note(cfg: StudyConfig, problem: Problem, tasks: list[Task]) -> str | None:
    """Why --stack-models trained nothing together, when it was asked for and did not."""
    if not cfg.train.stack_models or any(len(t.chains) > 1 for t in tasks):
        return None
    why = _stack_blocked(cfg, problem) or "one chain per worker, nothing to stack (fewer --workers would stack them)"
    return f"--stack-models: {why}; models trained separately"


def group_chains(chains: list[Chain], workers: int, stack: bool) -> list[tuple[Chain, ...]]:
    """The tasks: one chain each, or with stacking the chains dealt round-robin to `workers` groups."""
    if not stack:
        return [(c,) for c in chains]
    return [g for g in (tuple(chains[i::workers]) for i in range(workers)) if g]


def plan_workers(cfg: StudyConfig, device: torch.device, n_tasks: int, in_process: bool = False) -> tuple[int, int]:
    """(worker processes, threads each): one chain per core on the CPU by default; on a GPU one process
    unless --workers asks for more (each worker then drives the GPU with its own CUDA context). A model
    given as Python code (in_process) trains in this process: workers could not import it."""
    cores = available_cores()
    if cfg.backend == "ray":  # Ray schedules every task; each asks for --threads CPUs (default 1)
        return n_tasks, cfg.threads or 1
    if in_process:
        return 1, cfg.threads or torch.get_num_threads()
    if device.type != "cpu":
        workers = min(cfg.workers or 1, n_tasks)
        return workers, cfg.threads or (torch.get_num_threads() if workers == 1 else 1)
    workers = cfg.workers or (n_tasks if n_tasks <= cores else spread(n_tasks, cores))
    workers = min(workers, n_tasks)
    return workers, cfg.threads or max(1, cores // workers)


def spread(n_tasks: int, cores: int) -> int:
    """Worker processes for more one-thread tasks than cores: the count from `cores` to 2 x cores whose rounds of
    tasks, each slowed by the cores it shares, end soonest (the fewest on a tie). 3 tasks on 2 cores: 3 workers
    (1.5 task times, not 2 rounds); 4 tasks: 2. Threads stay 1 per task either way, so the numbers do not change."""
    def makespan(workers: int) -> float:
        return -(-n_tasks // workers) * workers / cores
    return min(range(cores, min(n_tasks, 2 * cores) + 1), key=lambda w: (makespan(w), w))


def _checked_problem(cfg: StudyConfig, problem: Problem) -> Problem:
    """Refuse, before anything trains, what this network cannot do (building it checks the input shape);
    the problem with what the built network says about itself."""
    model = problem.build(cfg, generator(0, "init"))
    if cfg.prune.method == "structured":
        check_structured(cfg, model)
    if problem.factory is not None and (cfg.backend == "ray" or cfg.cache_dir):
        raise ConfigError("a model given as Python code trains in this process: --backend ray and --cache-dir "
                          "need a model named by --arch (the cache cannot see changes to your code)")
    checked = dataclasses.replace(problem, stateless=stateless(model))
    if cfg.distill.teacher:  # read here, checked before anything trains, and carried to every worker
        checked = dataclasses.replace(checked, teacher=read_teacher(cfg.distill.teacher))
        file_teacher(cfg, checked, torch.device("cpu"))
    return checked


def check_structured(cfg: StudyConfig, model: nn.Module) -> None:
    """Refuse structured pruning this network cannot take (ConfigError): a tracer that cannot follow it, an
    unknown --keep layer or --prune-ratios group, a ratio that removes a whole group, or a network whose
    slimmed form would compute something else (checked on the planned masks of the initial weights)."""
    p = cfg.prune
    groups = unit_groups(model, p.keep_layers())
    if not groups:
        raise ConfigError(f"--prune-method structured: {cfg.model.arch} has no channel group to prune (every layer "
                          "is the classifier or in --keep)")
    if p.ratios == "auto":
        ratios = {g.name: 0.5 for g in groups}  # any pattern shows whether slimming is exact
    else:
        ratios = ratios_for(groups, p.conv_amount, p.fc_amount, p.group_ratios())
    check_exact(model, groups, structured_keep(model, groups, ratios, p.importance, p.norm, p.scope))


def preflight(cfg: StudyConfig, dataset: Dataset | None = None) -> None:
    """Everything run_study checks before it creates its output directory (the data, the network and what it
    can do), without running anything: a sweep checks every cell this way before it creates OUT."""
    ds = prepare_dataset(cfg, dataset)
    _checked_problem(cfg, Problem(ds.shape, ds.num_classes))


def prepare_dataset(cfg: StudyConfig, dataset: Dataset | None) -> Dataset:
    """The configured dataset (or the caller's), resized, subset and cross-validation split as cfg says."""
    ds = load_dataset(cfg.data) if dataset is None else dataset.resized(cfg.data.image_size)
    ds = ds.subset(cfg.data.train_subset, cfg.data.test_subset)
    if cfg.data.cv_fold >= 0:  # the held-out fold replaces the test split
        if len(ds.train_y) < 2 * cfg.data.cv_folds:
            raise ConfigError(f"--cv-folds {cfg.data.cv_folds} needs at least {2 * cfg.data.cv_folds} training images "
                              f"(two per fold), got {len(ds.train_y)}; use more images (--train-subset) or fewer folds")
        ds = ds.cv_split(cfg.data.cv_fold, cfg.data.cv_folds)
    if cfg.prune.method == "structured" and cfg.prune.ratios == "auto":  # sensitivity is measured on held-out images
        ds = ds.hold_out(cfg.prune.val_fraction)
    return ds


def run_study(cfg: StudyConfig, dataset: Dataset | None = None, observer: Observer | None = None,
              out_dir: Path | None = None, model: Any = None, design: Design | None = None) -> dict[str, Any]:
    """Train, prune, evaluate and save every variant for every seed; returns results.json's content.
    `model` (a factory(in_channels, num_classes) or an nn.Module) replaces --arch; `design` the paper's four
    variants."""
    obs = observer or Observer()
    device = resolve_device(cfg.device)
    ds = prepare_dataset(cfg, dataset)
    factory = None
    if model is not None:
        arch, factory = python_factory(model, ds.shape, ds.num_classes)
        cfg = with_overrides(cfg, {"model.arch": arch})
    kind(cfg.model.arch)
    problem = _checked_problem(cfg, Problem(ds.shape, ds.num_classes, factory))
    data = prepare_tensors(ds, device)
    design = design or design_for(cfg)
    root = Path(out_dir or cfg.out or default_out_dir())  # created only once the data and model are good
    with exclusive_dir(root):
        if not _claim(root, cfg):
            return _run_locked(cfg, ds, data, device, RunPaths(root), obs, problem, design, root)
        fresh = Path(tempfile.mkdtemp(prefix=f".{root.name}.new-", dir=root.parent))
        with exclusive_dir(fresh):
            results = _run_locked(cfg, ds, data, device, RunPaths(fresh), obs, problem, design, root)
        swap_dirs(fresh, root)
        return results


def _claim(root: Path, cfg: StudyConfig) -> bool:
    """Whether the run must be written beside `root` and swapped in (--overwrite of a directory that holds
    something). Refuses (OutputError) a directory that holds anything but a run of the same config: its
    files would be replaced or mixed with this run's."""
    held = sorted(p.name for p in root.iterdir() if p.name != ".lock")
    if not held:
        return False
    same = False
    if RunPaths(root).config_toml.is_file():
        try:
            earlier = load_config_file(RunPaths(root).config_toml)
            same = _what_it_computes(earlier) == _what_it_computes(cfg)
        except ConfigError:
            same = False
    if same:
        return False  # the same run again (e.g. after an interruption): it resumes (_finished_earlier)
    if cfg.overwrite:
        return True
    if "config.toml" in held:
        what = "another run (its config.toml differs)"
    else:
        what = f"other files ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
    raise OutputError(f"--out {root} already holds {what}; choose a new --out, or pass --overwrite to replace it "
                      "(the old contents stay until the new run completes)")


def _what_it_computes(cfg: StudyConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in PLACEMENT_FIELDS}


def _data_record(cfg: StudyConfig, ds: Dataset, device: torch.device) -> dict[str, Any]:
    mean, std = ds.normalization()
    cv = cfg.data.cv_fold >= 0
    held = {} if ds.val_y is None else {"validation_examples": len(ds.val_y)}  # --prune-ratios auto's split
    return {"dataset": ds.name, "source": str(ds.source), "train_examples": len(ds.train_y), **held,
            "test_examples": len(ds.test_y), "input_shape": list(ds.shape), "classes": list(ds.classes),
            "normalization": {"mean": list(mean), "std": list(std),
                              "from": "the dataset's published values" if ds.mean is not None else "the training split"},
            "storage": (f"uint8 images resident on {device.type}, normalized per batch" if ds.mapped is None else
                        f"uint8 images memory-mapped from {ds.mapped} (larger than the memory budget), read and "
                        f"normalized per batch"),
            "evaluation": (f"cross-validation fold {cfg.data.cv_fold} of {cfg.data.cv_folds} (held-out training images)")
            if cv else "test split"}


def _run_locked(cfg: StudyConfig, ds: Dataset, data: Tensors, device: torch.device, paths: RunPaths, obs: Observer,
                problem: Problem, design: Design, output_dir: Path) -> dict[str, Any]:
    ensure_dir(paths.models_dir)
    write_text_atomic(paths.config_toml, toml_text(cfg))
    cache = ModelCache(Path(cfg.cache_dir)) if cfg.cache_dir else None
    fingerprint = (data_fingerprint(ds.train_x, ds.train_y, ds.test_x, ds.test_y, extra=repr(ds.normalization()))
                   if cache else None)
    twins = design.twins(cfg)  # alpha 0 (and no dropout): B and D are A and C, bit for bit; train once
    chains = [(seed, names) for seed in cfg.seeds for names in design.chains() if not all(n in twins for n in names)]
    finished, kept_rows = _finished_earlier(cfg, paths)  # a run of this config interrupted here: what it finished
    resumed = [c for c in chains if all((c[0], n) in finished for n in c[1] + tuple(t for t, src in twins.items()
                                                                                    if src in c[1]))]
    chains = [c for c in chains if c not in resumed]
    in_process = problem.factory is not None
    workers, threads = plan_workers(cfg, device, max(len(chains), 1), in_process=in_process)
    ready: list[Chain] = []  # chains the cache holds whole, trained and measured: read here, no worker needed
    if cfg.backend == "local" and cache is not None and fingerprint and not stacking(cfg, device, problem):
        ready = [c for c in chains if all(cache.holds(k, bench_key(cfg))
                                          for k in chain_keys(cfg, design, [c], fingerprint, device, threads).values())]
        chains = [c for c in chains if c not in ready]
        workers = plan_workers(cfg, device, max(len(chains), 1), in_process=in_process)[0]  # threads stay: keys
    groups = group_chains(chains, workers, stacking(cfg, device, problem))
    graphs = tempfile.mkdtemp(prefix="mixprune-onnx-") if cfg.bench.onnx and workers > 1 else None
    if cfg.backend == "local":  # workers see this machine's files: they measure their models and use the cache
        tasks = [Task(cfg, problem, design, group, fingerprint, (str(paths.root), graphs)) for group in groups]
        from_cache = [Task(cfg, problem, design, (c,), fingerprint, (str(paths.root), None)) for c in ready]
    else:  # Ray nodes may not see them: the driver reads the cache for them, stores what they train, and measures
        task_cfg = dataclasses.replace(cfg, device=device.type)  # a GPU node must not pick CUDA on its own
        tasks = [Task(task_cfg, problem, design, group, fingerprint, None,
                      _cached_for(cfg, cache, design, group, fingerprint, device, threads)) for group in groups]
        from_cache = []
    note = (f"alpha 0 turns Mixup off: {' and '.join(design.label(n) for n in twins)} are "
            f"{' and '.join(design.label(n) for n in twins.values())}, trained and measured once") if twins else None
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "complete": False, "output_dir": str(output_dir),
                               "config": to_dict(cfg), "environment": environment(device),
                               "execution": {"backend": cfg.backend, "workers": workers, "threads_per_worker": threads,
                                             "stacked_chains": [len(t.chains) for t in tasks if len(t.chains) > 1],
                                             "stack_note": _stack_note(cfg, problem, tasks),
                                             "reused_models": [], "note": note},
                               "data": _data_record(cfg, ds, device),
                               "variants": design.as_records(),
                               "models": {n: {"seeds": {}, "summary": {}} for n in design.names}}
    if problem.factory is not None:
        results["execution"]["in_process"] = "the model is Python code: trained in this process"
    resumed_models = [(seed, n) for seed, names in resumed for n in names + tuple(t for t, src in twins.items()
                                                                                 if src in names)]
    for seed, name in resumed_models:
        record(results, name, seed, finished[(seed, name)])
    results["execution"]["resumed_models"] = [f"{name}-seed{seed}" for seed, name in resumed_models]
    kept_rows = [r for r in kept_rows if (int(r["seed"]), r["model"]) in set(resumed_models)]
    trained: dict[tuple[int, str], Trained] = {}
    fresh: dict[tuple[int, str], str | None] = {}  # models measured by this run (not the cache's) -> cache key
    order = {n: i for i, n in enumerate(design.names)}
    start = time.perf_counter()
    # GPU workers get the CPU tensors (shared memory) and move them themselves; CUDA tensors do not travel
    apart = device.type != "cpu" and (workers > 1 or cfg.backend == "ray")
    shared = prepare_tensors(ds, torch.device("cpu")) if apart else data
    busy: dict[tuple[str | None, int], float] = {}  # worker process (node, pid) -> seconds it spent training
    nodes: set[str] = set()  # where the tasks ran (Ray node ids)
    try:
        head_start = functools.partial(_export_template, cfg, problem, device, graphs)  # while the workers train
        for payload in itertools.chain(
                run_tasks(_chains_task, from_cache, shared, 1, threads, obs),  # in this process, with `threads`
                run_tasks(_chains_task, tasks, shared, workers, threads, obs, cfg.backend, cfg.ray_address,
                          started=head_start, device=device.type)):
            if payload:
                worker = payload[0]["worker"]
                who = (worker.get("node"), worker["pid"])
                nodes.add(worker.get("node", "this machine"))
                busy[who] = busy.get(who, 0.0) + worker["training_seconds"]
            for p in payload:
                t = rebuild_trained(cfg, problem, p["state"], p["history"], p["extra"], device)
                name, seed = p["name"], p["seed"]
                trained[(seed, name)] = t
                if "metrics" not in p:  # a Ray task: stored in the cache and measured here
                    if cache is not None and p["key"] and not p["cached"]:
                        cache.save_trained(p["key"], p["state"], p["history"], p["extra"])
                    p.update(_measured(cfg, problem, t, data, paths, name, seed, p["key"]))
                if p["cached"]:
                    results["execution"]["reused_models"].append(f"{name}-seed{seed}" +
                                                                 ("" if p["fresh"] else " (measured)"))
                if p["fresh"]:
                    fresh[(seed, name)] = p["key"]
                record(results, name, seed, p["metrics"])
                obs.model_done(name, seed, results["models"][name]["seeds"][str(seed)])
                for twin in (n for n, src in twins.items() if src == name):
                    _mirror(results, trained, paths, seed, name, twin)
            _write(results, trained, paths, order, kept_rows)
    finally:
        if graphs is not None:
            shutil.rmtree(graphs, ignore_errors=True)
    results["execution"]["train_wall_seconds"] = time.perf_counter() - start  # training and measuring
    results["execution"]["training_seconds"] = max(busy.values(), default=0.0)  # the busiest worker's training
    if cfg.backend == "ray":
        results["execution"]["ray_nodes"] = sorted(nodes)
    if cfg.bench.latency:  # after training, so that no worker competes for the cores being timed
        timed = sorted(fresh, key=lambda k: (k[0], order[k[1]]))
        latencies = measure_latency(cfg, {f"{name}-seed{seed}": trained[(seed, name)].model for seed, name in timed})
        for (seed, name) in timed:
            results["models"][name]["seeds"][str(seed)].update(latencies[f"{name}-seed{seed}"])
            record(results, name, seed, results["models"][name]["seeds"][str(seed)])
            for twin in (n for n, src in twins.items() if src == name):
                _mirror(results, trained, paths, seed, name, twin, files=False)
    if cache is not None:
        for (seed, name), key in fresh.items():
            if key:
                cache.save_measured(key, bench_key(cfg), results["models"][name]["seeds"][str(seed)],
                                    paths.model_files(name, seed))
    results["claims"] = audit_claims(results) if paper_setting(results) else []
    results["complete"] = True  # a sweep skips this run when it meets it again
    _write(results, trained, paths, order, kept_rows)
    return results


def _export_template(cfg: StudyConfig, problem: Problem, device: torch.device, graphs: str | None) -> None:
    """While the workers train: export the run's initial network once into `graphs`, so that each worker swaps
    its models' weights into that file instead of starting the ONNX exporter itself (export.export_template)."""
    if graphs is None:
        return
    model = problem.build(cfg, generator(0, "init"), check=False).to(device=device, memory_format=memory_format(device))
    try:
        export_template(model, Path(graphs))
    except Exception:  # noqa: BLE001 - only a head start: a worker exporting this network reports its own error
        return


def file_loader(cfg: StudyConfig, problem: Problem) -> Any:
    """How this run decodes its own model files: through the registry, with the user's factory file where the
    user named one (--arch PATH.py:FUNCTION), or into the network built by the user's Python code."""
    arch_kind = kind(cfg.model.arch)
    if arch_kind == "python":
        return lambda path: load_model(path, model=problem.build(cfg, generator(0, "init")))
    arch = cfg.model.arch if arch_kind == "file" else None
    return lambda path: load_model(path, arch)


def _mirror(results: dict[str, Any], trained: dict[tuple[int, str], Trained], paths: RunPaths, seed: int,
            name: str, twin: str, files: bool = True) -> None:
    """Record model `name` of `seed` also as `twin` (the same model at alpha 0): same metrics, same files."""
    trained[(seed, twin)] = trained[(seed, name)]
    record(results, twin, seed, dict(results["models"][name]["seeds"][str(seed)]))
    if files:
        for suffix, f in paths.model_files(name, seed).items():
            with atomic_path(paths.model_file(twin, seed, suffix)) as tmp:
                shutil.copyfile(f, tmp)


def _write(results: dict[str, Any], trained: dict[tuple[int, str], Trained], paths: RunPaths,
           order: dict[str, int], kept_rows: list[dict[str, Any]]) -> None:
    rows = kept_rows + [{"model": name, "seed": seed, **r.as_dict()} for (seed, name), t in trained.items()
                        for r in t.history]
    rows.sort(key=lambda r: (int(r["seed"]), order[r["model"]]))  # stable: each model's epochs stay in order
    write_results(results, rows, paths)


def _finished_earlier(cfg: StudyConfig, paths: RunPaths) -> tuple[dict[tuple[int, str], dict], list[dict[str, Any]]]:
    """What an earlier run of this same config in this directory finished (it was interrupted, or it is run
    again): per (seed, variant) its metrics, where every file it recorded is still there and, when latency
    is measured, it was; and the history.csv rows. Empty when there is none."""
    import csv

    from .results import load_results

    try:
        earlier = load_results(paths.results_json) if paths.results_json.is_file() else None
    except (OSError, ValueError):
        return {}, []
    if (not isinstance(earlier, dict) or earlier.get("schema_version") != SCHEMA_VERSION
            or not isinstance(earlier.get("config"), dict)
            or {k: v for k, v in earlier["config"].items() if k not in PLACEMENT_FIELDS} != _what_it_computes(cfg)):
        return {}, []
    finished = {}
    for name, entry in (earlier.get("models") or {}).items():
        for seed, metrics in (entry.get("seeds") or {}).items() if isinstance(entry, dict) else ():
            files = paths.model_files(name, int(seed))
            if (isinstance(metrics, dict) and "size_bytes_fp32" in metrics and "safetensors" in files
                    and (not cfg.bench.latency or "latency_ms_batch1" in metrics)):
                finished[(int(seed), name)] = metrics
    try:
        rows = list(csv.DictReader(read_text_capped(paths.history_csv, 1 << 26).splitlines()))
    except (OSError, ValueError):
        return {}, []
    return finished, rows
