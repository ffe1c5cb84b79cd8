"""Every network mixprune can build, behind one interface: build_model(arch, input_shape, num_classes).

    model = build_model("lenet5", (1, 28, 28), 10, generator(seed, "init"))     # the paper's Table 1
    model = build_model("torchvision:resnet18", (1, 28, 28), 10, gen)           # random init, adapted
    model = build_model("timm:resnet10t", (3, 32, 32), 100, gen)                # where timm is installed
    model = build_model("my_model.py:build", (3, 32, 32), 10, gen)              # build(in_channels=3, num_classes=10)
    describe(model) -> {"arch": ..., "input_shape": [C, H, W], "num_classes": K, ...}   # rebuild(describe(m)) == m's shapes

Every model comes back with `input_shape` (C, H, W) and `arch` attributes and has run one forward pass
on an example input of that shape: a model that cannot take it is refused here with one line, before
anything trains. LeNet-5 draws its weights from the given generator (the paper's bits); other models
are built under a forked global RNG seeded from that generator, so runs stay reproducible and the
caller's global RNG is untouched. torchvision models get their first convolution rebuilt for the
dataset's channels and `num_classes` outputs; timm models get `in_chans` and `num_classes`. Each kind of
--arch is one entry of FAMILIES (how it is built, and rebuilt from a file's description).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import ModelConfig
from ..core.errors import ConfigError
from .counting import count_params
from .lenet5 import LeNet5, parameter_count

LENET = "lenet5"
PREFIXES = ("torchvision:", "timm:", "python:")  # python:NAME is a model given to the Python API (api.reproduce)


def kind(arch: str) -> str:
    """'lenet5', 'torchvision', 'timm' or 'file' (PATH.py:FUNCTION); ConfigError for anything else."""
    if arch == LENET:
        return LENET
    for prefix in PREFIXES:
        if arch.startswith(prefix) and len(arch) > len(prefix):
            return prefix[:-1]
    path, sep, func = arch.rpartition(":")
    if sep and path.endswith(".py") and func.isidentifier():
        return "file"
    raise ConfigError(f"invalid --arch (model.arch): {arch!r}; use lenet5, torchvision:NAME (e.g. torchvision:resnet18), "
                      "timm:NAME, or PATH.py:FUNCTION for your own factory FUNCTION(in_channels=C, num_classes=K)")


def _seed_from(generator: torch.Generator | None) -> int:
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return int(torch.randint(2**62, (1,), generator=gen, device="cpu"))  # on the CPU also under a meta device


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Rebuild the first Conv2d for `in_channels` inputs (same filters, kernel, stride, padding)."""
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels == in_channels:
                return
            if conv.groups != 1:
                raise ConfigError(f"cannot adapt the first convolution {name} (grouped) to {in_channels} channels")
            new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                            bias=conv.bias is not None, padding_mode=conv.padding_mode)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return


def _torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(f"invalid --arch torchvision:{name}: not a torchvision classification model; e.g. "
                          f"{', '.join(n for n in ('resnet18', 'mobilenet_v3_small', 'efficientnet_b0') if n in known)} "
                          f"({len(known)} in all: torchvision.models.list_models())")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    _replace_first_conv(model, in_channels)
    return model


def _timm(name: str, in_channels: int, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"--arch timm:{name} needs timm: pip install timm (or 'mixprune[timm]')") from None
    try:
        return timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=num_classes)
    except RuntimeError as exc:
        raise ConfigError(f"invalid --arch timm:{name}: {str(exc).splitlines()[0]}; see timm.list_models()") from None


FACTORY_SECONDS = 120  # a factory file that has not imported and built its network by then is taken to hang
START_SECONDS = 900  # Python and torch starting in the child: not the user's code, so only a bound against a stall
# (on 2 loaded cores it took over 120 s, which the factory's own limit used to count)
_PROBE = """
import importlib.util, json, os, sys, threading
import torch
fd, path, func, c, k = int(sys.argv[1]), *sys.argv[2:6]
os.write(fd, b"ready\\n")
before = set(threading.enumerate())
out = {}
try:
    spec = importlib.util.spec_from_file_location("mixprune_user_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mixprune_user_probe"] = module
    spec.loader.exec_module(module)
    model = getattr(module, func)(in_channels=int(c), num_classes=int(k))
    out["module"] = isinstance(model, torch.nn.Module)
except SystemExit as exc:
    out["exit"] = repr(exc.code)
except BaseException as exc:
    out["error"] = type(exc).__name__
out["threads"] = sorted(t.name for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon)
os.write(fd, (json.dumps(out) + "\\n").encode())
os._exit(0)
"""
PROBED = "MIXPRUNE_PROBED_FACTORIES"  # factories that passed the probe (file, its size and time, call), one a line:
# in the environment, so that worker processes, spawned with a copy of it, do not probe them again


def _lines(fd: int, limits: tuple[float, ...]) -> tuple[list[str], bool]:
    """A line for each limit read from the pipe FD, the i-th within limits[i] seconds of the one before, and whether
    the writer closed the pipe (it ended) before they all came."""
    import select

    lines, buf = [], b""
    for limit in limits:
        deadline = time.monotonic() + limit
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return lines, False
            chunk = os.read(fd, 65536)
            if not chunk:
                return lines, True
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        lines.append(line.decode(errors="replace"))
    return lines, False


def _run_probe(path: Path, func: str, in_channels: int, num_classes: int) -> tuple[list[str], bool]:
    """The probe's lines ("ready", then its JSON outcome) over a pipe of its own, so that what the user's code
    prints cannot be mistaken for them, and whether the child ended before writing both; it is killed once they are
    read or time runs out."""
    import subprocess

    read, write = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(write), str(path), func, str(in_channels),
                                 str(num_classes)], pass_fds=(write,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        write = -1
        try:
            return _lines(read, (START_SECONDS, FACTORY_SECONDS))
        finally:
            proc.kill()
            proc.wait()
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def probe_factory(arch: str, in_channels: int, num_classes: int) -> None:
    """Import the user's factory file and call it once in a child process before this process does: ConfigError (one
    line) where that exits the process (sys.exit), does not finish within FACTORY_SECONDS (counted once the child's
    Python and torch have started), or leaves a non-daemon thread running, which would keep mixprune from ever
    exiting. Errors it raises are left to the import here, which says them in one line too."""
    import json

    path = Path(arch.rpartition(":")[0]).expanduser().resolve()
    func = arch.rpartition(":")[2]
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{func}|{in_channels}|{num_classes}"
    if key in os.environ.get(PROBED, "").split("\n"):
        return
    call = f"{func}(in_channels={in_channels}, num_classes={num_classes})"
    lines, ended = _run_probe(path, func, in_channels, num_classes)
    if not lines and not ended:
        raise ConfigError(f"--arch {arch}: a child Python process that imports torch did not start within "
                          f"{START_SECONDS} s, so {path} could not be checked; is the machine overloaded?")
    if len(lines) == 1 and not ended:
        raise ConfigError(f"--arch {arch}: importing {path} and calling {call} did not finish within "
                          f"{FACTORY_SECONDS} s; the factory hangs (or waits for input)")
    try:
        out = json.loads(lines[1]) if len(lines) == 2 else {}
    except ValueError:
        out = {}
    if "exit" in out or not out:
        raise ConfigError(f"--arch {arch}: importing {path} or calling {call} exits the process "
                          f"(sys.exit({out.get('exit', '')}) or os._exit); a factory must return the network")
    if out["threads"]:
        raise ConfigError(f"--arch {arch}: importing {path} or calling {call} starts threads that keep running "
                          f"({', '.join(out['threads'][:3])}); mixprune would wait for them forever: make them daemon "
                          "threads or stop them")
    if "error" not in out:
        os.environ[PROBED] = "\n".join(filter(None, [os.environ.get(PROBED, ""), key]))


def load_factory(arch: str) -> Any:
    """The FUNCTION of PATH.py:FUNCTION, imported from the user's file (only ever the file the user names)."""
    path_text, _, func = arch.rpartition(":")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"--arch {arch}: {path} does not exist; give PATH.py:FUNCTION of your model factory")
    module_name = f"mixprune_user_model_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--arch {arch}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[module_name] = module  # workers and pickling by reference find it again by name
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's file: any error is bad input, in one line
        sys.modules.pop(module_name, None)
        raise ConfigError(f"--arch {arch}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise ConfigError(f"--arch {arch}: {path} defines no function {func}")
    return factory


def _from_file(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    """The user's factory's network, once a child process has shown that building it returns (probe_factory)."""
    if not Path(arch.rpartition(":")[0]).expanduser().is_file():
        raise ConfigError(f"--arch {arch}: {Path(arch.rpartition(':')[0]).expanduser().resolve()} does not exist; "
                          "give PATH.py:FUNCTION of your model factory")
    probe_factory(arch, in_channels, num_classes)
    factory = load_factory(arch)
    try:
        model = factory(in_channels=in_channels, num_classes=num_classes)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code
        raise ConfigError(f"--arch {arch}: {arch.rpartition(':')[2]}(in_channels={in_channels}, "
                          f"num_classes={num_classes}) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--arch {arch}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_input(model: nn.Module, arch: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """One forward pass of two example inputs in eval mode; ConfigError naming the shape and the model if
    it fails or does not return [2, num_classes] logits, or if the network has no parameters to train."""
    shape = "x".join(map(str, input_shape))
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"--arch {arch}: the network has no trainable parameters; nothing to train or prune")
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure means the model cannot take this input
        raise ConfigError(f"--arch {arch} cannot take the dataset's {shape} inputs "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "resize with --image-size N or choose another --arch") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"--arch {arch}: on {shape} inputs the model returns {got}, expected logits "
                          f"[batch, {num_classes}] for the dataset's {num_classes} classes")


def _lenet(arch: str, input_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator | None,
           dropout: float) -> nn.Module:
    """The paper's network, its weights drawn from `generator` (the paper's bits)."""
    c, h, w = input_shape
    try:
        return LeNet5(dropout=dropout, generator=generator, in_channels=c, num_classes=num_classes, input_hw=(h, w))
    except ValueError as exc:
        raise ConfigError(f"--arch lenet5: {exc}") from None


def _seeded(builder: Callable[[str, int, int], nn.Module], strip_prefix: bool = True) -> Callable[..., nn.Module]:
    """A family's builder run under a fork of the global RNG seeded from the init generator: runs stay reproducible
    and the caller's global RNG is untouched."""
    def build(arch: str, input_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator | None,
              dropout: float) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(generator))
            model = builder(arch.partition(":")[2] if strip_prefix else arch, input_shape[0], num_classes)
        model.input_shape = tuple(input_shape)
        return model
    return build


def _python(arch: str, *_: Any) -> nn.Module:
    raise ConfigError(f"--arch {arch} names a model given as Python code: pass it to mixprune.reproduce(..., "
                      "model=...), or name a file with --arch PATH.py:FUNCTION")


def _rebuild_lenet(desc: dict[str, Any]) -> nn.Module:
    c, h, w = (int(v) for v in desc["input_shape"])
    return LeNet5(dropout=float(desc.get("dropout", 0.0)), widths=tuple(int(v) for v in desc["widths"]),  # type: ignore[arg-type]
                  in_channels=c, num_classes=int(desc["num_classes"]), input_hw=(h, w))


def _count_lenet(desc: dict[str, Any]) -> int:
    c, h, w = desc["input_shape"]
    return parameter_count(tuple(desc["widths"]), c, desc["num_classes"], (h, w))


@dataclass(frozen=True)
class Family:
    """One kind of --arch: how it is built (arch, input shape, classes, init generator, dropout) and rebuilt from a
    file's description (None: built again from its arch), and how a description's parameters are counted without
    building it (None: the network is built on the meta device, where nothing is allocated)."""
    build: Callable[[str, tuple[int, int, int], int, torch.Generator | None, float], nn.Module]
    rebuild: Callable[[dict[str, Any]], nn.Module] | None = None
    count: Callable[[dict[str, Any]], int] | None = None
    dropout: bool = False  # takes --dropout (other networks bring their own)


FAMILIES = {LENET: Family(_lenet, _rebuild_lenet, _count_lenet, dropout=True),
            "torchvision": Family(_seeded(_torchvision)),
            "timm": Family(_seeded(_timm)),
            "file": Family(_seeded(_from_file, strip_prefix=False)),
            "python": Family(_python)}


def check_arch(arch: str, dropout: float = 0.0) -> None:
    """ConfigError for an --arch this registry does not know, or a --dropout its family does not take."""
    family = FAMILIES[kind(arch)]
    if dropout and not family.dropout:
        raise ConfigError(f"invalid --dropout {dropout} with --arch {arch}: dropout is lenet5's (before fc2 and fc3); "
                          "other networks bring their own")


def check_config(cfg: ModelConfig) -> None:
    """check_arch for the model section of a config."""
    check_arch(cfg.arch, cfg.dropout)


def build_model(arch: str, input_shape: tuple[int, int, int], num_classes: int,
                generator: torch.Generator | None = None, dropout: float = 0.0, check: bool = True) -> nn.Module:
    """A freshly initialised network for inputs of input_shape (C, H, W) and num_classes outputs; `check`
    runs it once on example inputs (off when rebuilding a file's network, whose input may be large)."""
    check_arch(arch, dropout)
    model = FAMILIES[kind(arch)].build(arch, tuple(input_shape), num_classes, generator, dropout)
    model.arch, model.output_classes = arch, num_classes
    if check:
        check_input(model, arch, tuple(input_shape), num_classes)
    return model


def python_factory(model: nn.Module | Callable[..., nn.Module], input_shape: tuple[int, int, int],
                   num_classes: int) -> tuple[str, Callable[[torch.Generator], nn.Module]]:
    """(arch label, builder) for a model given as Python code: a factory called as
    factory(in_channels=C, num_classes=K) under a forked global RNG seeded from the init generator, or an
    nn.Module, copied as it is (every seed then starts from its weights)."""
    if isinstance(model, nn.Module):
        name, template = type(model).__name__, copy.deepcopy(model)

        def make(gen: torch.Generator) -> nn.Module:
            return copy.deepcopy(template)
    elif callable(model):
        name = getattr(model, "__name__", type(model).__name__)

        def make(gen: torch.Generator) -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed_from(gen))
                built = model(in_channels=input_shape[0], num_classes=num_classes)
            if not isinstance(built, nn.Module):
                raise ConfigError(f"model factory {name} returned a {type(built).__name__}, not a torch.nn.Module")
            return built
    else:
        raise ConfigError(f"model must be a torch.nn.Module or a factory(in_channels, num_classes), got "
                          f"{type(model).__name__}")
    arch = f"python:{name}"

    def build(gen: torch.Generator) -> nn.Module:
        built = make(gen)
        built.input_shape, built.arch, built.output_classes = tuple(input_shape), arch, num_classes
        check_input(built, arch, input_shape, num_classes)
        return built
    return arch, build


def describe(model: nn.Module) -> dict[str, Any]:
    """What rebuilds the model's structure: arch, input shape, classes (and LeNet's widths and dropout)."""
    out: dict[str, Any] = {"arch": getattr(model, "arch", LENET), "input_shape": list(model.input_shape)}
    if isinstance(model, LeNet5):
        out.update(num_classes=model.io["num_classes"], widths=list(model.widths), dropout=model.dropout)
    else:
        out["num_classes"] = model.output_classes
        if getattr(model, "pruned_channels", None):  # slimmed: channels removed per group (structured.shrink)
            out["pruned_channels"] = dict(model.pruned_channels)
    return out


def described_parameters(desc: dict[str, Any], arch_override: str | None = None) -> int:
    """Parameters of the network a description names (before any channel is removed), counted without allocating
    its weights: by its family's formula, or on the meta device."""
    family = FAMILIES[kind(desc["arch"])]
    if family.count is not None:
        return family.count(desc)
    with torch.device("meta"):
        model = rebuild(desc, arch_override)
    return count_params(model)


def rebuild(desc: dict[str, Any], arch_override: str | None = None) -> nn.Module:
    """An untrained model of the described structure (weights to be loaded by the caller)."""
    family = FAMILIES[kind(desc["arch"])]
    if family.rebuild is not None:
        return family.rebuild(desc)
    return build_model(arch_override or desc["arch"], tuple(int(v) for v in desc["input_shape"]), int(desc["num_classes"]), check=False)
