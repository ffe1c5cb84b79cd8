"""Trained weights in: a state dict from a safetensors file, a PyTorch checkpoint as people save them, or pretrained
weights by name from the local cache, loaded into a network after every name and shape is checked.

    state = read_state_dict("model.pt", limit=MAX_CHECKPOINT_BYTES)   # torch.load(weights_only=True), never unpickled
    state = pretrained_state("torchvision:resnet18", "torchvision:DEFAULT")   # the file torchvision would download
    load_state(model, state, "model.pt")                            # ModelFileError naming the first mismatch

Checkpoints come as `torch.save(model.state_dict())`, nested under `state_dict` / `model` / `model_state_dict`
(training scripts, Lightning), with DataParallel's `module.` or torch.compile's `_orig_mod.` before every name: all
are taken. Anything that needs code to load (a pickled nn.Module, a custom class) is refused: weights_only refuses
it, and mixprune never falls back to full unpickling. A file is read only when it is a regular file no larger than
the caller's limit (the network's own state, a few times over, for optimizer state saved beside it), and a zip
checkpoint is memory-mapped, so a hostile file costs no more memory than its size allows.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import open_regular
from ..core.errors import ConfigError, ModelFileError

NESTED = ("state_dict", "model_state_dict", "model", "net", "module")  # where training scripts put the weights
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
OPTIONAL = ("num_batches_tracked",)  # BatchNorm step counters: old checkpoints lack them; the network's are kept
MAX_PICKLE_BYTES = 64 << 20  # the pickled structure of a checkpoint (names, shapes); its tensors are separate


def state_bytes(model: nn.Module) -> int:
    """Bytes of the network's state dict held in memory."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def checkpoint_limit(model: nn.Module) -> int:
    """The largest checkpoint file taken for `model`: its state 8 times over (weights, optimizer moments, an EMA
    copy, in any precision) plus 64 MiB of everything else a training script saves."""
    return 8 * state_bytes(model) + (64 << 20)


def _size(path: Path, limit: int) -> int:
    with open_regular(path) as fh:  # FIFOs, devices and directories refused before anything is read
        size = fh.seek(0, 2)
    if size > limit:
        raise ModelFileError(f"{path} holds {size:,} bytes, more than a checkpoint of this network can ({limit:,}: "
                             "its weights 8 times over); it is not this network's checkpoint")
    return size


def _kind(path: Path) -> str:
    with open_regular(path) as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    raise ModelFileError(f"{path} is neither a safetensors file nor a PyTorch checkpoint (torch.save); save the "
                         "weights with torch.save(model.state_dict(), path) or safetensors.torch.save_file")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))  # memory-mapped; the header's offsets are checked against the file's size
    except (SafetensorError, ValueError, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({exc})") from None


def _pickle_size(path: Path) -> int:
    """Bytes of the pickled structure (data.pkl) of a zip checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return max((i.file_size for i in z.infolist() if i.filename.endswith("data.pkl")), default=0)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable PyTorch checkpoint ({exc})") from None


def _torch_load(path: Path, kind: str) -> Any:
    if kind == "zip" and _pickle_size(path) > MAX_PICKLE_BYTES:
        raise ModelFileError(f"{path}: its pickled structure is larger than {MAX_PICKLE_BYTES:,} bytes; not a "
                             "checkpoint of weights")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as exc:
        found = str(exc).split("Unsupported global: GLOBAL ")[-1].split(" ")[0] if "GLOBAL" in str(exc) else ""
        raise ModelFileError(f"{path} needs code to load{f' ({found})' if found else ''}: it pickles objects, not "
                             "only tensors, and mixprune never unpickles them; save model.state_dict() instead") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path} is not a readable PyTorch checkpoint ({first})") from None


def _tensors(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in obj.items())


def unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the object itself, or the first of NESTED that holds one; the prefixes
    of PREFIXES removed where every name has them."""
    state = obj if _tensors(obj) else next((obj[k] for k in NESTED if isinstance(obj, dict) and _tensors(obj.get(k))),
                                           None)
    if state is None:
        what = f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ModelFileError(f"{where} is not a state dict: it holds {what}, and none of {', '.join(NESTED)} holds "
                             "tensors; save model.state_dict()")
    for prefix in PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path, limit: int) -> dict[str, torch.Tensor]:
    """The state dict of a safetensors file or a PyTorch checkpoint of at most `limit` bytes (ModelFileError, one
    line, otherwise)."""
    path = Path(path)
    try:
        _size(path, limit)
        kind = _kind(path)
    except FileNotFoundError:
        raise ModelFileError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    obj = _safetensors(path) if kind == "safetensors" else _torch_load(path, kind)
    return unwrap(obj, str(path))


def _torchvision_file(arch: str, tag: str) -> Path:
    import torchvision

    name = arch.removeprefix("torchvision:")
    try:
        enum = torchvision.models.get_model_weights(name)
        weights = enum.DEFAULT if tag == "DEFAULT" else enum[tag]
    except (ValueError, KeyError):
        raise ConfigError(f"--weights torchvision:{tag}: torchvision has no such weights for {name}") from None
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def _timm_file(arch: str, tag: str) -> Path | None:
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ConfigError("--weights timm:... needs timm: pip install timm (or 'mixprune[timm]')") from None
    name = arch.removeprefix("timm:") + ("" if tag == "DEFAULT" else f".{tag}")
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise ConfigError(f"--weights timm:{tag}: timm knows no pretrained weights on the Hugging Face hub for {name}")
    found = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(found, str):
        return Path(found)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / "*" / "model.safetensors"


HUBS = {"torchvision": _torchvision_file, "timm": _timm_file}  # --weights HUB:TAG -> the cached file it names


def hub_file(arch: str, spec: str) -> Path:
    """The locally cached file of pretrained weights `spec` (torchvision:DEFAULT, torchvision:IMAGENET1K_V1,
    timm:DEFAULT, ...) for `arch` of the same family; ConfigError naming the file looked for where it is not cached
    (nothing is downloaded)."""
    hub, _, tag = spec.partition(":")
    if not arch.startswith(f"{hub}:"):
        raise ConfigError(f"--weights {spec} is for --arch {hub}:NAME, not {arch}")
    path = HUBS[hub](arch, tag or "DEFAULT")
    if not path.is_file():
        raise ConfigError(f"--weights {spec}: {path} is not in the local cache, and mixprune downloads nothing while "
                          f"it runs; fetch it once where there is internet ({hub}'s own loader caches it there), or "
                          "give the file with --weights FILE")
    return path


def weights_file(arch: str, spec: str) -> Path:
    """The file --weights names: the cached file of pretrained weights (hub_file) or the path given."""
    if spec.partition(":")[0] in HUBS and not Path(spec).exists():
        return hub_file(arch, spec)
    return Path(spec).expanduser()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """`state` into `model` (float values cast to the network's dtype) once every name, shape and value is the
    network's: ModelFileError naming the first name or shape that differs, or a non-finite value."""
    reference = model.state_dict()
    for key in reference:
        if key not in state and not key.endswith(OPTIONAL):
            near = next((k for k in state if k.endswith(key.rpartition(".")[2]) and k not in reference), None)
            raise ModelFileError(f"{where}: the weights are not {getattr(model, 'arch', 'this network')}'s: no tensor "
                                 f"{key!r}{f' (the file has {near!r})' if near else ''}; give the --arch they were "
                                 "trained with")
    extra = next((k for k in state if k not in reference), None)
    if extra is not None:
        raise ModelFileError(f"{where}: the weights are not {getattr(model, 'arch', 'this network')}'s: the file has "
                             f"{extra!r}, which the network does not; give the --arch they were trained with")
    for key, ref in reference.items():
        value = state.get(key)
        if value is None:
            continue
        if value.shape != ref.shape:
            raise ModelFileError(f"{where}: {key} has shape {list(value.shape)} in the file, {list(ref.shape)} in the "
                                 "network; give the --arch, --dataset and --image-size it was trained with")
        if ref.is_floating_point() and not (value.is_floating_point() and bool(torch.isfinite(value).all())):
            raise ModelFileError(f"{where}: {key} holds {'NaN or infinite' if value.is_floating_point() else value.dtype}"
                                 " values; the checkpoint is corrupt or its training diverged")
    with torch.no_grad():
        for key, ref in reference.items():
            if key in state:
                ref.copy_(state[key].to(ref.dtype))
    return model
