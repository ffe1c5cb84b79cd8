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
from safetensors.torch import load, save
from torch import nn

from ..compress.structured import shrink
from ..core.atomic import TooLarge, open_regular, read_capped, write_bytes_atomic
from ..core.config import MAX_SIDE
from ..core.errors import ConfigError, ModelFileError
from ..models import LENET, LeNet5, count_params, describe, described_parameters, kind, prunable, rebuild
from ..models.lenet5 import LAYERS, PAPER_INPUT

FORMAT = "mixprune.lenet5"  # the paper's network on 1x28x28 inputs, 10 classes (files as mixprune always wrote them)
GENERIC_FORMAT = "mixprune.model"  # any network: its architecture as JSON (models.describe), rebuilt by the registry
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a header
MAX_DIM = 1 << 16  # largest channel, class or width count a file may describe


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


MAX_MODEL_BYTES = 1 << 31  # 2 GiB: the file of any torchvision classifier fits; a small CNN's is kilobytes
ENCODINGS = ("fp32", "fp16", "sparse-bitmask-fp16", "sparse-bitmask-int8")  # what mixprune files' metadata says


def read_model_file(path: Path | str) -> bytes:
    """The bytes of a model file: a regular file of at most MAX_MODEL_BYTES, or ModelFileError (one line)."""
    try:
        return read_capped(path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except TooLarge:
        raise ModelFileError(f"{path} is larger than {MAX_MODEL_BYTES:,} bytes: not a model file mixprune "
                             "writes") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def is_mixprune_file(path: Path | str) -> bool:
    """Whether path is a safetensors file whose metadata names a mixprune format (only its header is read, at most
    MAX_HEADER_BYTES); False for anything else, including files that cannot be read (their reader says why)."""
    try:
        with open_regular(path) as fh:
            head = fh.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if not 0 < length <= MAX_HEADER_BYTES:
                return False
            header = json.loads(fh.read(length))
    except (OSError, ValueError, RecursionError):
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and meta.get("format") in (FORMAT, GENERIC_FORMAT)


def _read(data: bytes, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of safetensors bytes; ModelFileError where they are not a safetensors file."""
    try:
        (length,) = struct.unpack("<Q", data[:8]) if len(data) >= 8 else (len(data),)
        if length > len(data) - 8:
            raise ValueError(f"a header of {length:,} bytes in a file of {len(data):,}")
        header = json.loads(data[8:8 + length])
        meta = header.get("__metadata__") or {} if isinstance(header, dict) else None
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not a table of strings")
        return load(data), meta
    except RecursionError:
        raise ModelFileError(f"{where}: its header nests too deeply to be a safetensors file") from None
    except (SafetensorError, ValueError) as exc:
        raise ModelFileError(f"{where} is not a readable safetensors file ({exc}); mixprune loads only "
                             "safetensors model files") from None


def _json(meta: dict[str, str], key: str, default: str, where: str) -> Any:
    """A JSON value of the metadata (a description, widths); ModelFileError where it is not JSON or nests deeply."""
    try:
        return json.loads(meta.get(key, default))
    except RecursionError:
        raise ModelFileError(f"{where}: metadata {key} nests too deeply to be a model description") from None
    except ValueError as exc:
        raise ModelFileError(f"{where}: metadata {key} is not JSON ({exc})") from None


def _densify(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], where: str) -> dict[str, torch.Tensor]:
    """The dense tensors of a sparse file: every bitmask/values pair expanded to the expected shape."""
    out = {}
    for key, shape in expected.items():
        bits, values = state.get(f"{key}.bitmask"), state.get(f"{key}.values")
        if bits is None and values is None:
            if key not in state:
                raise ModelFileError(f"{where}: sparse file lacks {key}")
            out[key] = state[key]
            continue
        if bits is None or values is None or bits.dtype != torch.uint8:
            raise ModelFileError(f"{where}: sparse file lacks {key}.bitmask/values")
        keep = np.unpackbits(bits.numpy(), count=shape.numel()).astype(bool)
        if keep.size != shape.numel() or int(keep.sum()) != values.numel():
            raise ModelFileError(f"{where}: {key} bitmask does not match {tuple(shape)} and its values")
        if values.dtype == torch.int8:
            scale = state.get(f"{key}.scale")
            if scale is None or scale.numel() != 1:
                raise ModelFileError(f"{where}: int8 sparse file lacks {key}.scale")
            values = values.float() * scale
        dense = torch.zeros(shape.numel(), dtype=values.dtype)
        dense[torch.from_numpy(keep)] = values
        out[key] = dense.reshape(shape)
    return out


def _check_description(desc: Any, where: str) -> dict[str, Any]:
    """The architecture JSON of a file: plain types and sizes in range, before anything is built: an input of at
    most MAX_SIDE pixels a side, sizes (channels, classes, widths) in 1..MAX_DIM."""
    if not isinstance(desc, dict) or not isinstance(desc.get("arch"), str):
        raise ModelFileError(f"{where}: architecture metadata is not a description of a model")
    shape, classes = desc.get("input_shape"), desc.get("num_classes")
    if len(_sizes(shape, "input_shape", where)) != 3 or not _sizes([classes], "num_classes", where):
        raise ModelFileError(f"{where}: architecture metadata has input_shape {shape!r}; expected three sizes")
    if max(shape[1:]) > MAX_SIDE:
        raise ModelFileError(f"{where}: metadata input_shape {shape} has a side above {MAX_SIDE} pixels, more than "
                             "mixprune takes; the file is corrupt or crafted")
    if desc["arch"] == LENET:
        widths = _sizes(desc.get("widths"), "widths", where)
        if len(widths) != 4:
            raise ModelFileError(f"{where}: LeNet-5 metadata needs 4 widths, got {list(widths)}")
    return desc


def _sizes(values: Any, what: str, where: str) -> tuple[int, ...]:
    """Whole numbers in 1..MAX_DIM (widths, shapes, counts) from a file's metadata, or ModelFileError."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_DIM
                                               for v in values):
        raise ModelFileError(f"{where}: metadata {what} {values!r} are not sizes in 1..{MAX_DIM}")
    return tuple(values)


def _check_size(desc: dict[str, Any], nbytes: int, where: str, arch: str | None) -> None:
    """A file holds at least one bit per parameter it describes (a sparse bitmask): a description that promises
    more than that is refused before anything is allocated. The parameters are counted without allocating them
    (models.described_parameters); a slimmed network, counted whole first, is counted slimmed on the meta device
    where the whole one is more than the file holds."""
    limit = 8 * nbytes + 4096
    params = described_parameters(desc, arch)
    if params > limit and desc.get("pruned_channels") is not None:
        with torch.device("meta"):
            params = count_params(_slimmed_to(rebuild(desc, arch), desc["pruned_channels"], where))
    if params > limit:
        raise ModelFileError(f"{where}: metadata describes a network of {params:,} parameters, more than a file of "
                             f"{nbytes:,} bytes can hold; the file is corrupt or crafted")


def _description(meta: dict[str, str], where: str) -> dict[str, Any]:
    """What the metadata says the network is, as models.describe writes it: a generic file's architecture JSON, or
    the paper's LeNet-5 (1x28x28 inputs, 10 classes) with the widths and dropout a LeNet-5 file names."""
    if meta.get("format", FORMAT) == GENERIC_FORMAT:
        return _check_description(_json(meta, "architecture", "null", where), where)
    dropout = float(meta.get("dropout", "0.0"))
    if not 0.0 <= dropout < 1.0:
        raise ModelFileError(f"{where}: metadata dropout {dropout} is not in [0, 1)")
    return _check_description({"arch": LENET, "input_shape": [1, 28, 28], "num_classes": 10, "dropout": dropout,
                               "widths": _json(meta, "widths", "[6, 16, 120, 84]", where)}, where)


def _structure(desc: dict[str, Any], where: str, nbytes: int, arch: str | None) -> nn.Module:
    """The untrained network a file's description names, checked against the file's size first."""
    if kind(desc["arch"]) == "python":
        raise ModelFileError(f"{where} holds a model given as Python code ({desc['arch']}); load it into your "
                             "network: load_model(path, model=your_model)")
    if kind(desc["arch"]) == "file" and arch is None:
        raise ModelFileError(f"{where} was built by your factory {desc['arch']}; mixprune imports user code only "
                             f"when you name it: load_model(path, arch='{desc['arch']}') or --arch {desc['arch']}")
    _check_size(desc, nbytes, where, arch)
    return _slimmed_to(rebuild(desc, arch_override=arch), desc.get("pruned_channels"), where)


def _slimmed_to(model: nn.Module, pruned: Any, where: str) -> nn.Module:
    """model with the channels a slimmed file's metadata says were removed (group root -> count) removed
    (Torch-Pruning; which channels does not matter, the weights are replaced), or model as it is."""
    if pruned is None:
        return model
    if not isinstance(pruned, dict) or not all(isinstance(k, str) for k in pruned):
        raise ModelFileError(f"{where}: metadata pruned_channels {pruned!r} is not a map of layer names to counts")
    counts = _sizes(list(pruned.values()), "pruned_channels", where)
    layers = dict(model.named_modules())
    for name, n in zip(pruned, counts):
        width = getattr(layers.get(name), "out_channels", getattr(layers.get(name), "out_features", 0))
        if not n < width:
            raise ModelFileError(f"{where}: metadata removes {n} channels of {name!r}, which has {width}; the file "
                                 "does not belong to this network")
    return shrink(model, {name: list(range(n)) for name, n in zip(pruned, counts)})


def load_model(path: str | Path, arch: str | None = None, model: nn.Module | None = None,
               finite: bool = True) -> nn.Module:
    """Load a mixprune safetensors file (fp32, fp16 or sparse) into an fp32 model (model_from_bytes)."""
    return model_from_bytes(read_model_file(path), str(path), arch, model, finite)


def model_from_bytes(data: bytes, where: str, arch: str | None = None, model: nn.Module | None = None,
                     finite: bool = True) -> nn.Module:
    """The fp32 model a mixprune safetensors file's bytes hold (`where` names it in errors). The network is rebuilt
    from the file's architecture metadata through the model registry (no pickle), only once the file is large
    enough for the network it names; a file made by your own factory (PATH.py:FUNCTION) is rebuilt only when you
    pass that arch. `model`: load the weights into this network instead (its structure must match the file's).
    Every tensor must have the network's name, shape and a floating dtype, and (`finite`, for every file but one a
    run has just written itself: an fp16 file of weights beyond fp16's range holds infinities) finite values."""
    state, meta = _read(data, where)
    if meta.get("format", FORMAT) not in (FORMAT, GENERIC_FORMAT) or meta.get("encoding", "fp32") not in ENCODINGS:
        raise ModelFileError(f"{where}: format {meta.get('format')!r}, encoding {meta.get('encoding')!r} is not a "
                             f"mixprune model file (formats {FORMAT}, {GENERIC_FORMAT}; encodings {', '.join(ENCODINGS)})")
    try:
        desc = _description(meta, where)
        if model is None:
            model = _structure(desc, where, len(data), arch)
        elif desc.get("pruned_channels") is not None:  # a slimmed file: the given network loses the same channels
            model = _slimmed_to(copy.deepcopy(model), desc["pruned_channels"], where)
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError, ConfigError) as exc:
        raise ModelFileError(f"{where}: unreadable architecture metadata ({exc})") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if meta.get("encoding", "").startswith("sparse"):
        state = _densify(state, expected, where)
    _check_state(state, model, where, finite)
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model.eval()


def _check_state(state: dict[str, torch.Tensor], model: nn.Module, where: str, finite: bool = True) -> None:
    """ModelFileError unless the tensors are the network's: the same names and shapes, floating values where it has
    floating ones, and nothing but finite numbers (a NaN or an infinity would poison every figure)."""
    reference = model.state_dict()
    missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or extra:
        what = f"expected {', '.join(LAYERS)} .weight/.bias" if isinstance(model, LeNet5) else "see describe(model)"
        raise ModelFileError(f"{where}: keys do not match {type(model).__name__} (missing {missing[:5]}, unexpected "
                             f"{extra[:5]}); {what}")
    for k, ref in reference.items():
        v = state[k]
        if v.shape != ref.shape:
            raise ModelFileError(f"{where}: {k} has shape {tuple(v.shape)}, expected {tuple(ref.shape)}")
        if v.dtype.is_complex or (ref.is_floating_point() and not v.is_floating_point()):
            raise ModelFileError(f"{where}: {k} holds {v.dtype} values where the network has {ref.dtype}; mixprune "
                                 "files hold floating-point weights (fp32, fp16, or int8 with a scale in sparse files)")
        if finite and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelFileError(f"{where}: {k} holds NaN or infinite values; the file is corrupt, or the model it "
                                 "was saved from had diverged")


def load_weights(model: nn.Module, weights: str, arch: str) -> nn.Module:
    """`model` (built by the registry for `arch`) with the trained weights of `weights`: a mixprune model file (the
    network as the file says, e.g. slimmed, loaded into a copy of model), a safetensors state dict or PyTorch
    checkpoint (models.weights), or pretrained weights from the local cache (torchvision:TAG, timm:TAG)."""
    from ..models.weights import checkpoint_limit, load_state, read_state_dict, weights_file

    path = weights_file(arch, weights)
    if is_mixprune_file(path):  # rebuilt as the file describes it (a slimmed network keeps its widths)
        python = kind(arch) == "python"
        loaded = model_from_bytes(read_model_file(path), str(path), arch if kind(arch) == "file" else None,
                                  model=copy.deepcopy(model) if python else None)
        if not python and describe(loaded)["arch"] != arch:
            raise ModelFileError(f"{path} holds a {describe(loaded)['arch']} network, not --arch {arch}; give the --arch "
                                 "it was made with")
        if describe(loaded)["num_classes"] != describe(model)["num_classes"]:
            raise ModelFileError(f"{path} gives {describe(loaded)['num_classes']} classes, the dataset has "
                                 f"{describe(model)['num_classes']}; choose the dataset it was trained on")
        if tuple(loaded.input_shape) != tuple(model.input_shape):
            raise ModelFileError(f"{path} takes {list(loaded.input_shape)} inputs, the dataset has "
                                 f"{list(model.input_shape)}; choose the dataset (and --image-size) it was trained on")
        loaded.input_shape, loaded.arch = model.input_shape, getattr(model, "arch", arch)
        loaded.output_classes = getattr(model, "output_classes", describe(model)["num_classes"])
        return loaded
    return load_state(model, read_state_dict(path, checkpoint_limit(model)), str(path))
