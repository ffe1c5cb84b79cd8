"""Measuring one trained model: test metrics, counts, robustness, deployable files and latency.

    metrics = measure(cfg, trained, data, paths, "pruned", seed)   # writes models/pruned-seed0.* as it goes
    latency = measure_latency(cfg, {"pruned-seed0": trained.model})   # {label: figures}, once per distinct computation

Every figure is measured here from the model or from the file it was written to: lossy files are
decoded back into a model and scored on the evaluation split, ONNX files in ONNX Runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.structured import removed_any, slim_network
from ..core.config import StudyConfig
from ..core.paths import RunPaths
from ..core.runtime import available_cores, generator
from ..data.prepare import Tensors
from ..deploy.encodings import BY_KIND, ENCODINGS
from ..deploy.files import gzip_size, load_model, save_safetensors
from ..deploy.fingerprint import computation_key, weights_digest
from ..deploy.onnx import export_onnx, quantize_onnx_int8, verify_onnx
from ..deploy.timing import latency_ms
from ..models import (
    count_nonzero,
    count_params,
    describe,
    effective_macs,
    evaluate_loss_accuracy,
    layer_sparsity,
    macs_per_image,
    predict,
    weight_sparsity,
)
from .evaluation import classification_metrics, expected_calibration_error, fgsm_accuracy, noise_accuracy
from .jobs import Trained

ONNX_MIN_AGREEMENT, ONNX_MAX_ACC_DIFF = 0.999, 0.05  # ONNX Runtime vs PyTorch on the test split (points)
CALIBRATION_IMAGES = 1000  # first training images, for int8 activation ranges
NOISE_SIGMA, FGSM_EPSILON = 0.3, 0.05  # in normalized input units (the paper's inputs span [-1, 1])


def shape_record(small: nn.Module) -> dict[str, Any]:
    """What slimming kept, as the network's description says it: LeNet-5's four widths, or per channel group of any
    other network the channels removed."""
    desc = describe(small)
    return {"widths": desc["widths"]} if "widths" in desc else {"pruned_channels": desc.get("pruned_channels", {})}


def _time_latency(cfg: StudyConfig, model: nn.Module, small: nn.Module | None) -> dict[str, Any]:
    threads = cfg.threads or available_cores()
    cpu_model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    out: dict[str, Any] = {f"latency_ms_batch{b}": latency_ms(cpu_model, b, cfg.bench.min_run_time, threads,
                                                              adaptive=True) for b in (1, 256)}
    if small is not None:
        out.update({f"latency_ms_slim_batch{b}": latency_ms(small, b, cfg.bench.min_run_time, threads, adaptive=True)
                    for b in (1, 256)})
    return {**out, "latency_device": "cpu", "latency_threads": threads}


def measure_latency(cfg: StudyConfig, models: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """CPU latency at batch 1 and 256 (and of the slimmed network, where slimming removes units) with --threads
    threads or all cores, per model label; timed once per distinct computation (computation_key of the model
    and of its slimmed network): models that run the same kernels on the same shapes share the figure, and
    `latency_measured_on` names the model that was timed."""
    timed: dict[tuple[str, str | None], tuple[str, dict[str, Any]]] = {}
    out = {}
    for label, model in models.items():
        small = slim_network(model)
        smaller = removed_any(model, small)
        key = (computation_key(model), computation_key(small) if smaller else None)
        if key not in timed:
            timed[key] = (label, _time_latency(cfg, model, small if smaller else None))
        first, figures = timed[key]
        out[label] = {**figures, "latency_measured_on": first}
    return out


Loader = Callable[[Path], nn.Module]  # a model file -> the model it holds (deploy.files.load_model by default)


def measure(cfg: StudyConfig, trained: Trained, data: Tensors, paths: RunPaths, name: str, seed: int,
            num_classes: int, load: Loader = load_model, graphs: Path | None = None) -> dict[str, Any]:
    """Every metric of one model but latency: test metrics, counts, file sizes (the files are written here).
    `load` decodes the lossy files for scoring (a user's network needs its own structure to load into);
    `graphs` holds ONNX files exported for other models of the run (deploy.onnx.export_template)."""
    model = trained.model.eval()
    logits = predict(model, data.test_x, cfg.train.eval_batch_size)
    metrics = classification_metrics(logits, data.test_y, num_classes)
    total, nonzero = count_params(model), count_nonzero(model)
    metrics.update(params_total=total, params_nonzero=nonzero, sparsity=weight_sparsity(model),
                   layer_sparsity=layer_sparsity(model),
                   compression_ratio=total / nonzero, param_reduction=1.0 - nonzero / total,
                   train_seconds=sum(r.seconds for r in trained.history),
                   macs_dense=macs_per_image(model), **trained.extra)
    last = [r.test_accuracy for r in trained.history[-3:]]
    if last:
        metrics["test_accuracy_range_last3"] = max(last) - min(last)
    small = slim_network(model)
    metrics.update(params_present=count_params(small), macs_slim=macs_per_image(small),
                   macs_effective=effective_macs(model), **shape_record(small))
    if cfg.bench.quick:  # training and accuracy only: the model's file, nothing derived from it
        path = paths.model_file(name, seed, "safetensors")
        metrics.update(size_bytes_fp32=save_safetensors(model, path), gzip_bytes_fp32=gzip_size(path))
        return metrics
    metrics.update(robustness(model, logits, data, seed))
    metrics.update(write_artifacts(cfg, model, small, logits, data, paths, name, seed, load, graphs))
    return metrics


def robustness(model: nn.Module, logits: torch.Tensor, data: Tensors, seed: int) -> dict[str, float]:
    """Calibration and robustness on the test split: ECE, accuracy under Gaussian noise and under FGSM
    (adversarial inputs clipped to the normalized range of valid pixels)."""
    bounds = data.test_x.value_range() if hasattr(data.test_x, "value_range") else (-1.0, 1.0)
    return {"ece": expected_calibration_error(logits, data.test_y),
            "noise_accuracy": noise_accuracy(model, data.test_x, data.test_y, NOISE_SIGMA, generator(seed, "noise")),
            "fgsm_accuracy": fgsm_accuracy(model, data.test_x, data.test_y, FGSM_EPSILON, bounds=bounds)}


def write_artifacts(cfg: StudyConfig, model: nn.Module, small: nn.Module, logits: torch.Tensor, data: Tensors,
                    paths: RunPaths, name: str, seed: int, load: Loader = load_model,
                    graphs: Path | None = None) -> dict[str, Any]:
    """Write every deployable file of one model (deploy.encodings.ENCODINGS) and measure each: bytes, gzip bytes,
    and for lossy encodings the test accuracy of the model decoded back from the file. The slimmed file is
    written where slimming removed anything; the ONNX files hold the slimmed network there, else the model."""
    out: dict[str, Any] = {}
    scored: dict[str, float] = {}  # decoded weights -> accuracy: files that decode to the same model are scored once

    def record(kind: str, path: Path, size: int, decoded: bool) -> None:
        out[f"size_bytes_{kind}"] = size
        out[f"gzip_bytes_{kind}"] = gzip_size(path)
        if decoded:
            model_back = load(path).to(device=data.test_y.device)
            key = weights_digest(model_back)
            if key not in scored:
                scored[key] = evaluate_loss_accuracy(model_back, data.test_x, data.test_y,
                                                     cfg.train.eval_batch_size)[1]
            out[f"test_accuracy_{kind}"] = scored[key]

    smaller = removed_any(model, small)
    for enc in ENCODINGS:
        if enc.write is None or (enc.network == "slimmed" and not smaller):
            continue
        path = paths.model_file(name, seed, enc.suffix)
        record(enc.kind, path, enc.write(small if enc.network == "slimmed" else model, path), enc.decoded)
    if cfg.bench.onnx:
        out["onnx_network"] = "slimmed" if smaller else "as trained"
        onnx, int8 = (paths.model_file(name, seed, BY_KIND[k].suffix) for k in ("onnx", "onnx_int8"))
        out.update(onnx_artifacts(small if smaller else model, logits, data, onnx, int8, record, graphs))
    return out


def onnx_artifacts(model: nn.Module, logits: torch.Tensor, data: Tensors, onnx_path: Path, int8_path: Path,
                   record: Any, graphs: Path | None = None) -> dict[str, Any]:
    """The ONNX file and its static int8 twin, each verified in ONNX Runtime against PyTorch's logits."""
    test_x = data.test_x[:]  # normalized, as ONNX Runtime receives inputs
    record("onnx", onnx_path, export_onnx(model, onnx_path, graphs), False)
    out: dict[str, Any] = verify_onnx(onnx_path, logits, test_x, data.test_y)
    out["onnx_verified"] = (out["onnx_prediction_agreement"] >= ONNX_MIN_AGREEMENT and
                            abs(out["onnx_test_accuracy"] - 100.0 * (logits.argmax(1) == data.test_y).double()
                                .mean().item()) <= ONNX_MAX_ACC_DIFF)
    calibration = data.train_x[:CALIBRATION_IMAGES]
    record("onnx_int8", int8_path, quantize_onnx_int8(onnx_path, int8_path, calibration), False)
    check = verify_onnx(int8_path, logits, test_x, data.test_y)
    out.update(test_accuracy_onnx_int8=check["onnx_test_accuracy"],
               onnx_int8_prediction_agreement=check["onnx_prediction_agreement"])
    return out
