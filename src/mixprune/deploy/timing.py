"""Timing a forward pass: torch.utils.benchmark after warm-up, median and IQR in milliseconds.

    time_ms(fn, threads=1, min_run_time=0.3)               # any callable: {"median_ms", "iqr_ms"}
    latency_ms(model, batch=1, min_run_time=0.5)           # a model on zeros of its input shape
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.logs import quiet
from ..models import example_input

ADAPTIVE_IQR, ADAPTIVE_MIN_SECONDS = 0.05, 0.1  # adaptive timing stops once IQR <= 5% of the median, after >= 0.1 s


def time_ms(fn: Callable[[], Any], threads: int, min_run_time: float, adaptive: bool = False) -> dict[str, float]:
    """Median and IQR in milliseconds of fn(), torch.utils.benchmark blocked runs after 5 warm-up calls: for
    min_run_time seconds, or (adaptive) until the IQR is within ADAPTIVE_IQR of the median, at least
    ADAPTIVE_MIN_SECONDS and at most min_run_time seconds (LeNet-5: 0.13-0.16 s instead of 0.54-0.87 s, medians
    within 0.5% of the blocked ones; benchmarks/last-run-profile.txt)."""
    with quiet("torch.utils.cpp_extension"):  # imported by benchmark; warns about CUDA_HOME on CPU machines
        from torch.utils import benchmark

    for _ in range(5):
        fn()  # warm-up: allocator, lazy kernel selection
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    if adaptive:
        m = timer.adaptive_autorange(threshold=ADAPTIVE_IQR, min_run_time=min(ADAPTIVE_MIN_SECONDS, min_run_time),
                                     max_run_time=min_run_time)
    else:
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3}


def latency_ms(model: nn.Module, batch: int, min_run_time: float = 0.5, threads: int | None = None,
               device: torch.device | str = "cpu", adaptive: bool = False) -> float:
    """Median milliseconds per forward pass of `batch` inputs, torch.utils.benchmark after warm-up (time_ms)."""
    model = model.eval().to(device)
    x = example_input(model, batch)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return time_ms(run, threads or torch.get_num_threads(), min_run_time, adaptive)["median_ms"]
