"""Trained and measured models reused across runs: a store keyed by everything a model depends on.

    cache = ModelCache(Path("runs/sweep/cache"))
    key = model_key(cfg, seed, "pruned", fingerprint, device, threads)   # 16 hex digits (paper's design)
    entry = cache.load_trained(key)          # (state dict, history, extra) or None
    cache.save_trained(key, state, history, extra)

A sweep over Mixup strength x sparsity trains the same Baseline for every cell and the same Pruned
model for every alpha: keyed by its own settings, each is trained and measured once and reused by
every cell that needs it. A key covers the data (a fingerprint of the tensors), the model, training
and, where they matter, Mixup and pruning settings, the seed, the device type, the thread count (results
depend on it) and the mixprune and torch versions, so a reused model is the one the run would have
trained. Entries are written to a temporary directory and renamed into place; weights are safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.atomic import atomic_path, read_text_capped
from ..core.config import LATE_FIELDS, StudyConfig, to_dict
from ..core.runtime import available_cores
from ..models import kind
from ..models.weights import weights_file
from ..train.losses import needs_teacher
from .variants import Design, mixup_on


def data_fingerprint(*tensors: torch.Tensor, extra: str = "") -> str:
    """SHA-256 (16 hex digits) over the shapes and bytes of the dataset tensors (and `extra`, e.g. the
    normalization the inputs get)."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        for i in range(0, len(t), 4096):  # in chunks: a memory-mapped dataset is never copied whole
            h.update(t[i:i + 4096].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_key(cfg: StudyConfig, seed: int, name: str, fingerprint: str, device: str, threads: int,
              stack_size: int | None = None, design: Design | None = None) -> str:
    """The cache key of one model (variant `name` of `design`, the paper's by default) of one seed: a hash of
    exactly the settings that determine it, down its line of parents.
    `stack_size`: trained in a stack of that many models (stacked.py), whose rounding differs from separate
    training and, with many threads, from other stack sizes; --stack-models itself is not part of the key,
    since a chain with no other chain beside it trains separately."""
    from .. import __version__

    line = (design or Design()).ancestors(name)
    root = line[0]
    train = {k: v for k, v in to_dict(cfg.train).items() if k not in ("eval_batch_size", "stack_models")
             and LATE_FIELDS.get(("train", k), ()) != v}  # settings added later count only when set
    parts: dict[str, Any] = {
        "versions": [__version__, torch.__version__], "device": device, "threads": threads, "seed": seed,
        "data": fingerprint, "train": train,
        "model": {k: v for k, v in to_dict(cfg.model).items() if LATE_FIELDS.get(("model", k), ()) != v},
        "mixup": cfg.mixup.alpha if mixup_on(cfg, root) else None,
        # dropout masks come from a stream named after the model, so A and B differ when dropout is on
        "stream": root.name if cfg.model.dropout > 0 else None}
    if kind(cfg.model.arch) == "file":  # a user's factory: its code is part of what the model depends on
        parts["code"] = _file_digest(cfg.model.arch.rpartition(":")[0])
    if cfg.model.weights:  # trained weights to start from: their bytes, not their name
        parts["weights"] = _file_digest(str(weights_file(cfg.model.arch, cfg.model.weights)))
    if stack_size:  # only when set, so that keys of separately trained models stay what they were
        parts["stack_size"] = stack_size
    if any(v.loss != "ce" for v in line):
        parts["losses"] = [v.loss for v in line]
    if any(needs_teacher(v.loss) for v in line):  # the teacher: the parent (in the line already) or a file
        d = cfg.distill
        parts["distill"] = {"temperature": d.temperature, "weight": d.weight,
                            "teacher": _file_digest(d.teacher) if d.teacher else "parent"}
    if len(line) > 2:  # a deeper line: each intermediate step too (the paper's lines have two)
        parts["line"] = [[v.step, mixup_on(cfg, v)] for v in line[1:-1]]
    v = line[-1]
    if v.step == "prune":
        prune = {k: val for k, val in to_dict(cfg.prune).items() if k not in ("finetune_mixup", "sparsity")}
        parts.update(prune=prune, finetune_mixup=cfg.mixup.alpha if mixup_on(cfg, v) else None,
                     pruned_stream=name if cfg.model.dropout > 0 else None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    except OSError:
        return None


def bench_key(cfg: StudyConfig) -> str:
    """Measurements also depend on what is measured (ONNX, latency settings) and, for latency, on the
    machine and the threads it is timed with."""
    import platform

    timing = [platform.machine(), platform.processor(), cfg.threads or available_cores()] if cfg.bench.latency else None
    return hashlib.sha256(json.dumps([to_dict(cfg.bench), timing], sort_keys=True).encode()).hexdigest()[:8]


MAX_ENTRY_JSON = 1 << 24  # an entry's history and metrics: kilobytes; 16 MiB is far beyond any real one


class ModelCache:
    """A directory of entries <key>/ holding weights.safetensors + trained.json, and per measurement
    settings measured-<bench key>/ with metrics.json and the model's artifact files."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _publish(self, target: Path, fill: Any) -> None:
        """Build a directory in a temporary place and rename it to target; a concurrent writer of the same
        entry may win the race: both wrote the same content, so the loser's copy is dropped."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        except OSError:  # a cache that cannot be written is skipped: the run itself goes on
            return
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; entries are as readable as any output
            try:
                fill(tmp)
            except (OSError, SafetensorError):  # a full disk: the entry is skipped, the run goes on
                return
            with contextlib.suppress(OSError):
                os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def drop(self, key: str) -> None:
        """Remove an entry (and its measurements), e.g. one whose weights do not fit the network."""
        shutil.rmtree(self.root / key, ignore_errors=True)

    def load_trained(self, key: str) -> tuple[dict[str, torch.Tensor], list[dict], dict] | None:
        entry = self.root / key
        try:
            meta = json.loads(read_text_capped(entry / "trained.json", MAX_ENTRY_JSON))
            state = load_file(str(entry / "weights.safetensors"))
        except (OSError, ValueError, KeyError, RecursionError, SafetensorError):  # absent or unreadable: train again
            if entry.is_dir():  # unreadable: drop it (measurements too), so the retrained model replaces it
                shutil.rmtree(entry, ignore_errors=True)
            return None
        return state, meta.get("history", []), meta.get("extra", {})

    def save_trained(self, key: str, state: dict[str, torch.Tensor], history: list[dict], extra: dict) -> None:
        def fill(d: Path) -> None:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(d / "weights.safetensors"))
            (d / "trained.json").write_text(json.dumps({"history": history, "extra": extra}), encoding="utf-8")
        if not (self.root / key / "trained.json").is_file():
            self._publish(self.root / key, fill)

    def holds(self, key: str, bench: str) -> bool:
        """Whether the entry has the trained model and its measurements under `bench` (nothing left to compute)."""
        return (self.root / key / "trained.json").is_file() and (self.root / key / f"measured-{bench}" /
                                                                  "metrics.json").is_file()

    def load_measured(self, key: str, bench: str, dest: Callable[[str], Path]) -> dict[str, Any] | None:
        """Cached metrics of a model, after copying its artifact files to dest(suffix), e.g. 'fp16.safetensors'."""
        entry = self.root / key / f"measured-{bench}"
        try:
            metrics = json.loads(read_text_capped(entry / "metrics.json", MAX_ENTRY_JSON))
            files = {p.name: p for p in (entry / "files").iterdir()}
        except (OSError, ValueError, RecursionError):
            return None
        for suffix, src in files.items():
            with atomic_path(dest(suffix)) as tmp:
                shutil.copyfile(src, tmp)
        return metrics

    def save_measured(self, key: str, bench: str, metrics: dict[str, Any], files: dict[str, Path]) -> None:
        def fill(d: Path) -> None:
            (d / "files").mkdir()
            for suffix, src in files.items():
                shutil.copyfile(src, d / "files" / suffix)
            (d / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        if (self.root / key).is_dir() and not (self.root / key / f"measured-{bench}").is_dir():
            self._publish(self.root / key / f"measured-{bench}", fill)


class Preloaded:
    """A task's cache where the cache directory may not be reachable (a Ray node): the entries the driver read for
    the task (key -> load_trained's value). What the task trains comes back in its payload; the driver stores it."""

    def __init__(self, entries: dict[str, Any]):
        self.entries = dict(entries)

    def load_trained(self, key: str) -> Any:
        return self.entries.get(key)

    def save_trained(self, key: str, state: dict[str, torch.Tensor], history: list[dict], extra: dict) -> None:
        """Nothing here: the driver stores the payload."""

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)
