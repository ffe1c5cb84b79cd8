"""The one table of file encodings: every file mixprune writes per model, how it is written, how reports name it,
which accuracy it is shown with, and its name among `mixprune search`'s candidates.

    for enc in ENCODINGS: metrics.get(f"size_bytes_{enc.kind}"), enc.label, enc.suffix
    artifact_accuracy(per_seed_metrics_or_summary, "fp16")       # the accuracy of the model decoded from the file
    SEARCHABLE["sparse_int8"].accuracy                           # what search ranks that encoding by

A new encoding is one row here; measure (study.measure) writes and scores every row, reports list them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import save_safetensors, save_sparse


@dataclass(frozen=True)
class Encoding:
    kind: str  # metrics size_bytes_{kind} and gzip_bytes_{kind}
    label: str  # how reports name the file
    suffix: str  # models/{name}-seed{S}.{suffix}
    network: str  # what the file holds: "model" (as trained), "slimmed" (only where slimming removes anything) or
    # "deployed" (the slimmed network where slimming removes anything, else the model)
    accuracy: str  # the metric holding the accuracy of the model decoded from the file
    search: str | None = None  # its name among `mixprune search`'s encodings; None: not a search candidate
    write: Callable[[nn.Module, Path], int] | None = None  # writes the file, returns its bytes; None: the ONNX step
    fallback: bool = True  # results without `accuracy` (older ones) show the model's own test accuracy

    @property
    def decoded(self) -> bool:
        """Whether the file is decoded back into a PyTorch model and scored (lossy safetensors encodings)."""
        return self.write is not None and self.accuracy != "test_accuracy"


ENCODINGS = (
    Encoding("fp32", "fp32 safetensors", "safetensors", "model", "test_accuracy",
             write=lambda m, p: save_safetensors(m, p)),
    Encoding("fp16", "fp16 safetensors", "fp16.safetensors", "model", "test_accuracy_fp16", "fp16",
             lambda m, p: save_safetensors(m, p, torch.float16)),
    Encoding("sparse", "sparse, fp16 values", "sparse.safetensors", "model", "test_accuracy_sparse", "sparse_fp16",
             lambda m, p: save_sparse(m, p, "fp16")),
    Encoding("sparse_int8", "sparse, int8 values", "sparse-int8.safetensors", "model", "test_accuracy_sparse_int8",
             "sparse_int8", lambda m, p: save_sparse(m, p, "int8")),
    Encoding("slim", "slimmed fp32", "slim.safetensors", "slimmed", "test_accuracy_slim",
             write=lambda m, p: save_safetensors(m, p)),
    Encoding("onnx", "ONNX fp32", "onnx", "deployed", "onnx_test_accuracy", "onnx_fp32", fallback=False),
    Encoding("onnx_int8", "ONNX int8 (static, QDQ)", "int8.onnx", "deployed", "test_accuracy_onnx_int8", "onnx_int8"),
)
BY_KIND = {e.kind: e for e in ENCODINGS}
SEARCHABLE = {e.search: e for e in ENCODINGS if e.search}


def artifact_accuracy(entry: dict, kind: str) -> Any:
    """Accuracy to show for an artifact (per-seed metrics or a summary): its decoded-file accuracy where it is
    lossy, ONNX Runtime's for the ONNX file, else the model's own."""
    enc = BY_KIND[kind]
    for key in (enc.accuracy, "test_accuracy") if enc.fallback else (enc.accuracy,):
        if entry.get(key) is not None:
            return entry[key]
    return None
