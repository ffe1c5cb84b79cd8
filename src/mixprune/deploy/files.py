"""Model files: safetensors (fp32, fp16, sparse), written byte for byte the same, and read back safely.

    save_safetensors(model, path)                 # fp32, plain .weight/.bias tensors, metadata with widths
    save_safetensors(model, path, torch.float16)  # 16-bit copy
    save_sparse(model, path, values="fp16")       # bitmask + fp16 (or int8 + scale) nonzero values per weight
    model = load_model(path)                      # any of the three; safe (no pickle), shapes checked

The sparse file stores, for each conv/FC weight, a packed bitmask of nonzero positions (1 bit per
weight, uint8) and the nonzero values in fp16 (or in int8 with one fp32 scale per tensor); every other
tensor (biases, BatchNorm's) is stored dense, floating ones in fp16. Files of the paper's LeNet-5 name
its widths in their metadata, as mixprune has always written them; any other network's files carry its
architecture as JSON (models.describe: arch, input shape, classes), from which load_model rebuilds it
through the model registry.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ..compress.structured import shrink
from ..core.atomic import write_bytes_atomic
from ..core.errors import ConfigError, ModelFileError
from ..models import LeNet5, describe, kind, prunable, rebuild
from ..models.lenet5 import LAYERS, PAPER_INPUT

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
    from ..models.lenet5 import pooled_hw

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
