"""Helpers shared by tests: tiny synthetic IDX files and image folders, structured pruning in one call, the CLI in a
subprocess and its one-line errors."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from mixprune.data import FASHION_MNIST

TINY = dataclasses.replace(FASHION_MNIST, counts={"train": 40, "test": 20}, sha256=None)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic (0x08 = ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    """Four IDX files of random images with labels cycling 0-9."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, arr in arrays.items():
        data = idx_bytes(np.asarray(arr))
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def structurally_pruned(model, conv_amount: float, fc_amount: float, **kw):
    """model with round(amount * n) channels of every group masked (structured.py) and made permanent; returns
    (model, {group: bool kept})."""
    from mixprune.compress.pruning import make_permanent
    from mixprune.compress.structured import (
        attach_unit_masks,
        ratios_for,
        structured_keep,
        unit_groups,
        unit_masks,
    )

    groups = unit_groups(model)
    keep = structured_keep(model, groups, ratios_for(groups, conv_amount, fc_amount), **kw)
    attach_unit_masks(model, unit_masks(model, groups, keep))
    return make_permanent(model), keep


def write_pngs(directory, classes=("cat", "dog", "owl"), n=4, size=(12, 10), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (directory / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(directory / c / f"{i}.png")
    return directory


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mixprune", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def assert_one_line_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


HELD_MODEL = '''"""LeNet-5 whose fine-tuning (a pruned copy: masks attached) waits until the file GO exists (10 minutes at
most): a run that a test interrupts there has provably finished its dense models."""
import os
import time

from mixprune.models.lenet5 import LeNet5

GO = {go!r}


class Held(LeNet5):
    def forward(self, x):
        deadline = time.monotonic() + 600
        while self.training and hasattr(self.conv1, "weight_mask") and time.monotonic() < deadline \\
                and not os.path.exists(GO):
            time.sleep(0.05)
        return super().forward(x)


def build(in_channels, num_classes):
    return Held(in_channels=in_channels, num_classes=num_classes)
'''


def held_model(directory: Path) -> tuple[str, Path]:
    """(--arch of a LeNet-5 whose fine-tuning waits for a file, that file's path: absent until the test creates it).
    The path is written into the factory file, so that processes that do not share the test's environment (Ray's
    workers) wait for it too."""
    directory.mkdir(parents=True, exist_ok=True)
    go = directory / "go"
    (directory / "held.py").write_text(HELD_MODEL.format(go=str(go)))
    return f"{directory / 'held.py'}:build", go


def wait_for(predicate, what: str, seconds: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `predicate` until it holds; AssertionError naming `what` after `seconds`, or once `proc` has ended."""
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"the process ended before {what}: {proc.returncode}"
        time.sleep(0.1)


def recorded(out: Path) -> set[tuple[str, str]]:
    """(variant, seed) of every model results.json in `out` records ({} while there is none, or it is being
    replaced)."""
    import json

    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return set()
    return {(n, s) for n, e in results["models"].items() for s in e["seeds"]}
