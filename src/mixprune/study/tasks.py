"""What a worker does with its task: train its chains (stacked when several), measure each model and write its
files as soon as the model is trained, and send it to the driver.

    items = chains_task(data, task, observer, emit)    # emit(item) per model as it is done; returns them all

A result is a plain payload (histories, metrics, and a state dict where the driver measures), never a pickled
module. With a run directory (the local backend: the worker shares this machine's file system), the worker
measures each model (measure.py) on the model rebuilt from its state dict, exactly as the driver measures a
Ray task's model, writes its files there, and the payload carries the metrics; Ray tasks send the state dict
and the driver measures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import StudyConfig
from ..core.paths import RunPaths
from ..core.runtime import generator, memory_format, resolve_device
from ..data.prepare import Tensors, on_device
from ..deploy.files import load_model
from ..deploy.onnx import export_template
from ..models import kind
from .cache import ModelCache, Preloaded, bench_key
from .jobs import Chain, Problem, Trained, rebuild_trained, run_chains
from .measure import measure
from .plan import chain_keys
from .variants import Design


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
    earlier: dict[tuple[int, str], dict[str, Any]] | None = None  # state dicts of models an earlier run of this
    # config finished: taken as they are (their children are made from them), not trained or sent again


def chains_task(data: Tensors, task: Task, obs: Any, emit: Any = lambda item: None) -> list[dict[str, Any]]:
    """Worker entry (study.backends.run_tasks): run the task's chains, depth by depth; each model, once trained
    (or taken from the cache), is measured where the task measures and passed to `emit`. Returns every payload."""
    cfg, problem, design, chains, fingerprint = task.cfg, task.problem, task.design, task.chains, task.fingerprint
    device = resolve_device(cfg.device)
    data = on_device(data, device)
    stacked = len(chains) > 1
    keys = None
    if fingerprint is not None:
        keys = chain_keys(cfg, design, chains, fingerprint, device, torch.get_num_threads(), stacked)
    start = time.perf_counter()
    worker = {"pid": os.getpid(), "task": id(task), "training_seconds": 0.0}
    measuring = 0.0  # seconds spent measuring, which the worker's training time leaves out
    payloads: list[dict[str, Any]] = []

    def done(seed: int, name: str, t: Trained, hit: bool) -> None:
        nonlocal measuring
        key = keys[(seed, name)] if keys else None
        worker["training_seconds"] = time.perf_counter() - start - measuring  # per-epoch evaluation included
        payload = {"name": name, "seed": seed, "history": [r.as_dict() for r in t.history], "extra": t.extra,
                   "cached": hit, "key": key, "worker": dict(worker)}
        state = {k: v.cpu() for k, v in t.model.state_dict().items()}
        if task.measuring is None:  # a Ray task: the driver measures, and stores what was trained in the cache
            payload["state"] = state
        else:  # measured as the driver measures a Ray task's model: rebuilt from its state
            began = time.perf_counter()
            rebuilt = rebuild_trained(cfg, problem, state, payload["history"], t.extra, device)
            run_dir, graphs = task.measuring
            payload.update(measured(cfg, problem, rebuilt, data, RunPaths(Path(run_dir)), name, seed, key,
                                    Path(graphs) if graphs else None))
            measuring += time.perf_counter() - began
        payloads.append(payload)
        emit(payload)

    store = Preloaded(task.cached) if task.cached is not None else None  # None: run_chains opens cfg.cache_dir
    run_chains(cfg, problem, design, data, list(chains), obs, keys, stacked, store, on_done=done,
               earlier=task.earlier)
    return payloads


def cached_for(cfg: StudyConfig, cache: ModelCache | None, design: Design, chains: tuple[Chain, ...],
               fingerprint: str | None, device: torch.device, threads: int) -> dict[str, Any]:
    """The cache entries a Ray task may reuse, read here (Ray tasks never stack)."""
    if cache is None or fingerprint is None:
        return {}
    keys = chain_keys(cfg, design, chains, fingerprint, device, threads).values()
    return {k: hit for k in keys if (hit := cache.load_trained(k)) is not None}


def measured(cfg: StudyConfig, problem: Problem, trained: Trained, data: Tensors, paths: RunPaths, name: str,
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


def file_loader(cfg: StudyConfig, problem: Problem) -> Any:
    """How this run decodes its own model files: through the registry, with the user's factory file where the
    user named one (--arch PATH.py:FUNCTION), or into the network built by the user's Python code. Values beyond a
    lossy encoding's range decode as they are (infinities), and are scored so."""
    arch_kind = kind(cfg.model.arch)
    if arch_kind == "python":
        return lambda path: load_model(path, model=problem.build(cfg, generator(0, "init")), finite=False)
    arch = cfg.model.arch if arch_kind == "file" else None
    return lambda path: load_model(path, arch, finite=False)


def export_head_start(cfg: StudyConfig, problem: Problem, device: torch.device, graphs: str | None) -> None:
    """While the workers train: export the run's initial network once into `graphs`, so that each worker swaps
    its models' weights into that file instead of starting the ONNX exporter itself (deploy.onnx.export_template)."""
    if graphs is None:
        return
    model: nn.Module = problem.build(cfg, generator(0, "init"), check=False)
    model = model.to(device=device, memory_format=memory_format(device))
    try:
        export_template(model, Path(graphs))
    except Exception:  # noqa: BLE001 - only a head start: a worker exporting this network reports its own error
        return
