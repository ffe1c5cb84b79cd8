"""Where and how a run computes: named random streams, the device, the memory layout, the cores it may use.

    gen = generator(seed, "order")          # a CPU torch.Generator for one named stream of a seed
    device = resolve_device("auto")         # cuda when available, else cpu; ConfigError for cuda without a GPU
    fmt = memory_format(device)             # channels_last on the CPU
    available_cores()                       # cores this process may run on
"""

from __future__ import annotations

import hashlib
import os

import torch

from .errors import ConfigError


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of a run ('init', 'order', 'mixup', ...)."""
    digest = hashlib.sha256(f"mixprune:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named stream; index tensors are drawn on the CPU and moved."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU, where it measured ~10% faster for this net (oneDNN's NHWC kernels)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
