"""What a study will do before it does it: the network and what it can take, and which chains of variants train
where (worker processes, threads, stacks), which an earlier run or the cache already holds.

    cfg, problem = setup(cfg, ds, model)          # the network checked on the data (and a Python model's label)
    preflight(cfg, ds)                            # everything setup checks, nothing run (sweeps check every cell)
    plan = plan_run(cfg, problem, design, device, cache, fingerprint, finished)
    plan.groups, plan.workers, plan.threads       # one task per group of chains

A chain is one dense variant of one seed and the variants made from it (jobs.Chain); chains are what a
worker trains in sequence.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.structured import check_exact, ratios_for, structured_keep, unit_groups
from ..core.config import StudyConfig, with_overrides
from ..core.errors import ConfigError
from ..core.outputs import check_location
from ..core.runtime import available_cores, generator, resolve_device
from ..data.dataset import Dataset
from ..data.prepare import prepare_dataset
from ..deploy.files import load_weights
from ..models import check_config, python_factory, stateless
from .cache import ModelCache, bench_key, model_key
from .jobs import Chain, Problem, by_depth, file_teacher, read_teacher
from .variants import Design


def chain_keys(cfg: StudyConfig, design: Design, chains: tuple[Chain, ...] | list[Chain], fingerprint: str,
               device: torch.device, threads: int, stacked: bool = False) -> dict[tuple[int, str], str]:
    """The cache key of every model of the chains, as the task that trains them computes it: its device and
    thread count, and when stacked each depth's stack size (the task's, even where the cache holds some of it)."""
    return {(seed, name): model_key(cfg, seed, name, fingerprint, device.type, threads,
                                    len(level) if stacked else None, design)
            for level in by_depth(design, list(chains)) for seed, name in level}


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
    CPU, where it is slower: docs/performance.md) and possible."""
    wanted = device.type == "cuda" if cfg.train.stack_models is None else cfg.train.stack_models
    return wanted and _stack_blocked(cfg, problem) is None


def stack_note(cfg: StudyConfig, problem: Problem, groups: list[tuple[Chain, ...]]) -> str | None:
    """Why --stack-models trained nothing together, when it was asked for and did not."""
    if not cfg.train.stack_models or any(len(g) > 1 for g in groups):
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


def check_last_batch(cfg: StudyConfig, model: nn.Module, n_train: int) -> None:
    """ConfigError where the last batch of every epoch holds a single image and the network cannot train on one
    (BatchNorm1d, or BatchNorm2d over 1x1 maps, needs two values per channel): found here, not epochs into a run."""
    if n_train % cfg.train.batch_size != 1:
        return
    try:
        copy.deepcopy(model).train()(torch.zeros(1, *model.input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure means the network cannot take a batch of one
        raise ConfigError(f"the last batch of every epoch holds one image ({n_train} training images, --batch-size "
                          f"{cfg.train.batch_size}) and {cfg.model.arch} cannot train on one "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); choose another "
                          "--batch-size or --train-subset") from None


def _checked_problem(cfg: StudyConfig, problem: Problem, n_train: int) -> Problem:
    """Refuse, before anything trains, what this network cannot do (building it checks the input shape);
    the problem with what the built network says about itself."""
    model = problem.build(cfg, generator(0, "init"))
    if cfg.model.weights:  # read here, checked before anything trains, and carried to every worker
        trained = load_weights(model, cfg.model.weights, cfg.model.arch)
        if {k: v.shape for k, v in trained.state_dict().items()} != {k: v.shape for k, v in model.state_dict().items()}:
            raise ConfigError(f"--weights {cfg.model.weights} holds a slimmed {cfg.model.arch}; a study starts from the "
                              "whole network: give its unpruned weights, or compress it with `mixprune compress`")
        problem = dataclasses.replace(problem, weights={k: v.detach().cpu() for k, v in trained.state_dict().items()})
        model = trained
    check_last_batch(cfg, model, n_train)
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


def setup(cfg: StudyConfig, ds: Dataset, model: Any = None) -> tuple[StudyConfig, Problem]:
    """The config (with a Python model's label as its arch) and the problem every model of the run is built for,
    checked on the dataset: the network takes its inputs and can do what the config asks; the device exists and
    the cache directory is a location this machine takes."""
    resolve_device(cfg.device)
    if cfg.cache_dir:
        check_location(Path(cfg.cache_dir), "--cache-dir")
    factory = None
    if model is not None:
        arch, factory = python_factory(model, ds.shape, ds.num_classes)
        cfg = with_overrides(cfg, {"model.arch": arch})
    check_config(cfg.model)
    return cfg, _checked_problem(cfg, Problem(ds.shape, ds.num_classes, factory), len(ds.train_y))


def preflight(cfg: StudyConfig, dataset: Dataset | None = None) -> None:
    """Everything run_study checks before it creates its output directory (the data, the network and what it
    can do), without running anything: a sweep checks every cell this way before it creates OUT."""
    setup(cfg, prepare_dataset(cfg, dataset))


@dataclass(frozen=True)
class Plan:
    """Which chains of the run go where: `groups` are the worker tasks (a group trains stacked where it holds
    several chains); `ready` chains the cache holds whole, trained and measured (read in this process); `twins`
    variants that are another variant bit for bit (alpha 0), recorded from it. Chains an earlier run of this
    config finished whole are in neither."""
    groups: list[tuple[Chain, ...]]
    ready: list[Chain]
    workers: int
    threads: int
    twins: dict[str, str]


def plan_run(cfg: StudyConfig, problem: Problem, design: Design, device: torch.device, cache: ModelCache | None,
             fingerprint: str | None, finished: set[tuple[int, str]]) -> Plan:
    """Plan a run: every chain of every seed, less those `finished` holds whole (with the twins made from them),
    less those the cache holds whole; workers and threads for the rest."""
    twins = design.twins(cfg)  # alpha 0 (and no dropout): B and D are A and C, bit for bit; train once
    chains = [(seed, names) for seed in cfg.seeds for names in design.chains() if not all(n in twins for n in names)]

    def whole(chain: Chain) -> bool:
        copies = tuple(t for t, src in twins.items() if src in chain[1])
        return all((chain[0], n) in finished for n in chain[1] + copies)
    chains = [c for c in chains if not whole(c)]
    in_process = problem.factory is not None
    workers, threads = plan_workers(cfg, device, max(len(chains), 1), in_process=in_process)
    ready: list[Chain] = []
    stacked = stacking(cfg, device, problem)
    if cfg.backend == "local" and cache is not None and fingerprint and not stacked:
        ready = [c for c in chains if all(cache.holds(k, bench_key(cfg))
                                          for k in chain_keys(cfg, design, [c], fingerprint, device, threads).values())]
        chains = [c for c in chains if c not in ready]
        workers = plan_workers(cfg, device, max(len(chains), 1), in_process=in_process)[0]  # threads stay: keys
    return Plan(group_chains(chains, workers, stacked), ready, workers, threads, twins)
