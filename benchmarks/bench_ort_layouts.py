"""Benchmark: why channel pruning speeds LeNet-5 up little in ONNX Runtime on a CPU with wide vectors.

    .venv/bin/python benchmarks/bench_ort_layouts.py

For LeNet-5 at several widths (the dense one and slimmed ones), times ONNX Runtime at batch 256 on one
thread with all graph optimizations (ORT's default, which turns convolutions into its blocked NCHWc
layout) and with layout optimizations off (ORT_ENABLE_EXTENDED), and prints ONNX Runtime's own
per-operator profile of the dense and the half-width network. Not a test: nothing here asserts.
"""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mixprune.deploy.onnx import export_onnx
from mixprune.deploy.timing import time_ms
from mixprune.models import LeNet5

WIDTHS = [(6, 16, 120, 84), (4, 8, 120, 84), (3, 12, 120, 84), (3, 8, 60, 42), (3, 6, 30, 42)]
LEVELS = ("ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def session(path: Path, level: str, profile: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if profile:
        opts.enable_profiling, opts.profile_file_prefix = True, profile
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def op_profile(path: Path, x: np.ndarray, runs: int = 50) -> dict[str, int]:
    """Microseconds per run spent in each operator type (ORT's profiler, all optimizations)."""
    s = session(path, "ORT_ENABLE_ALL", str(path.parent / "profile"))
    for _ in range(runs):
        s.run(None, {"input": x})
    totals: collections.Counter = collections.Counter()
    for event in json.loads(Path(s.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    return {op: round(us / runs) for op, us in totals.most_common()}


def main() -> None:
    x = np.random.default_rng(0).standard_normal((256, 1, 28, 28)).astype(np.float32)
    base: dict[str, float] = {}
    for widths in WIDTHS:
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        export_onnx(LeNet5(widths=widths).eval(), path)
        ms = {}
        for level in LEVELS:
            s = session(path, level)
            ms[level] = time_ms(lambda s=s: s.run(None, {"input": x}), 1, 1.0)["median_ms"]
        base = base or ms
        print(f"widths {widths}: " + ", ".join(f"{lv[11:]} {ms[lv]:.3f} ms ({base[lv] / ms[lv]:.2f}x the dense speed)"
                                              for lv in LEVELS))
        if widths in (WIDTHS[0], (3, 8, 60, 42)):
            print(f"  per operator (us per batch, ALL): {op_profile(path, x)}")


if __name__ == "__main__":
    main()
