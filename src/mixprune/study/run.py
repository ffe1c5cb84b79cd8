"""The study: every variant of the design (the paper's four by default) over seeds, written to a results
directory as it goes.

    results = run_study(StudyConfig(seeds=(0, 1, 2)))      # Baseline, Mixup, Pruned, Mixup+Pruned
    results.summary("mixup", "test_accuracy")               # {"mean": .., "std": .., "n": 3}

The dataset comes from the registry (--dataset) or from the caller; the network from the model registry
(--arch) or from the caller's factory (plan.setup). Chains of variants (a dense variant and the variants made
from it) are tasks for local worker processes or Ray (backends.py). Each model is measured as soon as it is
trained (tasks.py: in the local worker that trained it; a Ray task's by the driver), and results.json,
history.csv and its files are written atomically the moment it arrives, so an interrupted study keeps
every model it finished. Latency is timed here once training is over, once per distinct computation. A
`finish` hook (the paper's claims audit, from the reporting layer) sees the results before the final write.

The steps of a run (Study.run): claim the output directory, read what an earlier run of the same config
finished there, plan the chains, train and record them, time latency, store measurements in the cache,
finish.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_path, ensure_dir, write_text_atomic
from ..core.config import StudyConfig, load_config_file, to_dict, toml_text, what_it_computes
from ..core.errors import ConfigError, OutputError
from ..core.outputs import check_location, claimed
from ..core.machine import environment
from ..core.paths import RunPaths, default_out_dir
from ..core.runtime import resolve_device
from ..data.dataset import Dataset
from ..data.prepare import Tensors, evaluation_split, prepare_dataset, prepare_tensors
from .backends import backend_session, run_tasks
from .cache import ModelCache, bench_key, data_fingerprint
from .jobs import Problem, rebuild_trained
from .measure import measure_latency
from .observer import Observer
from .plan import Plan, plan_run, setup, stack_note
from .results import Results, read_history
from .tasks import Task, cached_for, chains_task, export_head_start, file_loader, measured
from .variants import Design, design_for

Finish = Callable[[Results], None]  # called with the complete results before their final write


def run_study(cfg: StudyConfig, dataset: Dataset | None = None, observer: Observer | None = None,
              out_dir: Path | None = None, model: Any = None, design: Design | None = None,
              finish: Finish | None = None) -> Results:
    """Train, prune, evaluate and save every variant for every seed; returns the run's Results.
    `model` (a factory(in_channels, num_classes) or an nn.Module) replaces --arch; `design` the paper's four
    variants; `finish` completes the results before they are written for the last time. Every input is checked
    (the data, the network, the device, the backend, the output location) before anything is created."""
    device = resolve_device(cfg.device)
    ds = prepare_dataset(cfg, dataset)
    cfg, problem = setup(cfg, ds, model)
    study = Study(cfg, ds, prepare_tensors(ds, device), device, observer or Observer(), problem,
                  design or design_for(cfg), finish)
    root = Path(out_dir or cfg.out or default_out_dir())
    check_location(root, "--out")
    with backend_session(cfg), claimed(root, "run", functools.partial(same_run, cfg=cfg), cfg.overwrite) as where:
        return study.run(RunPaths(where), root)


def same_run(root: Path, cfg: StudyConfig) -> bool | None:
    """Whether `root` holds a run of the same config (it resumes), another run (its config.toml differs), or no
    run at all (None)."""
    if not RunPaths(root).config_toml.is_file():
        return None
    try:
        earlier = to_dict(load_config_file(RunPaths(root).config_toml))
    except ConfigError:
        return False
    return what_it_computes(earlier) == what_it_computes(to_dict(cfg))


@dataclass(frozen=True)
class Earlier:
    """What an earlier run of this same config in this directory finished (it was interrupted, or it is run
    again): per (seed, variant) its metrics, where its fp32 file is still there (a model is recorded once measured
    and written, so only its latency, timed when training is over, may be missing); and its history.csv rows."""
    metrics: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, cfg: StudyConfig, paths: RunPaths) -> Earlier:
        try:
            earlier = Results.load(paths.results_json) if paths.results_json.is_file() else None
            rows = read_history(paths)
        except (OutputError, OSError, ValueError):
            return cls()
        if earlier is None or what_it_computes(earlier.config) != what_it_computes(to_dict(cfg)):
            return cls()
        finished = {}
        for name in earlier.names:
            for seed, metrics in earlier.seeds(name).items():
                files = paths.model_files(name, seed)
                if isinstance(metrics, dict) and "size_bytes_fp32" in metrics and "safetensors" in files:
                    finished[(seed, name)] = metrics
        return cls(finished, rows)


@dataclass
class Ledger:
    """The run's record while it runs: the results, the history rows of every model it holds, and what the
    summary of the run needs (models measured by this run, the workers' training time, Ray nodes)."""
    results: Results
    paths: RunPaths
    order: dict[str, int]  # variant -> its place in the table (history.csv's order)
    histories: dict[tuple[int, str], list[dict[str, Any]]] = field(default_factory=dict)
    kept_rows: list[dict[str, Any]] = field(default_factory=list)  # history rows of models an earlier run finished
    fresh: dict[tuple[int, str], str | None] = field(default_factory=dict)  # measured by this run -> cache key
    untimed: set[tuple[int, str]] = field(default_factory=set)  # kept from an earlier run, its latency not yet timed
    busy: dict[tuple[str | None, int], dict[Any, float]] = field(default_factory=dict)  # worker -> task -> seconds
    nodes: set[str] = field(default_factory=set)  # where the tasks ran (Ray node ids)

    def write(self) -> None:
        rows = self.kept_rows + [{"model": name, "seed": seed, **r} for (seed, name), history in self.histories.items()
                                 for r in history]
        rows.sort(key=lambda r: (int(r["seed"]), self.order[r["model"]]))  # stable: each model's epochs stay in order
        self.results.save(self.paths, rows)

    def worked(self, worker: dict[str, Any]) -> None:
        """A worker's training time so far in one task (its payloads carry a running total)."""
        tasks = self.busy.setdefault((worker.get("node"), worker["pid"]), {})
        tasks[worker.get("task")] = max(tasks.get(worker.get("task"), 0.0), worker["training_seconds"])
        self.nodes.add(worker.get("node", "this machine"))


@dataclass
class Study:
    """One study, set up (config, data, device, network, variant table), to be run into a directory."""
    cfg: StudyConfig
    ds: Dataset
    data: Tensors
    device: torch.device
    obs: Observer
    problem: Problem
    design: Design
    finish: Finish | None = None

    def run(self, paths: RunPaths, output_dir: Path) -> Results:
        """The steps of a run into `paths` (which becomes `output_dir`)."""
        cfg = self.cfg
        ensure_dir(paths.models_dir)
        write_text_atomic(paths.config_toml, toml_text(cfg))
        cache = ModelCache(Path(cfg.cache_dir)) if cfg.cache_dir else None
        ds = self.ds
        fingerprint = (data_fingerprint(ds.train_x, ds.train_y, ds.test_x, ds.test_y, extra=repr(ds.normalization()))
                       if cache else None)
        earlier = Earlier.of(cfg, paths)  # a run of this config interrupted here: what it finished
        plan = plan_run(cfg, self.problem, self.design, self.device, cache, fingerprint, set(earlier.metrics))
        ledger = Ledger(self._start(plan, output_dir), paths, {n: i for i, n in enumerate(self.design.names)})
        self._restore(ledger, plan, earlier)
        start = time.perf_counter()
        self._train(ledger, plan, cache, fingerprint, self._parents(plan, earlier, paths))
        execution = ledger.results.execution
        execution["train_wall_seconds"] = time.perf_counter() - start  # training and measuring
        execution["training_seconds"] = max((sum(t.values()) for t in ledger.busy.values()), default=0.0)
        if cfg.backend == "ray":
            execution["ray_nodes"] = sorted(ledger.nodes)
        if cfg.bench.latency:  # after training, so that no worker competes for the cores being timed
            self._time_latency(ledger, plan.twins)
        if cache is not None:
            self._store_measurements(ledger, cache)
        if self.finish is not None:
            self.finish(ledger.results)
        ledger.results.complete = True  # a sweep skips this run when it meets it again
        ledger.write()
        return ledger.results

    def _start(self, plan: Plan, output_dir: Path) -> Results:
        """The results of a run about to train: config, machine, execution plan, data, variants."""
        cfg, design, twins = self.cfg, self.design, plan.twins
        note = (f"alpha 0 turns Mixup off: {' and '.join(design.label(n) for n in twins)} are "
                f"{' and '.join(design.label(n) for n in twins.values())}, trained and measured once") if twins else None
        execution = {"backend": cfg.backend, "workers": plan.workers, "threads_per_worker": plan.threads,
                     "stacked_chains": [len(g) for g in plan.groups if len(g) > 1],
                     "stack_note": stack_note(cfg, self.problem, plan.groups), "reused_models": [], "note": note}
        if self.problem.factory is not None:
            execution["in_process"] = "the model is Python code: trained in this process"
        return Results.start(to_dict(cfg), environment(self.device), execution, self._data_record(), design,
                             str(output_dir))

    def _data_record(self) -> dict[str, Any]:
        cfg, ds = self.cfg, self.ds
        mean, std = ds.normalization()
        cv = cfg.data.cv_fold >= 0
        held = {} if ds.val_y is None else {"validation_examples": len(ds.val_y)}  # --prune-ratios auto's split
        return {"dataset": ds.name, "source": str(ds.source), "train_examples": len(ds.train_y), **held,
                "test_examples": len(ds.test_y), "input_shape": list(ds.shape), "classes": list(ds.classes),
                "normalization": {"mean": list(mean), "std": list(std),
                                  "from": "the dataset's published values" if ds.mean is not None else
                                  "the training split"},
                "storage": (f"uint8 images resident on {self.device.type}, normalized per batch" if ds.mapped is None
                            else f"uint8 images memory-mapped from {ds.mapped} (larger than the memory budget), read "
                                 "and normalized per batch"),
                "evaluation": (f"cross-validation fold {cfg.data.cv_fold} of {cfg.data.cv_folds} (held-out training "
                               "images)") if cv else "test split",
                "evaluated_on": evaluation_split(cfg)}

    def _restore(self, ledger: Ledger, plan: Plan, earlier: Earlier) -> None:
        """Record every model an earlier run of this config finished, as it recorded it (its latency is timed with
        the others' where it was not yet)."""
        models = sorted(earlier.metrics, key=lambda k: (k[0], ledger.order[k[1]]))
        for seed, name in models:
            ledger.results.record(name, seed, earlier.metrics[(seed, name)])
            if self.cfg.bench.latency and "latency_ms_batch1" not in earlier.metrics[(seed, name)] \
                    and name not in plan.twins:
                ledger.untimed.add((seed, name))
        ledger.results.execution["resumed_models"] = [f"{name}-seed{seed}" for seed, name in models]
        ledger.kept_rows = [r for r in earlier.rows if (int(r["seed"]), r["model"]) in set(models)]
        ledger.histories.update({at: [] for at in models})  # recorded: a repeat of it changes nothing

    def _parents(self, plan: Plan, earlier: Earlier, paths: RunPaths) -> dict[tuple[int, str], dict[str, Any]]:
        """The weights (state dicts, from their fp32 files) of the models an earlier run finished in chains still to
        train: their children are made from them instead of from retrained copies."""
        load = file_loader(self.cfg, self.problem)
        todo = {(seed, name) for group in plan.groups for seed, names in group for name in names}
        return {at: {k: v.cpu() for k, v in load(paths.model_file(at[1], at[0], "safetensors")).state_dict().items()}
                for at in sorted(todo & set(earlier.metrics))}

    def _tasks(self, plan: Plan, cache: ModelCache | None, fingerprint: str | None, graphs: str | None,
               paths: RunPaths, parents: dict[tuple[int, str], dict[str, Any]]) -> tuple[list[Task], list[Task]]:
        """(worker tasks, tasks of chains the cache holds whole: read in this process)."""
        cfg, problem, design = self.cfg, self.problem, self.design

        def mine(group: tuple) -> dict[tuple[int, str], dict[str, Any]]:
            models = {(seed, name) for seed, names in group for name in names}
            return {at: state for at, state in parents.items() if at in models}
        if cfg.backend != "local":  # Ray nodes may not see this machine's files: the driver reads the cache for
            # them, stores what they train, and measures
            task_cfg = dataclasses.replace(cfg, device=self.device.type)  # a GPU node must not pick CUDA on its own
            return [Task(task_cfg, problem, design, group, fingerprint, None,
                         cached_for(cfg, cache, design, group, fingerprint, self.device, plan.threads), mine(group))
                    for group in plan.groups], []
        root = str(paths.root)  # workers see this machine's files: they measure their models, use the cache
        return ([Task(cfg, problem, design, group, fingerprint, (root, graphs), earlier=mine(group))
                 for group in plan.groups],
                [Task(cfg, problem, design, (c,), fingerprint, (root, None)) for c in plan.ready])

    def _train(self, ledger: Ledger, plan: Plan, cache: ModelCache | None, fingerprint: str | None,
               parents: dict[tuple[int, str], dict[str, Any]]) -> None:
        """Run the tasks; record every model as it arrives (and the twins made from it), writing the results."""
        cfg = self.cfg
        graphs = tempfile.mkdtemp(prefix="mixprune-onnx-") if cfg.bench.onnx and plan.workers > 1 else None
        tasks, from_cache = self._tasks(plan, cache, fingerprint, graphs, ledger.paths, parents)
        # GPU workers get the CPU tensors (shared memory) and move them themselves; CUDA tensors do not travel
        apart = self.device.type != "cpu" and (plan.workers > 1 or cfg.backend == "ray")
        shared = prepare_tensors(self.ds, torch.device("cpu")) if apart else self.data
        arrived = functools.partial(self._arrived, ledger, plan.twins, cache)
        try:
            run_tasks(chains_task, from_cache, shared, 1, plan.threads, self.obs, arrived)  # in this process
            run_tasks(chains_task, tasks, shared, plan.workers, plan.threads, self.obs, arrived, cfg.backend,
                      cfg.ray_address, started=functools.partial(export_head_start, cfg, self.problem, self.device,
                                                                 graphs), device=self.device.type)
        finally:
            if graphs is not None:
                shutil.rmtree(graphs, ignore_errors=True)

    def _arrived(self, ledger: Ledger, twins: dict[str, str], cache: ModelCache | None, p: dict[str, Any]) -> None:
        """One model's payload: measured here where the worker could not (a Ray task), recorded with the twins
        made from it, written at once. A repeat (emitted early, then returned with its task) changes nothing."""
        name, seed = p["name"], p["seed"]
        if (seed, name) in ledger.histories:
            return
        ledger.worked(p["worker"])
        if "metrics" not in p:  # a Ray task: stored in the cache and measured here
            trained = rebuild_trained(self.cfg, self.problem, p["state"], p["history"], p["extra"], self.device)
            if cache is not None and p["key"] and not p["cached"]:
                cache.save_trained(p["key"], p["state"], p["history"], p["extra"])
            p.update(measured(self.cfg, self.problem, trained, self.data, ledger.paths, name, seed, p["key"]))
        results = ledger.results
        if p["cached"]:
            results.execution["reused_models"].append(f"{name}-seed{seed}" + ("" if p["fresh"] else " (measured)"))
        if p["fresh"]:
            ledger.fresh[(seed, name)] = p["key"]
        results.record(name, seed, p["metrics"])
        ledger.histories[(seed, name)] = p["history"]
        self.obs.model_done(name, seed, results.metrics(name, seed))
        for twin in (n for n, src in twins.items() if src == name):
            _mirror(ledger, seed, name, twin)
        ledger.write()

    def _time_latency(self, ledger: Ledger, twins: dict[str, str]) -> None:
        """CPU latency of every model this run measured (and of those an earlier run kept untimed), timed from its
        fp32 file once training is over."""
        order = ledger.order
        timed = sorted(set(ledger.fresh) | ledger.untimed, key=lambda k: (k[0], order[k[1]]))
        load = file_loader(self.cfg, self.problem)
        models = {f"{name}-seed{seed}": load(ledger.paths.model_file(name, seed, "safetensors"))
                  for seed, name in timed}
        latencies = measure_latency(self.cfg, models)
        for seed, name in timed:
            ledger.results.record(name, seed, {**ledger.results.metrics(name, seed), **latencies[f"{name}-seed{seed}"]})
            for twin in (n for n, src in twins.items() if src == name):
                _mirror(ledger, seed, name, twin, files=False)

    def _store_measurements(self, ledger: Ledger, cache: ModelCache) -> None:
        for (seed, name), key in ledger.fresh.items():
            if key:
                cache.save_measured(key, bench_key(self.cfg), ledger.results.metrics(name, seed),
                                    ledger.paths.model_files(name, seed))


def _mirror(ledger: Ledger, seed: int, name: str, twin: str, files: bool = True) -> None:
    """Record model `name` of `seed` also as `twin` (the same model at alpha 0): same metrics, history and files."""
    ledger.histories[(seed, twin)] = ledger.histories[(seed, name)]
    ledger.results.record(twin, seed, dict(ledger.results.metrics(name, seed)))
    if files:
        paths = ledger.paths
        for suffix, f in paths.model_files(name, seed).items():
            with atomic_path(paths.model_file(twin, seed, suffix)) as tmp:
                shutil.copyfile(f, tmp)
