"""Training jobs built from the variant table: set up, run (alone or stacked), reused from the cache.

    problem = Problem((1, 28, 28), 10)                     # what every model of the run is built for
    done = run_chains(cfg, problem, design, data, [(0, ("baseline", "pruned"))], observer)
    # [(seed, name, Trained, loaded from the cache), ...] in chain order

Per seed, every dense variant starts from the same initial weights and sees the same batches (stream
"order"); a pruned variant prunes a copy of its parent's trained weights and fine-tunes on the
"finetune-order" stream, with Mixup as its variant and --finetune-mixup say. All variants of one
depth (the dense ones, then their pruned children) train before the next depth, so that a stack
(stacked.py) holds models that train alike.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.pruning import (
    GradualPruner,
    attach_masks,
    l1_masks,
    make_permanent,
    pruned_counts,
    semi_structured_masks,
)
from ..compress.sensitivity import choose_ratios, sensitivity
from ..compress.structured import (
    GradualStructuredPruner,
    UnitGroup,
    attach_unit_masks,
    ratios_for,
    structured_keep,
    unit_groups,
    unit_masks,
)
from ..core.config import StudyConfig
from ..core.errors import ConfigError, ModelFileError
from ..core.runtime import generator, memory_format
from ..data.prepare import Tensors
from ..deploy.files import model_from_bytes, read_model_file
from ..models import build_model, evaluate_loss_accuracy
from ..models.weights import load_state
from ..train.engine import EpochRecord, FitSpec, fit, steps_per_epoch
from ..train.losses import needs_teacher, training_loss
from ..train.schedules import lr_schedule
from ..train.stacked import Member, fit_stacked, stackable
from .cache import ModelCache
from .variants import Design, Variant, mixup_on


@dataclass(frozen=True)
class Problem:
    """What every model of a run is built for: one input's shape (C, H, W) and the number of classes;
    `factory` (the Python API's model) builds the network from an init generator instead of --arch;
    `stateless`: the network has no state besides conv/FC weights (models.stateless), so it can be stacked."""
    input_shape: tuple[int, int, int]
    num_classes: int
    factory: Callable[[torch.Generator], nn.Module] | None = None
    stateless: bool = True
    teacher: bytes | None = None  # the --teacher file's bytes, read once by the driver: workers and Ray nodes
    # need not see the file
    weights: dict[str, torch.Tensor] | None = None  # --weights, read and checked once by the driver (as teacher)

    def build(self, cfg: StudyConfig, gen: torch.Generator, check: bool = True) -> nn.Module:
        """The network, initialised from `gen` (then given the run's --weights, where it has them); `check` runs it
        on example inputs (models.build_model), which a structure for loaded weights can skip once the run's probe
        model passed it."""
        if self.factory is not None:
            model = self.factory(gen)
        else:
            model = build_model(cfg.model.arch, self.input_shape, self.num_classes, gen, cfg.model.dropout, check)
        return model if self.weights is None else load_state(model, self.weights, cfg.model.weights)


@dataclass
class Trained:
    """One trained model of one seed with its per-epoch history and extra measurements."""
    model: nn.Module
    history: list[EpochRecord]
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Job:
    """One model's training, set up (weights, masks, settings, random streams) but not yet run."""
    name: str
    seed: int
    model: nn.Module
    spec: FitSpec
    order_gen: torch.Generator
    mixup_gen: torch.Generator | None
    phase: str  # "train" or "finetune"
    extra: dict[str, Any] = field(default_factory=dict)


def fit_spec(cfg: StudyConfig, epochs: int, lr: Callable[[int], float], mixup: bool, loss: str,
             step_hook: Callable[[int], None] | None = None, teacher: nn.Module | None = None) -> FitSpec:
    """The training settings of cfg for one phase (training or fine-tuning)."""
    t, d = cfg.train, cfg.distill
    return FitSpec(epochs=epochs, lr=lr, batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
                   eval_batch_size=t.eval_batch_size,
                   mixup_alpha=cfg.mixup.alpha if mixup and cfg.mixup.alpha > 0 else None,  # alpha 0: Mixup off
                   step_hook=step_hook, cuda_graphs=t.cuda_graphs,
                   loss=training_loss(loss, t.label_smoothing, d.temperature, d.weight), teacher=teacher)


def training_lr(cfg: StudyConfig) -> Callable[[int], float]:
    """The dense models' per-epoch LR: --lr-schedule over --epochs, after --warmup-epochs."""
    t = cfg.train
    return lr_schedule(t.lr_schedule, t.lr, t.epochs, t.warmup_epochs, t.lr_decay_epoch, t.lr_decay_factor)


def finetune_lr(cfg: StudyConfig) -> Callable[[int], float]:
    """Fine-tuning's per-epoch LR: --lr-schedule from --finetune-lr, without warm-up or decay steps (step is
    then the paper's constant LR)."""
    return lr_schedule(cfg.train.lr_schedule, cfg.prune.finetune_lr, cfg.prune.finetune_epochs)


def read_teacher(path: str) -> bytes:
    """The --teacher file's bytes (ConfigError, one line, where it is missing, not a regular file or too large)."""
    if not Path(path).exists():
        raise ConfigError(f"--teacher {path}: no such file; give a model file written by mixprune (.safetensors)")
    try:
        return read_model_file(path)
    except ModelFileError as exc:
        raise ConfigError(f"--teacher {path}: {exc}") from None


_TEACHERS: dict[tuple[str, str], nn.Module] = {}  # per process: a --teacher file, loaded and checked once


def file_teacher(cfg: StudyConfig, problem: Problem, device: torch.device) -> nn.Module:
    """The --teacher model (problem.teacher, else read from cfg's path), loaded safely from its bytes (safetensors),
    checked to take inputs of the run's shape and map them to its number of classes, frozen."""
    data = problem.teacher if problem.teacher is not None else read_teacher(cfg.distill.teacher)
    key = (hashlib.sha256(data).hexdigest(), str(device))
    if key not in _TEACHERS:
        name = cfg.distill.teacher
        try:
            model = model_from_bytes(data, name)
        except ModelFileError as exc:
            raise ConfigError(f"--teacher: {exc}") from None
        if tuple(model.input_shape) != tuple(problem.input_shape):
            raise ConfigError(f"--teacher {name}: it takes inputs of shape {list(model.input_shape)}, this dataset's "
                              f"are {list(problem.input_shape)}; give a model trained on the same dataset (and "
                              "--image-size)")
        model = model.to(device=device, memory_format=memory_format(device))
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros((2, *problem.input_shape), device=device))
        except Exception as exc:  # noqa: BLE001 - any failure means it cannot teach on these inputs
            raise ConfigError(f"--teacher {name}: it fails on this dataset's {list(problem.input_shape)} inputs "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, problem.num_classes):
            raise ConfigError(f"--teacher {name}: it maps inputs of shape {problem.input_shape} to outputs of shape "
                              f"{tuple(getattr(out, 'shape', ()))[1:]}, not to this dataset's {problem.num_classes} "
                              "classes; give a model trained on the same dataset")
        _TEACHERS[key] = model.requires_grad_(False)
    return _TEACHERS[key]


def teacher_for(cfg: StudyConfig, problem: Problem, v: Variant, parent: Trained | None,
                device: torch.device) -> nn.Module | None:
    """The teacher of variant v: None unless its loss distils; --teacher FILE, else a frozen copy of its parent."""
    if not needs_teacher(v.loss):
        return None
    if cfg.distill.teacher:
        return file_teacher(cfg, problem, device)
    if parent is None:
        raise ConfigError(f"variant {v.name} distils but has no parent to learn from; pass --teacher FILE")
    return copy.deepcopy(parent.model).eval().requires_grad_(False)


def dense_job(cfg: StudyConfig, problem: Problem, seed: int, v: Variant, device: torch.device) -> Job:
    """A dense variant: the seed's initial weights and batch order, Mixup as the variant says."""
    t = cfg.train
    mixup = mixup_on(cfg, v)
    model = problem.build(cfg, generator(seed, "init"))
    model = model.to(device=device, memory_format=memory_format(device))
    model.generator = generator(seed, f"dropout-{v.name}") if cfg.model.dropout > 0 else None
    spec = fit_spec(cfg, t.epochs, training_lr(cfg), mixup, v.loss, teacher=teacher_for(cfg, problem, v, None, device))
    return Job(v.name, seed, model, spec, generator(seed, "order"), generator(seed, "mixup") if mixup else None, "train")


def structured_ratios(cfg: StudyConfig, model: nn.Module, groups: list[UnitGroup], data: Tensors) -> dict[str, float]:
    """Each channel group's ratio: --prune-ratios GROUP=R entries, the conv/FC amounts, or (auto) the largest
    ratio whose drop on the validation split, the group pruned alone, stays within --max-drop."""
    p = cfg.prune
    if p.ratios != "auto":
        return ratios_for(groups, p.conv_amount, p.fc_amount, p.group_ratios())
    if data.val_x is None or data.val_y is None:
        raise ValueError("--prune-ratios auto needs a validation split (Dataset.hold_out)")
    _, rows = sensitivity(model, groups, data.val_x, data.val_y, importance=p.importance, norm=p.norm,
                          batch_size=cfg.train.eval_batch_size)
    return choose_ratios(groups, rows, p.max_drop)


def attach_pruning(cfg: StudyConfig, model: nn.Module, data: Tensors
                   ) -> tuple[GradualPruner | GradualStructuredPruner | None, dict[str, Any]]:
    """Put the configured masks on model; returns the step hook that grows them (gradual schedule, else None)
    and what the run records about the choice (structured: each group's ratio)."""
    p = cfg.prune
    total = p.finetune_epochs * steps_per_epoch(len(data.train_x), cfg.train.batch_size)
    end_step = max(1, round(p.gradual_end * total))
    if p.method == "2:4":
        masks, _ = semi_structured_masks(model)
        attach_masks(model, masks)
        return None, {}
    if p.method == "structured":
        groups = unit_groups(model, p.keep_layers())
        ratios = structured_ratios(cfg, model, groups, data)
        if p.schedule == "gradual":
            return GradualStructuredPruner(model, groups, ratios, end_step, p.gradual_every, p.importance,
                                           p.norm), {"prune_ratios": ratios}
        keep = structured_keep(model, groups, ratios, p.importance, p.norm, p.scope)
        attach_unit_masks(model, unit_masks(model, groups, keep))
        return None, {"prune_ratios": ratios}
    if p.schedule == "oneshot":
        attach_masks(model, l1_masks(model, p.conv_amount, p.fc_amount, p.scope))
        return None, {}
    return GradualPruner(model, pruned_counts(model, p.conv_amount, p.fc_amount), end_step=end_step,
                         every=p.gradual_every, scope=p.scope), {}


def prune_job(cfg: StudyConfig, problem: Problem, data: Tensors, parent: Trained, seed: int, v: Variant) -> Job:
    """A pruned variant: masks on a copy of its parent's weights, to be fine-tuned with the masks held
    (Mixup as --finetune-mixup says: by default as the variant says; a KD variant against its teacher)."""
    p, t = cfg.prune, cfg.train
    teacher = teacher_for(cfg, problem, v, parent, data.train_x.device)
    model = copy.deepcopy(parent.model)
    model.generator = generator(seed, f"dropout-{v.name}") if cfg.model.dropout > 0 else None
    hook, extra = attach_pruning(cfg, model, data)
    if hook is None:  # one-shot: how much the pruning itself cost, before fine-tuning repairs it
        extra["accuracy_before_finetune"] = evaluate_loss_accuracy(model, data.test_x, data.test_y, t.eval_batch_size)[1]
    mixup = mixup_on(cfg, v)
    spec = fit_spec(cfg, p.finetune_epochs, finetune_lr(cfg), mixup, v.loss, hook, teacher)
    return Job(v.name, seed, model, spec, generator(seed, "finetune-order"),
               generator(seed, "finetune-mixup") if mixup else None, "finetune", extra)


def make_job(cfg: StudyConfig, problem: Problem, data: Tensors, v: Variant, seed: int, parent: Trained | None) -> Job:
    """The job of variant v for one seed: its step's builder (one per step of variants.STEPS)."""
    if v.step == "dense":
        return dense_job(cfg, problem, seed, v, data.train_x.device)
    return prune_job(cfg, problem, data, parent, seed, v)  # type: ignore[arg-type]


def _finish(job: Job, history: list[EpochRecord]) -> Trained:
    """After training: a fine-tuned model's masks become zeros in plain parameters (prune.remove)."""
    if job.phase == "finetune":
        hook = job.spec.step_hook
        if isinstance(hook, (GradualPruner, GradualStructuredPruner)) and job.spec.epochs == 0:
            hook(hook.end_step)  # no steps to spread it over: prune at once
        make_permanent(job.model)
    return Trained(job.model, history, job.extra)


def run_jobs(jobs: list[Job], data: Tensors, obs: Any, stack: int = 0) -> list[Trained]:
    """Train each job; with stack (a stack size, 0: none), those that can train together do so in one pass
    (stacked.py) in a stack of that size, the others (gradual pruning, dropout, BatchNorm) one after another.
    Results come back in the order of `jobs`."""
    def callbacks(job: Job) -> list[Callable[[EpochRecord], None]]:
        def report(record: EpochRecord) -> None:
            obs.epoch_end(job.name, job.seed, record)
        return [report]
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


Chain = tuple[int, tuple[str, ...]]  # (seed, variant names, parents first)


def by_depth(design: Design, chains: list[Chain]) -> list[list[tuple[int, str]]]:
    """The (seed, variant) pairs of the chains, grouped by depth in the table (dense ones first)."""
    levels: dict[int, list[tuple[int, str]]] = {}
    for seed, names in chains:
        for name in names:
            levels.setdefault(design.depth(name), []).append((seed, name))
    return [levels[d] for d in sorted(levels)]


Done = Callable[[int, str, "Trained", bool], None]  # (seed, variant, trained model, taken from the cache)


def run_chains(cfg: StudyConfig, problem: Problem, design: Design, data: Tensors, chains: list[Chain], obs: Any,
               keys: dict[tuple[int, str], str] | None = None, stacking: bool = False, store: Any = None,
               on_done: Done | None = None, earlier: dict[tuple[int, str], dict[str, Any]] | None = None
               ) -> list[tuple[int, str, Trained, bool]]:
    """Train every variant of every chain, depth by depth; with stacking, each depth of several models is one
    stacked pass of that size, whatever part of it the cache (or `earlier`) already holds. With keys, a model
    already in the cache (`store`: a cache.ModelCache or cache.Preloaded; by default cfg.cache_dir's) is loaded,
    not trained. A model in `earlier` (its state dict, finished by an earlier run of this config) is taken as it
    is, not trained or passed on. `on_done` gets each other model as soon as its depth is trained, before the
    next depth starts. Returns (seed, name, trained, from the cache) in chain order."""
    if store is None and cfg.cache_dir:
        store = ModelCache(Path(cfg.cache_dir))
    cache = store if keys else None
    done: dict[tuple[int, str], tuple[Trained, bool]] = {}
    for level in by_depth(design, chains):
        stack = len(level) if stacking and len(level) > 1 else 0
        todo = []
        for seed, name in level:
            if earlier and (seed, name) in earlier:
                done[(seed, name)] = (rebuild_trained(cfg, problem, earlier[(seed, name)], [], {}, data.train_x.device),
                                      True)
                continue
            hit = cache.load_trained(keys[(seed, name)]) if cache is not None and keys else None
            trained = _from_cache(cfg, problem, cache, keys[(seed, name)], hit, data) if hit else None
            if trained is not None:
                obs.phase_start(name, seed, len(trained.history))
                for r in trained.history:  # progress displays see the (recorded) epochs of the reused model
                    obs.epoch_end(name, seed, r)
                done[(seed, name)] = (trained, True)
                continue
            v = design[name]
            parent = done[(seed, v.parent)][0] if v.parent else None
            todo.append(((seed, name), make_job(cfg, problem, data, v, seed, parent)))
        for (at, _), trained in zip(todo, run_jobs([j for _, j in todo], data, obs, stack)):
            if cache is not None and keys:
                cache.save_trained(keys[at], trained.model.state_dict(), [r.as_dict() for r in trained.history],
                                   trained.extra)
            done[at] = (trained, False)
        for at in level:
            if on_done is not None and at not in (earlier or {}):
                on_done(*at, *done[at])
    return [(seed, name, *done[(seed, name)]) for seed, names in chains for name in names]


def _from_cache(cfg: StudyConfig, problem: Problem, cache: ModelCache, key: str, hit: tuple,
                data: Tensors) -> Trained | None:
    """A cached model, or None (and the entry dropped, so that the retrained model replaces it) where its
    weights do not fit the network or its history is not readable."""
    try:
        return rebuild_trained(cfg, problem, *hit, data.train_x.device)
    except (RuntimeError, TypeError, KeyError, ValueError):
        cache.drop(key)
        return None


def rebuild_trained(cfg: StudyConfig, problem: Problem, state: dict[str, torch.Tensor], history: list[dict],
                    extra: dict, device: torch.device) -> Trained:
    """A Trained from plain data (a worker's payload or a cache entry), on the device where the data is."""
    model = problem.build(cfg, generator(0, "init"), check=False)  # the structure; its weights are replaced
    model.load_state_dict(state)
    model = model.to(device=device, memory_format=memory_format(device))
    return Trained(model, [EpochRecord(**r) for r in history], extra)
