"""Learning-rate schedules, one value per epoch (timm's default granularity, which keeps one CUDA graph per LR).

    lr = lr_schedule("step", peak=0.01, epochs=10, decay_epoch=8, decay_factor=0.1)   # the paper's
    lr(0), lr(9)                                                                      # 0.01, 0.001
    lr_schedule("cosine", 0.05, 40, warmup=2)                                         # warm-up, then cosine
"""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_steps(base: float, decay_epoch: int, factor: float) -> Callable[[int], float]:
    """Step schedule: base for epochs [0, decay_epoch), base * factor afterwards (paper: 0.01 -> 0.001 at 8)."""
    return lambda epoch: base if epoch < decay_epoch else base * factor


def constant_lr(value: float) -> Callable[[int], float]:
    return lambda epoch: value


def cosine_lr(peak: float, epochs: int, floor: float = 0.0) -> Callable[[int], float]:
    """Cosine annealing per epoch: peak at epoch 0, approaching `floor` at the last epoch's end."""
    return lambda epoch: floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def onecycle_lr(peak: float, epochs: int, rise: float = 0.3) -> Callable[[int], float]:
    """One-cycle (Smith & Topin 2019) per epoch, torch.optim.lr_scheduler.OneCycleLR's shape and defaults: a
    linear ramp from peak/25 to peak over the first `rise` of the epochs, then cosine down to peak/25e4."""
    up = max(1, round(rise * epochs))
    start, end = peak / 25.0, peak / 25e4

    def lr(epoch: int) -> float:
        if epoch < up:
            return start + (peak - start) * epoch / up
        return cosine_lr(peak, max(epochs - up, 1), end)(epoch - up)
    return lr


def warmed_up(schedule: Callable[[int], float], peak: float, warmup: int) -> Callable[[int], float]:
    """`warmup` epochs of linear warm-up (epoch e at peak * (e + 1) / (warmup + 1)), then `schedule` from its
    epoch 0; no warm-up returns `schedule` itself."""
    if warmup == 0:
        return schedule
    return lambda epoch: peak * (epoch + 1) / (warmup + 1) if epoch < warmup else schedule(epoch - warmup)


SCHEDULES = ("step", "cosine", "onecycle")


def lr_schedule(kind: str, peak: float, epochs: int, warmup: int = 0, decay_epoch: int = 0,
                decay_factor: float = 1.0) -> Callable[[int], float]:
    """The per-epoch LR of one training phase: `kind` (SCHEDULES) over `epochs` epochs, the first `warmup` of
    them warming up. step: peak, times decay_factor from decay_epoch on (counted from the start)."""
    if kind == "step":
        return warmed_up(lr_steps(peak, decay_epoch - warmup, decay_factor), peak, warmup)
    if kind == "cosine":
        return warmed_up(cosine_lr(peak, epochs - warmup), peak, warmup)
    if kind == "onecycle":
        return warmed_up(onecycle_lr(peak, epochs - warmup), peak, warmup)
    raise ValueError(f"unknown LR schedule {kind!r}; known: {', '.join(SCHEDULES)}")
