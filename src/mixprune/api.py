"""The Python entry points: the study on any data and network, with its report; sweeps and the design search.

    from mixprune import StudyConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2)))    # the paper's study; writes results.json, report.md, ...
    results.summary("mixup_pruned", "test_accuracy")     # {"mean", "std", "n"}

    # your own network and data: a factory(in_channels, num_classes) or an nn.Module, and tensors
    results = reproduce(cfg, dataset=(train_x, train_y, test_x, test_y), model=build, classes=("cat", "dog"))

Data may be a mixprune Dataset, a tuple of tensors (train images, train labels, test images, test
labels; images uint8 [N, C, H, W] or [N, H, W], or floats in [0, 1], which are rounded to 8 bits) or a
pair of torch Datasets (train, test) whose items are (image, label) with PIL images or tensors. A
model given as Python code trains in this process (worker processes could not import it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.config import StudyConfig
from .core.paths import RunPaths
from .data.prepare import as_dataset
from .explore.search import SearchSpec, run_search
from .explore.sweep import run_sweep
from .reporting.audit import add_claims
from .reporting.publish import write_report
from .study.observer import Observer
from .study.results import Results
from .study.run import run_study

__all__ = ["reproduce", "compress", "run_sweep", "run_search", "SearchSpec", "as_dataset"]


def reproduce(cfg: StudyConfig | None = None, dataset: Any = None, observer: Observer | None = None,
              model: Any = None, classes: Sequence[str] | None = None) -> Results:
    """Run the study (the paper's four variants) and write its report; returns the run's Results (what
    results.json holds).

    dataset: None (the configured --dataset), or your data (see as_dataset); model: None (the configured
    --arch), a factory called as model(in_channels=C, num_classes=K), or an nn.Module (every seed starts
    from its weights); classes: names for your labels."""
    data = as_dataset(dataset, classes) if dataset is not None else None
    results = run_study(cfg or StudyConfig(), dataset=data, observer=observer, model=model, finish=add_claims)
    write_report(results, RunPaths(Path(results.output_dir)))
    return results


def compress(model: Any = None, dataset: Any = None, targets: dict[str, Sequence[str]] | None = None,
             cfg: StudyConfig | None = None, out: str | Path = "runs/compress", observer: Observer | None = None,
             classes: Sequence[str] | None = None, **settings: Any) -> dict[str, Any]:
    """Compress a trained network to budgets and write its files and report to `out`; returns what results.json
    holds.

    model: a trained nn.Module (its `input_shape` (C, H, W) set, or taken from the data), or None with
    cfg.model.weights (a file) and cfg.model.arch; dataset: None (cfg's --dataset) or your data (see as_dataset);
    targets: {"macs": ["0.5x"], "params": [...], "bytes": [...], "latency": [...]}; settings: CompressSpec's
    fields (format, bench_batch, bench_threads, distill, mixup_alpha)."""
    from .explore.compress import compress_spec, run_compress

    spec = compress_spec({**settings, **{f"target_{k}": list(v) for k, v in (targets or {}).items()}}, "compress()")
    data = as_dataset(dataset, classes) if dataset is not None else None
    return run_compress(cfg or StudyConfig(), spec, Path(out), model=model, dataset=data, observer=observer)
