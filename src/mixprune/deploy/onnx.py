"""ONNX files and ONNX Runtime: export (once per computation), verification against PyTorch, static int8.

    export_onnx(model, path)                                # dynamic batch; input 'input', output 'logits'
    verify_onnx(path, torch_logits, x, y)                   # prediction agreement and accuracy in ONNX Runtime
    quantize_onnx_int8(path, int8_path, calibration_x)      # static QDQ, per-channel int8 weights
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import atomic_path, write_bytes_atomic
from ..core.logs import quiet
from ..models import example_input
from .fingerprint import computation_key, tensor_bytes


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
