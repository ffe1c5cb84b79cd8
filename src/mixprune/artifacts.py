"""The deployable files mixprune writes per model, and which accuracy each one is shown with.

    for kind, label in ARTIFACTS: metrics.get(f"size_bytes_{kind}")
    artifact_accuracy(per_seed_metrics_or_summary, "fp16")
"""

from __future__ import annotations

from typing import Any

ARTIFACTS = (("fp32", "fp32 safetensors"), ("fp16", "fp16 safetensors"), ("sparse", "sparse, fp16 values"),
             ("sparse_int8", "sparse, int8 values"), ("slim", "slimmed fp32"), ("onnx", "ONNX fp32"),
             ("onnx_int8", "ONNX int8 (static, QDQ)"))


def artifact_accuracy(entry: dict, kind: str) -> Any:
    """Accuracy to show for an artifact (per-seed metrics or a summary): its decoded-file accuracy where it is
    lossy, ONNX Runtime's for the ONNX file, else the model's own."""
    for key in (f"test_accuracy_{kind}", "onnx_test_accuracy" if kind == "onnx" else "test_accuracy"):
        if entry.get(key) is not None:
            return entry[key]
    return None
