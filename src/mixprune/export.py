"""Model files and deployment measurements: safetensors (fp32, fp16, sparse), ONNX, inference latency.

    save_safetensors(model, path)                 # fp32, plain .weight/.bias tensors, metadata with widths
    save_safetensors(model, path, torch.float16)  # 16-bit copy
    save_sparse(model, path, values="fp16")       # bitmask + fp16 (or int8 + scale) nonzero values per weight
    model = load_model(path)                      # any of the three; safe (no pickle), shapes checked
    latency_ms(model, batch=1, min_run_time=0.5)  # torch.utils.benchmark median after warm-up
    export_onnx(model, path); verify_onnx(path, torch_logits, x, y)   # ONNX Runtime vs PyTorch

The sparse file stores, for each conv/FC weight, a packed bitmask of nonzero positions (1 bit per
weight, uint8) and the nonzero values in fp16 (or in int8 with one fp32 scale per tensor); every other
tensor (biases, BatchNorm's) is stored dense, floating ones in fp16. Files of the paper's LeNet-5 name
its widths in their metadata, as mixprune has always written them; any other network's files carry its
architecture as JSON (models.describe: arch, input shape, classes), from which load_model rebuilds it
through the model registry.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .atomic import atomic_path, write_bytes_atomic
from .errors import ConfigError, ModelFileError
from .models import LeNet5, describe, example_input, kind, prunable, rebuild
from .models.lenet5 import LAYERS, PAPER_INPUT
from .structured import shrink

FORMAT = "mixprune.lenet5"  # the paper's network on 1x28x28 inputs, 10 classes (files as mixprune always wrote them)
GENERIC_FORMAT = "mixprune.model"  # any network: its architecture as JSON (models.describe), rebuilt by the registry
MAX_DIM = 1 << 16  # largest input side, channel or class count a file may describe


def _metadata(model: nn.Module, encoding: str) -> dict[str, str]:
    if isinstance(model, LeNet5) and model.io == PAPER_INPUT:
        return {"format": FORMAT, "encoding": encoding, "widths": json.dumps(list(model.widths)),
                "dropout": str(float(model.dropout))}
    return {"format": GENERIC_FORMAT, "encoding": encoding, "architecture": json.dumps(describe(model))}


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict as the forward pass sees it: a pruned tensor (weight_orig * weight_mask while masks are
    attached) under its plain name, masks left out."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            key = key[:-len("_orig")]
            owner, _, name = key.rpartition(".")
            value = getattr(model.get_submodule(owner) if owner else model, name)
        out[key] = value.detach()
    return out


def _dense_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in plain_state(model).items()}


def write_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> int:
    """A safetensors file written atomically, byte for byte the same for the same tensors and metadata: the
    library writes metadata keys in a random order (a hash map), so the header's metadata is re-serialized
    sorted, at the same length. Returns the file's size."""
    blob = bytearray(save(state, metadata=metadata))
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > length:  # cannot happen (same content, other order); never write a broken file
        raise ValueError(f"re-serialized safetensors header grew from {length} to {len(text)} bytes")
    blob[8:8 + length] = text.ljust(length, b" ")
    write_bytes_atomic(path, bytes(blob))
    return path.stat().st_size


def save_safetensors(model: nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> int:
    """Write the model's weights (as the forward pass sees them) atomically; returns the file's size."""
    enc = {torch.float32: "fp32", torch.float16: "fp16"}[dtype]
    return write_safetensors(_dense_state(model, dtype), path, _metadata(model, enc))


SPARSE_VALUES = ("fp16", "int8")


def _sparse_weight(w: torch.Tensor, values: str, key: str, state: dict[str, torch.Tensor]) -> None:
    w = w.to("cpu", torch.float32).flatten()
    if values == "fp16":
        w = w.half()
    keep = w != 0
    nz = w[keep]
    if values == "int8":
        scale = nz.abs().max() / 127 if nz.numel() else torch.tensor(1.0)
        q = torch.round(nz / scale).clamp(-127, 127)
        # a tiny weight must not round to 0: the bitmask says it is there
        nz = torch.where(q == 0, torch.sign(nz), q).to(torch.int8)
        state[f"{key}.scale"] = scale.reshape(1).float()
    state[f"{key}.bitmask"] = torch.from_numpy(np.packbits(keep.numpy()))
    state[f"{key}.values"] = nz.contiguous()


def sparse_state(model: nn.Module, values: str = "fp16") -> dict[str, torch.Tensor]:
    """Bitmask + nonzero values (fp16, or int8 with one fp32 scale per tensor) per conv/FC weight; every
    other tensor dense (floating ones in fp16)."""
    if values not in SPARSE_VALUES:
        raise ValueError(f"sparse values must be one of {SPARSE_VALUES}, got {values!r}")
    weights = {f"{name}.weight" for name, _ in prunable(model)}
    state: dict[str, torch.Tensor] = {}
    for key, t in plain_state(model).items():
        if key in weights:
            _sparse_weight(t, values, key, state)
        else:
            state[key] = t.to("cpu", torch.float16 if t.is_floating_point() else t.dtype).contiguous()
    return state


def save_sparse(model: nn.Module, path: Path, values: str = "fp16") -> int:
    return write_safetensors(sparse_state(model, values), path, _metadata(model, f"sparse-bitmask-{values}"))


def gzip_size(path: Path) -> int:
    """Bytes of the file after gzip -9: what a download of it costs."""
    import gzip

    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        return load_file(str(path)), meta
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({exc}); mixprune loads only "
                             "safetensors model files") from None


def _densify(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path) -> dict[str, torch.Tensor]:
    """The dense tensors of a sparse file: every bitmask/values pair expanded to the expected shape."""
    out = {}
    for key, shape in expected.items():
        bits, values = state.get(f"{key}.bitmask"), state.get(f"{key}.values")
        if bits is None and values is None:
            if key not in state:
                raise ModelFileError(f"{path}: sparse file lacks {key}")
            out[key] = state[key]
            continue
        if bits is None or values is None or bits.dtype != torch.uint8:
            raise ModelFileError(f"{path}: sparse file lacks {key}.bitmask/values")
        keep = np.unpackbits(bits.numpy(), count=shape.numel()).astype(bool)
        if keep.size != shape.numel() or int(keep.sum()) != values.numel():
            raise ModelFileError(f"{path}: {key} bitmask does not match {tuple(shape)} and its values")
        if values.dtype == torch.int8:
            scale = state.get(f"{key}.scale")
            if scale is None or scale.numel() != 1:
                raise ModelFileError(f"{path}: int8 sparse file lacks {key}.scale")
            values = values.float() * scale
        dense = torch.zeros(shape.numel(), dtype=values.dtype)
        dense[torch.from_numpy(keep)] = values
        out[key] = dense.reshape(shape)
    return out


def _check_description(desc: Any, path: Path) -> dict[str, Any]:
    """The architecture JSON of a file: plain types and sizes in range, before anything is built."""
    if not isinstance(desc, dict) or not isinstance(desc.get("arch"), str):
        raise ModelFileError(f"{path}: architecture metadata is not a description of a model")
    shape, classes = desc.get("input_shape"), desc.get("num_classes")
    if len(_sizes(shape, "input_shape", path)) != 3 or not _sizes([classes], "num_classes", path):
        raise ModelFileError(f"{path}: architecture metadata has input_shape {shape!r}; expected three sizes")
    return desc


def _sizes(values: Any, what: str, path: Path) -> tuple[int, ...]:
    """Whole numbers in 1..MAX_DIM (widths, shapes, counts) from a file's metadata, or ModelFileError."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_DIM
                                               for v in values):
        raise ModelFileError(f"{path}: metadata {what} {values!r} are not sizes in 1..{MAX_DIM}")
    return tuple(values)


def _lenet_params(widths: tuple[int, ...], in_channels: int, classes: int, hw: tuple[int, int]) -> int:
    """Parameters of a LeNet-5 of these widths and input, computed without building it."""
    from .models.lenet5 import pooled_hw

    c1, c2, h1, h2 = widths
    ph, pw = pooled_hw(hw)
    return (c1 * in_channels * 25 + c1 + c2 * c1 * 25 + c2 + h1 * c2 * max(ph, 0) * max(pw, 0) + h1 + h2 * h1 + h2
            + classes * h2 + classes)


def _check_size(params: int, path: Path) -> None:
    """A file holds at least one bit per parameter it describes (a sparse bitmask): a description that
    promises more than that is refused before anything is allocated."""
    limit = 8 * path.stat().st_size + 4096
    if params > limit:
        raise ModelFileError(f"{path}: metadata describes a network of {params:,} parameters, more than a file of "
                             f"{path.stat().st_size:,} bytes can hold; the file is corrupt or crafted")


def _structure(meta: dict[str, str], path: Path, arch: str | None) -> nn.Module:
    """The untrained network a file's metadata describes, checked against the file's size first."""
    if meta.get("format", FORMAT) == GENERIC_FORMAT:
        desc = _check_description(json.loads(meta.get("architecture", "null")), path)
        if desc["arch"] == "lenet5":
            c, h, w = desc["input_shape"]
            widths = _sizes(desc.get("widths"), "widths", path)
            if len(widths) != 4:
                raise ModelFileError(f"{path}: LeNet-5 metadata needs 4 widths, got {list(widths)}")
            _check_size(_lenet_params(widths, c, desc["num_classes"], (h, w)), path)
        if kind(desc["arch"]) == "python":
            raise ModelFileError(f"{path} holds a model given as Python code ({desc['arch']}); load it into your "
                                 "network: load_model(path, model=your_model)")
        if kind(desc["arch"]) == "file" and arch is None:
            raise ModelFileError(f"{path} was built by your factory {desc['arch']}; mixprune imports user code only "
                                 f"when you name it: load_model(path, arch='{desc['arch']}') or --arch "
                                 f"{desc['arch']}")
        return _slimmed_to(rebuild(desc, arch_override=arch), desc.get("pruned_channels"), path)
    widths = _sizes(json.loads(meta.get("widths", "[6, 16, 120, 84]")), "widths", path)
    if len(widths) != 4:
        raise ModelFileError(f"{path}: LeNet-5 metadata needs 4 widths, got {list(widths)}")
    _check_size(_lenet_params(widths, 1, 10, (28, 28)), path)
    return LeNet5(dropout=float(meta.get("dropout", "0.0")), widths=widths)  # type: ignore[arg-type]


def _slimmed_to(model: nn.Module, pruned: Any, path: Path) -> nn.Module:
    """model with the channels a slimmed file's metadata says were removed (group root -> count) removed
    (Torch-Pruning; which channels does not matter, the weights are replaced), or model as it is."""
    if pruned is None:
        return model
    if not isinstance(pruned, dict) or not all(isinstance(k, str) for k in pruned):
        raise ModelFileError(f"{path}: metadata pruned_channels {pruned!r} is not a map of layer names to counts")
    counts = _sizes(list(pruned.values()), "pruned_channels", path)
    layers = dict(model.named_modules())
    for name, n in zip(pruned, counts):
        width = getattr(layers.get(name), "out_channels", getattr(layers.get(name), "out_features", 0))
        if not n < width:
            raise ModelFileError(f"{path}: metadata removes {n} channels of {name!r}, which has {width}; the file "
                                 "does not belong to this network")
    return shrink(model, {name: list(range(n)) for name, n in zip(pruned, counts)})


def load_model(path: str | Path, arch: str | None = None, model: nn.Module | None = None) -> nn.Module:
    """Load a mixprune safetensors file (fp32, fp16 or sparse) into an fp32 model; shapes are checked. The
    network is rebuilt from the file's architecture metadata through the model registry (no pickle); a file
    made by your own factory (PATH.py:FUNCTION) is rebuilt only when you pass that arch. `model`: load the
    weights into this network instead (its structure must match the file's)."""
    path = Path(path)
    state, meta = _read(path)
    try:
        if model is None:
            model = _structure(meta, path, arch)
        elif meta.get("format") == GENERIC_FORMAT:  # a slimmed file: the given network loses the same channels
            pruned = json.loads(meta.get("architecture", "{}") or "{}").get("pruned_channels")
            model = _slimmed_to(copy.deepcopy(model), pruned, path)
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError, ConfigError) as exc:
        raise ModelFileError(f"{path}: unreadable architecture metadata ({exc})") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if meta.get("encoding", "").startswith("sparse"):
        state = _densify(state, expected, path)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"expected {', '.join(LAYERS)} .weight/.bias" if isinstance(model, LeNet5) else "see describe(model)"
        raise ModelFileError(f"{path}: keys do not match {type(model).__name__} (missing {missing}, unexpected "
                             f"{extra}); {what}")
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise ModelFileError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(shape)}")
    reference = model.state_dict()
    for k, v in state.items():
        if v.dtype.is_complex or (reference[k].is_floating_point() and not v.is_floating_point()):
            raise ModelFileError(f"{path}: {k} holds {v.dtype} values where the network has {reference[k].dtype}; "
                                 "mixprune files hold floating-point weights (fp32, fp16, or int8 with a scale in sparse "
                                 "files)")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model.eval()


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Raise one logger to ERROR for the block, then restore it (libraries here log chatter at INFO/WARNING)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


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


def _strip_debug_info(graph: Any) -> None:
    """Drop the exporter's per-node debug properties (Python stack traces with this machine's absolute source
    paths, FX node text, class names): they are not part of the computation, and with them a file's bytes
    depended on where mixprune was installed."""
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_debug_info(attr.g)
            for sub in attr.graphs:
                _strip_debug_info(sub)


def computation_key(model: nn.Module) -> str:
    """What decides the computation a dense forward pass (and its ONNX graph) performs, weight values aside: the
    module tree (types and hyperparameters, as repr prints them), hooks, and every tensor's name, shape, dtype
    and strides. An unstructured-pruned model runs the same dense kernels on its zeros as its parent does."""
    tensors = sorted((k, tuple(v.shape), str(v.dtype), v.stride()) for k, v in model.state_dict().items())
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()]
    text = repr((type(model).__module__, type(model).__qualname__, repr(model), tensors, hooks))
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements as stored in memory, C order (any dtype, bfloat16 included)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


_ONNX_GRAPHS: dict[str, bytes] = {}  # per process: computation_key -> an exported file whose weights can be swapped
MAX_ONNX_GRAPHS = 8


def _swappable(proto: Any, state: dict[str, torch.Tensor]) -> bool:
    """Whether the exporter kept every floating tensor of `state` as an initializer of the same name holding
    exactly its bytes (raw_data), so that another model of the same computation_key is this file with its own
    bytes in those initializers. Not where the exporter folded weights (e.g. BatchNorm into the convolution)."""
    inits = {i.name: i for i in proto.graph.initializer}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        init = inits.get(name)
        if init is None or list(init.dims) != list(tensor.shape) or not init.HasField("raw_data"):
            return False
        if init.raw_data != tensor_bytes(tensor):
            return False
    return True


def _export_proto(net: nn.Module, tmp: Path) -> Any:
    """torch.onnx's dynamo exporter (dynamic batch), debug properties stripped."""
    import warnings

    import onnx

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # exporter chatter about opset upgrades
        torch.onnx.export(net, (example_input(net, 2),), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(tmp))
    _strip_debug_info(proto.graph)
    return proto


def _graph_key(net: nn.Module) -> str:
    return computation_key(net) + ",".join(net.state_dict())  # the exporter lists initializers in this order


def _as_exported(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)


def _remember(key: str, proto: Any, state: dict[str, torch.Tensor]) -> bool:
    """Keep an exported file as the template of its computation, where its weights can be swapped."""
    if not _swappable(proto, state):
        return False
    if len(_ONNX_GRAPHS) >= MAX_ONNX_GRAPHS:
        _ONNX_GRAPHS.pop(next(iter(_ONNX_GRAPHS)))
    _ONNX_GRAPHS[key] = proto.SerializeToString()
    return True


def export_template(model: nn.Module, graphs: Path) -> None:
    """Export `model` once and leave its file in the directory `graphs` (as KEY.onnx) for export_onnx calls in
    other processes: a run exports its initial network while the workers train, so no worker pays the exporter's
    start (~2.6 s of imports) for a model of the same computation. Nothing is left where the weights cannot be
    swapped."""
    net = _as_exported(model)
    key = _graph_key(net)
    with tempfile.TemporaryDirectory() as tmp:
        proto = _export_proto(net, Path(tmp) / "m.onnx")
    if _remember(key, proto, net.state_dict()):
        write_bytes_atomic(_graph_file(graphs, key), _ONNX_GRAPHS[key])


def _graph_file(graphs: Path, key: str) -> Path:
    return graphs / f"{hashlib.sha256(key.encode()).hexdigest()}.onnx"


def _template(key: str, graphs: Path | None) -> Any:
    """The remembered file of this computation (this process's, or one in `graphs`), or None."""
    import onnx

    if key not in _ONNX_GRAPHS and graphs is not None:
        shared = _graph_file(graphs, key)
        if shared.is_file():
            _ONNX_GRAPHS[key] = shared.read_bytes()
    return onnx.ModelProto.FromString(_ONNX_GRAPHS[key]) if key in _ONNX_GRAPHS else None


def export_onnx(model: nn.Module, path: Path, graphs: Path | None = None) -> int:
    """Write an ONNX file (dynamic batch, input 'input' [B, C, H, W] of the model's input shape, output
    'logits' [B, classes]) of the model in eval mode, without the exporter's debug properties; returns its size.
    The exporter runs once per computation (computation_key and the state dict's order) in this process or for
    the directory `graphs` (export_template): a later model of the same computation gets that file with its own
    weights in the initializers, byte for byte what the exporter writes for it (tested), in ~10 ms instead of
    ~1-4.5 s; where the exporter folds weights (BatchNorm into convolutions), every model is exported."""
    import onnx

    net = _as_exported(model)
    key, state = _graph_key(net), net.state_dict()
    with atomic_path(path) as tmp:
        proto = _template(key, graphs)
        if proto is not None:
            for init in proto.graph.initializer:
                if init.name in state and state[init.name].is_floating_point():
                    init.raw_data = tensor_bytes(state[init.name])
        else:
            proto = _export_proto(net, tmp)
            _remember(key, proto, state)
        onnx.save(proto, str(tmp))
    return path.stat().st_size


def ort_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session; threads > 0 fixes its intra-op thread count (0: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, x: torch.Tensor, batch_size: int = 1000, threads: int = 0) -> torch.Tensor:
    """Logits from ONNX Runtime (CPU) for normalized inputs x [N, C, H, W]."""
    session = ort_session(path, threads)
    xs = x.detach().cpu().contiguous().numpy()
    return torch.cat([torch.from_numpy(session.run(["logits"], {"input": xs[i:i + batch_size]})[0])
                      for i in range(0, len(xs), batch_size)])


def verify_onnx(path: Path, torch_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on (x, y): prediction agreement, accuracies, largest logit difference."""
    ort_logits = onnx_logits(path, x)
    ref = torch_logits.detach().cpu().float()
    y = y.cpu()
    return {"onnx_prediction_agreement": (ort_logits.argmax(1) == ref.argmax(1)).double().mean().item(),
            "onnx_test_accuracy": 100.0 * (ort_logits.argmax(1) == y).double().mean().item(),
            "onnx_max_abs_logit_diff": (ort_logits - ref).abs().max().item()}


def quantize_onnx_int8(fp32_path: Path, int8_path: Path, calibration_x: torch.Tensor, batch_size: int = 100) -> int:
    """Static int8 quantization with ONNX Runtime (QDQ, per-channel int8 weights, int8 activations
    calibrated on `calibration_x`, MinMax); returns the int8 file's size."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    xs = calibration_x.detach().cpu().contiguous().numpy()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": xs[i:i + batch_size]} for i in range(0, len(xs), batch_size)])

        def get_next(self):  # type: ignore[override]
            return next(self.batches, None)

    # ORT logs a pre-processing hint through the root logger; silence it for this call only
    with atomic_path(int8_path) as tmp, quiet("root"):
        quantize_static(str(fp32_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return int8_path.stat().st_size
