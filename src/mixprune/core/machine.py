"""Facts about the machine and software a run used, recorded with every result."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("mixprune", "torch", "torchvision", "numpy", "safetensors", "rich", "onnx", "onnxruntime",
            "scikit-learn", "pillow", "timm", "torch-pruning")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded with every result."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "processor": cpu_name(), "torch_threads": torch.get_num_threads(),
           "device": str(device), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    env["versions"] = {p: _version(p) for p in PACKAGES}
    env["versions"]["torch_build"] = torch.__version__  # e.g. 2.14.1+cu130: says which wheel ran
    env["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["determinism_note"] = ("CUDA: cuDNN may choose non-deterministic convolution kernels and index_add/"
                                   "scatter backward passes use atomics, so reruns can differ in the last digits")
    return env
