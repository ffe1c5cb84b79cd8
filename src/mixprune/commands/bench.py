"""`mixprune bench`: how fast each form of a model really runs, and whether sparsity helps at all.

    rows, verdicts = bench_model(load_model("runs/x/models/pruned-seed0.safetensors"), batches=(1, 32, 256),
                                 threads=(1, 2), min_run_time=0.3)

Variants of one model, each timed with torch.utils.benchmark (warm-up, then median and IQR of blocked
runs) at every batch size and thread count:
- `eager dense`: PyTorch eager on the weights as stored (the masked model: zeros are still multiplied);
- `eager slimmed` / `ORT slimmed`: the physically smaller network (structured.slim_network, any
  architecture), when slimming removes anything;
- `eager CSR FC`: LeNet-5's FC layers through torch's CSR sparse matmul (convolutions stay dense);
- `ORT fp32` / `ORT int8`: ONNX Runtime on the CPU, int8 by static QDQ quantization calibrated on training
  images (given, or a run's own int8 file).
MACs come from torch.utils.flop_counter (dense and slimmed) and from nonzero weights (effective).
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..compress.structured import removed_any, slim_network
from ..core.config import load_config_file
from ..core.errors import ConfigError, MixpruneError, ModelFileError
from ..core.paths import RunPaths
from ..core.runtime import available_cores
from ..data.dataset import memory_budget
from ..data.prepare import prepare_dataset, prepare_tensors
from ..deploy.files import load_model
from ..deploy.onnx import export_onnx, ort_session, quantize_onnx_int8
from ..deploy.timing import time_ms
from ..models import LeNet5, effective_macs, input_shape, macs_per_image
from ..study.measure import CALIBRATION_IMAGES
from ..study.results import Results
from ..study.variants import Design


class CsrLinearLeNet(nn.Module):
    """LeNet5 whose FC layers multiply with CSR sparse weights (torch.sparse); convolutions stay dense."""

    def __init__(self, model: LeNet5):
        super().__init__()
        self.conv1, self.conv2 = copy.deepcopy(model.conv1), copy.deepcopy(model.conv2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
            self.fcs = [(m.weight.detach().to_sparse_csr(), m.bias.detach()) for m in (model.fc1, model.fc2, model.fc3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(F.max_pool2d(F.relu(self.conv2(x)), 2), 1)
        for i, (w, b) in enumerate(self.fcs):
            x = torch.sparse.mm(w, x.t()).t() + b  # [out, in] @ [in, B] -> [B, out]
            if i < 2:
                x = F.relu(x)
        return x


def _torch_runner(model: nn.Module, batch: int, shape: tuple[int, int, int]) -> Callable[[], Any]:
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))

    def run() -> Any:
        with torch.inference_mode():
            return model(x)
    return run


def _ort_runner(path: Path, batch: int, threads: int, shape: tuple[int, int, int]) -> Callable[[], Any]:
    session = ort_session(path, threads)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).numpy()
    return lambda: session.run(["logits"], {"input": x})


INT8_OF = {"ORT fp32": "ORT int8", "ORT slimmed": "ORT int8 slimmed"}  # each fp32 variant's static int8 twin


def bench_model(model: nn.Module, batches: tuple[int, ...] = (1, 32, 256), threads: tuple[int, ...] | None = None,
                min_run_time: float = 0.3, calibration_x: torch.Tensor | None = None,
                int8_path: Path | None = None, int8_network: str = "as stored"
                ) -> tuple[list[dict[str, Any]], list[str], dict[str, int]]:
    """Latency rows (variant, batch, threads, median_ms, iqr_ms), one-line verdicts and MAC counts, for any
    network. Inputs have the model's input shape. The slimmed variants appear where slimming removes anything
    (structured.slim_network); int8 where calibration images are given (both networks quantized) or a run's
    int8 file is (`int8_network` says which network it holds); the CSR and 2:4 variants are LeNet-5's."""
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    shape = input_shape(model)
    need, budget = max(batches) * math.prod(shape) * 4, memory_budget()
    if need > budget:
        raise ConfigError(f"--batches {max(batches)}: a batch of {max(batches)} inputs of {list(shape)} takes "
                          f"{need / 2**30:.1f} GiB as floats, more than the {budget / 2**30:.1f} GiB of memory at hand; "
                          "choose smaller batches")
    threads = threads or tuple(sorted({1, available_cores()}))
    lenet = isinstance(model, LeNet5)
    small = slim_network(model)
    smaller = removed_any(model, small)
    macs = {"dense": macs_per_image(model), "effective": effective_macs(model), "slimmed": macs_per_image(small)}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_files = {"ORT fp32": Path(tmp) / "m.onnx"}
        export_onnx(model, onnx_files["ORT fp32"])
        variants: dict[str, Callable[[int, int], Callable[[], Any]]] = {
            "eager dense": lambda b, t: _torch_runner(model, b, shape)}
        if lenet:
            variants["eager CSR FC"] = lambda b, t: _torch_runner(CsrLinearLeNet(model), b, shape)
        if smaller:
            variants["eager slimmed"] = lambda b, t: _torch_runner(small, b, shape)
            onnx_files["ORT slimmed"] = Path(tmp) / "slim.onnx"
            export_onnx(small, onnx_files["ORT slimmed"])
        if calibration_x is not None:
            for label, fp32 in list(onnx_files.items()):
                quantized = fp32.with_suffix(".int8.onnx")
                quantize_onnx_int8(fp32, quantized, calibration_x)
                onnx_files[INT8_OF[label]] = quantized
        elif int8_path is not None:
            onnx_files["ORT int8 slimmed" if int8_network == "slimmed" else "ORT int8"] = int8_path
        for label, path in onnx_files.items():
            variants[label] = _ort_maker(path, shape)
        rows = [{"variant": v, "batch": b, "threads": t, **time_ms(make(b, t), t, min_run_time)}
                for v, make in variants.items() for t in threads for b in batches]
    widths = (model.widths, small.widths) if lenet else (None, None)
    lines = verdicts(rows, macs, *widths, smaller=smaller)
    if not lenet:
        return rows, lines, macs
    gpu_rows, gpu_line = semi_structured_gpu(model, min_run_time=min_run_time)
    return rows + gpu_rows, lines + [gpu_line], macs


def _ort_maker(path: Path, shape: tuple[int, int, int]) -> Callable[[int, int], Callable[[], Any]]:
    """A maker of ONNX Runtime runners for one file (batch, threads -> runner)."""
    def make(batch: int, threads: int) -> Callable[[], Any]:
        return _ort_runner(path, batch, threads, shape)
    return make


def _lookup(rows: list[dict[str, Any]], variant: str, batch: int, threads: int) -> float | None:
    for r in rows:
        if (r["variant"], r["batch"], r["threads"]) == (variant, batch, threads):
            return r["median_ms"]
    return None


def verdicts(rows: list[dict[str, Any]], macs: dict[str, int], widths: tuple | None = None,
             slim_widths: tuple | None = None, smaller: bool = False) -> list[str]:
    """Plain sentences from the measured rows (largest batch, one thread, unless stated)."""
    b, t = max(r["batch"] for r in rows), 1
    dense = _lookup(rows, "eager dense", b, t)
    out = []
    csr = _lookup(rows, "eager CSR FC", b, t)
    if dense and csr:
        word = "slower" if csr > dense else "faster"
        ratio = csr / dense if csr > dense else dense / csr
        out.append(f"torch CSR sparse kernels for the FC layers: {ratio:.2f}x {word} than dense at batch {b}, "
                   f"1 thread ({macs['effective'] / macs['dense']:.0%} of the dense MACs touch nonzero weights).")
    slim_ms, ort_ms, ort_slim_ms = (_lookup(rows, v, b, t) for v in ("eager slimmed", "ORT fp32", "ORT slimmed"))
    if slim_ms and dense:
        shapes = f"{widths} -> {slim_widths}" if widths else "(the pruned channels removed)"
        line = (f"slimmed {shapes}: {macs['dense'] / macs['slimmed']:.2f}x fewer MACs, "
                f"{dense / slim_ms:.2f}x the speed of dense at batch {b}, 1 thread (eager)")
        if ort_ms and ort_slim_ms:
            line += f", {ort_ms / ort_slim_ms:.2f}x in ONNX Runtime"
        out.append(line + ".")
    elif not smaller:
        out.append("slimming does not apply: no channel, filter or neuron is pruned whole, so the dense shapes stay.")
    for batch in sorted({1, b}):
        eager, ort = _lookup(rows, "eager dense", batch, t), _lookup(rows, "ORT fp32", batch, t)
        if eager and ort:
            out.append(f"ONNX Runtime vs PyTorch eager at batch {batch}, 1 thread: {eager / ort:.2f}x "
                       f"({eager * 1e3:.0f} us -> {ort * 1e3:.0f} us).")
    for int8, fp32 in (("ORT int8", "ORT fp32"), ("ORT int8 slimmed", "ORT slimmed")):
        q, f = _lookup(rows, int8, b, t), _lookup(rows, fp32, b, t)
        if q and f:
            out.append(f"{int8} vs {fp32} at batch {b}, 1 thread: {f / q:.2f}x.")
    slower = [f"{v} ({ms / dense:.2f}x the time)" for v in dict.fromkeys(r["variant"] for r in rows)
              if v != "eager dense" and dense and (ms := _lookup(rows, v, b, t)) and ms > dense]
    if slower:
        out.append(f"Slower than eager dense at batch {b}, 1 thread: {', '.join(slower)}.")
    return out


def semi_structured_fit(model: LeNet5, dtype: torch.dtype = torch.float16) -> dict[str, str]:
    """Per FC layer: whether its weight shape meets the minimum shape multiples that torch's 2:4 (CUTLASS)
    semi-structured tensors check for `dtype` (read from torch itself)."""
    from torch.sparse.semi_structured import SparseSemiStructuredTensorCUTLASS as Cutlass

    c = Cutlass._DTYPE_SHAPE_CONSTRAINTS[dtype]
    out = {}
    for name in ("fc1", "fc2", "fc3"):
        rows, cols = getattr(model, name).weight.shape
        ok = rows >= c.sparse_min_rows and rows % c.sparse_min_rows == 0 and cols >= c.sparse_min_cols \
            and cols % c.sparse_min_cols == 0
        out[name] = f"{rows}x{cols} {'qualifies' if ok else 'does not qualify'} (needs multiples of " \
                    f"{c.sparse_min_rows}x{c.sparse_min_cols})"
    return out


def semi_structured_statement(model: LeNet5 | None = None) -> str:
    """Why torch's 2:4 semi-structured kernels are or are not measured for this network here."""
    shapes = "; ".join(f"{n} {v}" for n, v in semi_structured_fit(model or LeNet5()).items())
    if not torch.cuda.is_available():
        return ("2:4 semi-structured kernels: not measured: torch runs them only on CUDA devices and this machine "
                f"has none. Shapes for fp16: {shapes}; convolutions are not supported at all.")
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return "2:4 semi-structured kernels: not measured: this GPU is older than compute capability 8.0."
    return (f"2:4 semi-structured kernels: as stored, no FC layer qualifies for fp16 ({shapes}); "
            "see the padded GPU measurement.")


def is_2to4(w: torch.Tensor) -> bool:
    """True when every run of 4 consecutive inputs of every row holds at most 2 nonzeros."""
    return w.shape[1] % 4 == 0 and bool(((w != 0).view(w.shape[0], -1, 4).sum(2) <= 2).all())


def _roundup(n: int, k: int) -> int:
    return -(-n // k) * k


def _padded_fc_chain(model: LeNet5, multiple: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """FC weights/biases zero-padded on the GPU so every dimension is a multiple of `multiple` (fp16).
    Zero rows/columns keep the 2:4 pattern and do not change the real outputs."""
    out, cols = [], None
    for name in ("fc1", "fc2", "fc3"):
        w, b = getattr(model, name).weight.detach(), getattr(model, name).bias.detach()
        rows_p, cols_p = _roundup(w.shape[0], multiple), cols or _roundup(w.shape[1], multiple)
        wp = torch.zeros(rows_p, cols_p, dtype=torch.float16, device="cuda")
        wp[:w.shape[0], :w.shape[1]] = w
        bp = torch.zeros(rows_p, dtype=torch.float16, device="cuda")
        bp[:len(b)] = b
        out.append((wp, bp))
        cols = rows_p  # the next layer reads this layer's padded outputs
    return out


def _fc_forward(layers: list[tuple[Any, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        x = F.linear(x, w, b)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x


def semi_structured_gpu(model: LeNet5, batches: tuple[int, ...] = (32, 256, 4096),
                        min_run_time: float = 0.3) -> tuple[list[dict[str, Any]], str]:
    """On a CUDA GPU of compute capability >= 8.0, the FC stack of a 2:4-pruned model (fp16) through torch's
    semi-structured kernels against the same dense fp16 matmuls. LeNet's FC shapes are below the kernels'
    minimum multiples, so both sides are zero-padded to qualify (stated in the verdict). Returns (rows, verdict);
    no rows, and the reason, where it cannot run."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return [], semi_structured_statement(model)
    weights = [getattr(model, n).weight.detach() for n in ("fc1", "fc2", "fc3")]
    if not all(is_2to4(w) for w in weights):
        return [], ("2:4 semi-structured kernels: not measured for this model: its FC weights are not 2:4 sparse "
                    "(train with --prune-method 2:4).")
    from torch.sparse import to_sparse_semi_structured
    from torch.sparse.semi_structured import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    multiple = max(c for cls in (SparseSemiStructuredTensorCUTLASS, SparseSemiStructuredTensorCUSPARSELT)
                   for c in (cls._DTYPE_SHAPE_CONSTRAINTS[torch.float16].sparse_min_rows,
                             cls._DTYPE_SHAPE_CONSTRAINTS[torch.float16].sparse_min_cols))
    dense = _padded_fc_chain(copy.deepcopy(model).cuda(), multiple)
    try:
        sparse = [(to_sparse_semi_structured(w), b) for w, b in dense]
    except (RuntimeError, ValueError) as exc:
        return [], f"2:4 semi-structured kernels: torch refused the padded weights: {str(exc).splitlines()[0]}"
    rows, speed = [], []
    for batch in batches:
        x = torch.randn(_roundup(batch, multiple), dense[0][0].shape[1], dtype=torch.float16, device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0))
        with torch.inference_mode():
            diff = (_fc_forward(sparse, x) - _fc_forward(dense, x)).abs().max().item()
        for variant, layers in (("GPU fp16 dense FC (padded)", dense), ("GPU fp16 2:4 FC (padded)", sparse)):
            def run(layers=layers, x=x):
                with torch.inference_mode():
                    return _fc_forward(layers, x)
            rows.append({"variant": variant, "batch": batch, "threads": 1, "max_abs_diff": diff,
                         **time_ms(run, 1, min_run_time)})
        speed.append(f"batch {batch}: {rows[-2]['median_ms'] / rows[-1]['median_ms']:.2f}x")
    shapes = " -> ".join(f"{tuple(w.shape)}" for w, _ in dense)
    return rows, (f"2:4 semi-structured kernels on {torch.cuda.get_device_name()} (FC layers zero-padded to {shapes}, "
                  f"fp16; dense/2:4 time ratio, >1 means 2:4 is faster): {', '.join(speed)}; max |difference| "
                  f"{max(r['max_abs_diff'] for r in rows):.2g}.")


Target = tuple[Path, Path | None, str]  # (fp32 model file, int8 ONNX file or None, the network the int8 file holds)


def bench_targets(path: Path, seed: int | None = None) -> dict[str, Target]:
    """label -> (fp32 model file, int8 ONNX file or None, "slimmed" or "as stored") for a model file or a run
    directory."""
    if path.is_file():
        return {path.name: (path, None, "as stored")}
    if not path.is_dir():
        raise ModelFileError(f"{path} is neither a model file nor a run directory")
    paths = RunPaths(path)
    named = (re.fullmatch(r".+-seed(\d+)\.safetensors", p.name) for p in paths.models_dir.glob("*-seed*.safetensors"))
    seeds = sorted({int(m.group(1)) for m in named if m})  # other files (a stray copy, say) are not models of a seed
    if not seeds:
        raise ModelFileError(f"{paths.models_dir} holds no model files; pass a directory written by `mixprune reproduce`")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ModelFileError(f"{path} has no models for seed {seed}; it has seeds {seeds}")
    try:
        results: Results | None = Results.load(paths.results_json)
    except MixpruneError:  # no readable results.json: the paper's variant names
        results = None
    out = {}
    for name in (results.design if results else Design()).names:
        f = paths.model_file(name, seed, "safetensors")
        if f.is_file():
            q = paths.model_file(name, seed, "int8.onnx")
            measured = results.seeds(name).get(seed, {}) if results else {}
            network = "slimmed" if measured.get("onnx_network") == "slimmed" else "as stored"
            out[f"{name}-seed{seed}"] = (f, q if q.is_file() else None, network)
    return out


def run_calibration(run_dir: Path) -> torch.Tensor | None:
    """The calibration images a run quantized with (its first training images, normalized as it normalized
    them), re-read from the run's config; None where that data cannot be loaded here or the run's data came
    from Python code (its results then name another dataset than its config)."""
    paths = RunPaths(run_dir)
    try:
        cfg = load_config_file(paths.config_toml)
        recorded = Results.load(paths.results_json).data.get("dataset")
        ds = prepare_dataset(cfg, None)
    except (MixpruneError, OSError, ValueError, KeyError, TypeError):
        return None
    if recorded != ds.name:
        return None
    return prepare_tensors(ds, torch.device("cpu")).train_x[:CALIBRATION_IMAGES]  # as the run's measure() took them


def bench_models(targets: dict[str, Target], batches: tuple[int, ...], threads: tuple[int, ...] | None,
                 min_run_time: float, arch: str | None = None,
                 calibration_x: torch.Tensor | None = None) -> dict[str, Any]:
    """bench_model for every target (the CLI prints it, then saves it as bench.json); with calibration images,
    both the dense and the slimmed network are quantized here, else a run's own int8 file is timed."""
    import platform

    result: dict[str, Any] = {"machine": {"processor": platform.processor() or platform.machine(),
                                          "cores": available_cores(), "torch": torch.__version__},
                              "models": {}}
    for label, (model_path, int8_path, int8_network) in targets.items():
        rows, lines, macs = bench_model(load_model(model_path, arch), batches, threads, min_run_time,
                                        calibration_x=calibration_x, int8_path=int8_path, int8_network=int8_network)
        result["models"][label] = {"file": str(model_path), "rows": rows, "verdicts": lines, "macs": macs}
    return result
