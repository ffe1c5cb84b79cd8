"""Typed configuration: one dataclass per concern, the paper's preset as the defaults.

Every field carries its help text (shown by `mixprune reproduce --help`), its command-line flag and
its valid range. Values are checked when a dataclass is built, so a bad value fails early with a
`ConfigError` that names the flag, the config-file key, the bad value and the allowed range.

    cfg = StudyConfig()                                   # the paper's study
    cfg = load_config_file("study.toml")                  # same fields from TOML
    cfg = with_overrides(cfg, {"train.epochs": 3})        # what the CLI does with flags
    to_dict(cfg)                                          # saved beside every run's results
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .errors import ConfigError

FLOAT32_MAX = 3.4028234663852886e38
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # every count and seed: far beyond any real one, far below what breaks
MAX_EPOCHS = 100_000  # epochs of any phase: a run of more would not end
MAX_BATCH = 1 << 20  # images per batch
MAX_THREADS = 256  # threads per worker: far beyond any CPU this runs on, far below what makes torch misbehave
MAX_SIDE = 1024  # the largest image side mixprune takes (--image-size, image folders, model files); small CNNs
MAX_CLASSES = 1000  # the most classes a dataset may have (results hold a confusion matrix per model and seed)


def opt(default: Any, help: str, flag: str | None = None, lo: float | None = None,
        hi: float | None = None, hi_open: bool = False, lo_open: bool = False,
        choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text, CLI flag and valid range kept beside it."""
    meta = dict(help=help, flag=flag, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _describe(meta: dict) -> str:
    parts = []
    if meta["lo"] is not None:
        parts.append(f"{'>' if meta['lo_open'] else '>='} {meta['lo']:g}")
    if meta["hi"] is not None:
        parts.append(f"{'<' if meta['hi_open'] else '<='} {meta['hi']:g}")
    if meta["choices"]:
        parts.append("one of " + ", ".join(meta["choices"]))
    return " and ".join(parts)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check (and minimally coerce: int -> float, list -> tuple) one value against its type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            raise TypeError("a non-empty list")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or not INT_MIN <= value <= INT_MAX:
            raise TypeError(f"an integer from {INT_MIN} to {INT_MAX}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError("a finite number")
        if abs(value) > FLOAT32_MAX:  # validated as float64, trained as float32: it would become inf there
            raise TypeError(f"a number within float32's range (|x| <= {FLOAT32_MAX:.4g})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("a string")
        return value
    raise TypeError(f"a value of type {hint}")


def _shown(value: Any) -> str:
    """A value as an error message can show it: short, and never Python's refusal to print a huge integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _in_range(value: Any, meta: dict) -> bool:
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if v is None:
            continue
        if meta["choices"] and v not in meta["choices"]:
            return False
        if meta["lo"] is not None and (v <= meta["lo"] if meta["lo_open"] else v < meta["lo"]):
            return False
        if meta["hi"] is not None and (v >= meta["hi"] if meta["hi_open"] else v > meta["hi"]):
            return False
    return True


def _where(section: str, f: dataclasses.Field) -> str:
    key = f"{section}.{f.name}" if section else f.name
    return f"{f.metadata['flag']} ({key})" if f.metadata.get("flag") else key


class Checked:
    """Mixin: validate every field against its type hint and range when the dataclass is built."""

    SECTION = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            try:
                value = _coerce(f.name, value, hints[f.name])
            except TypeError as exc:
                raise ConfigError(f"invalid {_where(self.SECTION, f)}: expected {exc}, got {_shown(value)}") from None
            if not _in_range(value, f.metadata):
                raise ConfigError(f"invalid {_where(self.SECTION, f)}: must be {_describe(f.metadata)}, "
                                  f"got {_shown(value)}")
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field checks; overridden where a concern has them."""


@dataclass(frozen=True)
class DataConfig(Checked):
    SECTION = "data"
    dataset: str = opt("fashion-mnist", "dataset: fashion-mnist (the paper's), mnist, kmnist, cifar10, cifar100, "
                       "digits (scikit-learn's bundled 8x8 digits, offline), or folder:PATH (your images: "
                       "PATH/train/<class>/*, PATH/test/<class>/*, or PATH/<class>/* split by --test-fraction)",
                       flag="--dataset")
    data_dir: str | None = opt(None, "directory holding the dataset's files (IDX files, or the folder holding "
                               "cifar-10-batches-py/); searched first, before $MIXPRUNE_DATA, the user cache and, for "
                               "FashionMNIST, /usr/share/datasets/fashion-mnist", flag="--data-dir")
    image_size: int = opt(0, "resize every image to N x N pixels (bilinear); 0 keeps the dataset's size. Needed where "
                          "the network wants more pixels than the data has (LeNet-5 on 8x8 digits: 28) and for "
                          "folders of images of different sizes", flag="--image-size", lo=0, hi=MAX_SIDE)
    test_fraction: float = opt(0.2, "folder:PATH with no train/ and test/ folders: the share of each class's images "
                               "held out for testing (a fixed split, seed 0)", flag="--test-fraction", lo=0.0,
                               lo_open=True, hi=1.0, hi_open=True)
    memory_budget_mb: float = opt(0.0, "folder:PATH: decoded images larger than this many MiB are memory-mapped "
                                  "from a file (~/.cache/mixprune/decoded) instead of held in memory; 0 = half of the "
                                  "memory available", flag="--memory-budget", lo=0.0)
    train_subset: int = opt(0, "use only the first N training images (0 = all); for quick checks",
                            flag="--train-subset", lo=0)
    test_subset: int = opt(0, "use only the first N test images (0 = all); for quick checks",
                           flag="--test-subset", lo=0)
    cv_fold: int = opt(-1, "k-fold cross-validation: hold out fold K (0-based) of the training images and evaluate "
                       "on it instead of the test split; -1 = off (train on all, test on the test split)",
                       flag="--cv-fold", lo=-1)
    cv_folds: int = opt(5, "number of cross-validation folds (paper's Appendix E: 5)", flag="--cv-folds", lo=2, hi=1000)

    def check(self) -> None:
        if self.cv_fold >= self.cv_folds:
            raise ConfigError(f"invalid --cv-fold (data.cv_fold): must be < --cv-folds ({self.cv_folds}), "
                              f"got {self.cv_fold}")


@dataclass(frozen=True)
class ModelConfig(Checked):
    SECTION = "model"
    arch: str = opt("lenet5", "network: lenet5 (the paper's simplified LeNet-5, Table 1; its flatten size follows the "
                    "input), torchvision:NAME (any torchvision classification model, random init, e.g. "
                    "torchvision:resnet18), timm:NAME (where timm is installed), or PATH.py:FUNCTION (your factory, "
                    "called as FUNCTION(in_channels=C, num_classes=K), returning a torch.nn.Module)", flag="--arch")
    dropout: float = opt(0.0, "dropout probability before fc2 and fc3 of lenet5 (paper: 0, 0.25 in its ablation)",
                         flag="--dropout", lo=0.0, hi=1.0, hi_open=True)
    weights: str = opt("", "trained weights of --arch: a mixprune model file, a safetensors state dict, a PyTorch "
                       "checkpoint (.pt/.pth: a state dict, or one nested under state_dict/model, read with "
                       "torch.load(weights_only=True), never unpickled otherwise), or torchvision:DEFAULT / "
                       "timm:DEFAULT from the local cache. compress: the network to compress; reproduce and search: "
                       "the dense models start from them and train --epochs more (0: as they are); empty: random "
                       "initialisation", flag="--weights")


@dataclass(frozen=True)
class TrainConfig(Checked):
    SECTION = "train"
    epochs: int = opt(10, "training epochs for the dense models (paper: 10)", flag="--epochs", lo=0, hi=MAX_EPOCHS)
    batch_size: int = opt(128, "mini-batch size (paper: 128)", flag="--batch-size", lo=1, hi=MAX_BATCH)
    lr: float = opt(0.01, "SGD learning rate (paper: 0.01)", flag="--lr", lo=0.0, lo_open=True)
    momentum: float = opt(0.9, "SGD momentum (paper: 0.9)", flag="--momentum", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = opt(5e-4, "L2 weight decay (paper: 5e-4)", flag="--weight-decay", lo=0.0)
    lr_decay_epoch: int = opt(8, "after this many epochs the LR is multiplied by lr_decay_factor "
                              "(paper: 8, i.e. epochs 9-10 run at 0.001)", flag="--lr-decay-epoch", lo=0, hi=MAX_EPOCHS)
    lr_decay_factor: float = opt(0.1, "LR multiplier applied at lr_decay_epoch (paper: 0.1)",
                                 flag="--lr-decay-factor", lo=0.0, lo_open=True, hi=1.0)
    eval_batch_size: int = opt(1000, "batch size for evaluation (does not change results)",
                               flag="--eval-batch-size", lo=1, hi=MAX_BATCH)
    lr_schedule: str = opt("step", "learning-rate schedule, set per epoch (as timm's schedulers do by default): step "
                           "(paper: --lr, times --lr-decay-factor from --lr-decay-epoch on; fine-tuning at a constant "
                           "--finetune-lr), cosine (annealed to 0 over the epochs after warm-up; fine-tuning from "
                           "--finetune-lr) or onecycle (linear ramp from 1/25 of the peak over the first 30 percent of "
                           "epochs, then cosine down to 1/25e4 of it, as torch's OneCycleLR; peak --lr, or "
                           "--finetune-lr when fine-tuning)",
                           flag="--lr-schedule", choices=("step", "cosine", "onecycle"))
    warmup_epochs: int = opt(0, "epochs of linear LR warm-up before the schedule (epoch e of W runs at "
                             "--lr * (e + 1) / (W + 1)); 0: none (paper)", flag="--warmup-epochs", lo=0, hi=MAX_EPOCHS)
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy in training and fine-tuning (0: none, "
                                 "paper); evaluation losses stay plain cross-entropy", flag="--label-smoothing",
                                 lo=0.0, hi=1.0, hi_open=True)
    cuda_graphs: bool = opt(True, "on a GPU, replay each full-batch training step as a CUDA graph (one launch "
                            "instead of ~40; same arithmetic); ignored on the CPU, with dropout and with "
                            "gradual pruning", flag="--cuda-graphs")
    stack_models: bool | None = opt(None, "train the chains of each worker together, one pass for many models "
                                    "(vmap over stacked weights, grouped convolutions); each model keeps its own "
                                    "init, data order, Mixup draws, masks and SGD state, and its numbers equal "
                                    "separate training up to float rounding. Not with dropout, gradual pruning or "
                                    "Ray. Default: on with a GPU (faster there), off on the CPU (slower there)",
                                    flag="--stack-models")

    def check(self) -> None:
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"invalid --warmup-epochs {self.warmup_epochs} (train.warmup_epochs): more than --epochs "
                              f"({self.epochs})")


@dataclass(frozen=True)
class MixupConfig(Checked):
    SECTION = "mixup"
    alpha: float = opt(1.0, "Mixup strength: lambda ~ Beta(alpha, alpha) (paper: 1.0); 0 turns Mixup off, so "
                       "that B and D train exactly as A and C (the alpha = 0 point of a sweep)", flag="--alpha", lo=0.0)


@dataclass(frozen=True)
class PruneConfig(Checked):
    SECTION = "prune"
    conv_amount: float = opt(0.2, "fraction of each conv layer's weights removed by L1 magnitude (paper: 0.2); "
                             "structured: of each group's channels, for groups whose first layer is a conv",
                             flag="--conv-amount", lo=0.0, hi=1.0, hi_open=True)
    fc_amount: float = opt(0.3, "fraction of each FC layer's weights removed by L1 magnitude (paper: 0.3); "
                           "structured: of each group's channels, for groups whose first layer is linear",
                           flag="--fc-amount", lo=0.0, hi=1.0, hi_open=True)
    sparsity: float | None = opt(None, "one fraction for every layer: sets both conv_amount and fc_amount (and "
                                 "wins over them); the axis of sparsity sweeps", flag="--sparsity", lo=0.0, hi=1.0,
                                 hi_open=True)
    scope: str = opt("layerwise", "layerwise: each layer loses its own fraction (paper); global: the same "
                     "number of weights is removed, chosen by magnitude across all layers (structured: channels, "
                     "by their score relative to their group's mean)",
                     flag="--prune-scope", choices=("layerwise", "global"))
    method: str = opt("unstructured", "unstructured: individual weights by |w| (paper); structured: whole channels "
                      "(conv filters, FC neurons, with everything coupled to them: residual adds, BatchNorm, "
                      "flatten; Torch-Pruning's dependency graph), then physically removed; 2:4: in every 4 "
                      "consecutive inputs of a row the 2 largest |w| stay (layers whose rows split into 4s; the "
                      "amounts are ignored)", flag="--prune-method", choices=("unstructured", "structured", "2:4"))
    norm: float = opt(1.0, "n of the Ln norm that ranks channels in structured pruning", flag="--prune-norm",
                      lo=1.0)
    importance: str = opt("magnitude", "structured: how channels are ranked: magnitude (Ln norm of the weights that "
                          "produce them, --prune-norm) or bn-scale (|scale| of their BatchNorm)",
                          flag="--prune-importance", choices=("magnitude", "bn-scale"))
    keep: str = opt("", "structured: comma-separated conv/linear layers that keep their width (the classifier "
                    "always does)", flag="--keep")
    ratios: str = opt("", "structured: per-group ratios GROUP=R,... (groups as `mixprune sensitivity` names them; "
                      "others use --conv-amount / --fc-amount), or auto: per group the largest ratio whose "
                      "accuracy drop on a validation split stays under --max-drop", flag="--prune-ratios")
    max_drop: float = opt(1.0, "--prune-ratios auto: largest accuracy drop (points) a group may cost when pruned "
                          "alone, on the validation split", flag="--max-drop", lo=0.0, lo_open=True, hi=100.0)
    val_fraction: float = opt(0.1, "--prune-ratios auto: share of the training images held out as the validation "
                              "split (stratified; never the test split)", flag="--val-fraction", lo=0.0, lo_open=True,
                              hi=0.5)
    schedule: str = opt("oneshot", "oneshot: prune once, then fine-tune (paper); gradual: prune during fine-tuning "
                        "along the cubic schedule of Zhu & Gupta (2017)",
                        flag="--prune-schedule", choices=("oneshot", "gradual"))
    gradual_end: float = opt(0.75, "gradual: share of the fine-tuning steps after which the final sparsity holds",
                             flag="--gradual-end", lo=0.0, lo_open=True, hi=1.0)
    gradual_every: int = opt(50, "gradual: optimizer steps between mask updates", flag="--gradual-every", lo=1)
    finetune_epochs: int = opt(3, "fine-tuning epochs after pruning (paper: 'several'; our choice: 3)",
                               flag="--finetune-epochs", lo=0, hi=MAX_EPOCHS)
    finetune_lr: float = opt(0.001, "constant SGD LR while fine-tuning (paper: not given; our choice: "
                             "0.001, the final LR of training)", flag="--finetune-lr", lo=0.0, lo_open=True)
    finetune_mixup: str = opt("inherit", "Mixup while fine-tuning: inherit (paper: D with Mixup, C without), "
                              "always or never", flag="--finetune-mixup", choices=("inherit", "always", "never"))

    def check(self) -> None:
        if self.sparsity is not None:
            object.__setattr__(self, "conv_amount", self.sparsity)
            object.__setattr__(self, "fc_amount", self.sparsity)
        if self.method == "2:4" and self.schedule == "gradual":
            raise ConfigError("invalid --prune-schedule gradual with --prune-method 2:4: the 2:4 pattern is set at "
                              "once; use --prune-schedule oneshot")
        if self.method == "2:4" and self.scope == "global":
            raise ConfigError("invalid --prune-scope global with --prune-method 2:4: it ranks weights within each "
                              "group of 4; use --prune-scope layerwise")
        if self.method == "structured" and self.schedule == "gradual" and self.scope == "global":
            raise ConfigError("invalid --prune-scope global with --prune-schedule gradual and --prune-method "
                              "structured: gradual removal ranks channels within each group; use --prune-scope "
                              "layerwise")
        if (self.keep or self.ratios) and self.method != "structured":
            raise ConfigError(f"--keep and --prune-ratios apply to --prune-method structured, not {self.method}")
        self.group_ratios()

    def keep_layers(self) -> tuple[str, ...]:
        """The --keep layer names."""
        return tuple(n.strip() for n in self.keep.split(",") if n.strip())

    def group_ratios(self) -> dict[str, float]:
        """The GROUP=R entries of --prune-ratios ({} for none or auto); ConfigError for a malformed one."""
        if self.ratios in ("", "auto"):
            return {}
        out = {}
        for entry in self.ratios.split(","):
            name, sep, value = entry.strip().partition("=")
            try:
                ratio = float(value)
            except ValueError:
                ratio = -1.0
            if not sep or not name or not 0.0 <= ratio < 1.0:
                raise ConfigError(f"invalid --prune-ratios entry {entry.strip()!r}: use GROUP=R with R in [0, 1), "
                                  "e.g. conv1=0.5,fc1=0.3, or auto")
            if name.strip() in out:
                raise ConfigError(f"invalid --prune-ratios: {name.strip()} is given twice ({out[name.strip()]:g} and "
                                  f"{ratio:g}); give each group once")
            out[name.strip()] = ratio
        return out


@dataclass(frozen=True)
class DistillConfig(Checked):
    SECTION = "distill"
    enabled: bool = opt(False, "knowledge distillation: add Pruned+KD and Mixup+Pruned+KD to the study, which "
                        "fine-tune like Pruned (C) and Mixup+Pruned (D) against a teacher with Hinton's loss "
                        "(1 - w) * CE + w * T^2 * KL(teacher_T || student_T); the teacher sees the same (mixed) "
                        "images", flag="--distill")
    temperature: float = opt(4.0, "distillation temperature T (Hinton et al.: 2-20)", flag="--kd-temperature",
                             lo=0.0, lo_open=True, hi=100.0)
    weight: float = opt(0.9, "distillation weight w of the KL term (1 - w weighs the cross-entropy)",
                        flag="--kd-weight", lo=0.0, hi=1.0)
    teacher: str = opt("", "the teacher of the KD variants: empty = each one's dense parent (Baseline for "
                       "Pruned+KD, Mixup for Mixup+Pruned+KD); or a saved model FILE (.safetensors written by "
                       "mixprune, e.g. a wider network) trained on the same dataset", flag="--teacher")

    def check(self) -> None:
        if self.teacher and not self.enabled:
            raise ConfigError(f"--teacher {self.teacher} needs --distill (the teacher of the KD variants)")


@dataclass(frozen=True)
class BenchConfig(Checked):
    SECTION = "bench"
    latency: bool = opt(True, "measure inference latency (torch.utils.benchmark, median after warm-up)",
                        flag="--latency")
    onnx: bool = opt(True, "export every model to ONNX and verify it in ONNX Runtime on the whole test split",
                     flag="--onnx")
    min_run_time: float = opt(0.5, "at most this many seconds of timed runs per latency measurement; it stops "
                              "sooner (after 0.1 s) once the IQR of the runs is within 5 percent of their median",
                              flag="--bench-seconds", lo=0.0, lo_open=True, hi=60.0)
    quick: bool = opt(False, "training and accuracy only: test metrics, parameter and MAC counts and the fp32 "
                      "safetensors file; no latency, ONNX, robustness, other files or their decoded checks (sets "
                      "--no-latency --no-onnx); default: measure everything", flag="--quick")

    def check(self) -> None:
        if self.quick:
            object.__setattr__(self, "latency", False)
            object.__setattr__(self, "onnx", False)


@dataclass(frozen=True)
class StudyConfig(Checked):
    SECTION = ""
    seeds: tuple[int, ...] = opt((0, 1, 2), "seeds; each trains all four models with its own initialisation, "
                                 "data order and Mixup draws", flag="--seeds", lo=0)
    device: str = opt("auto", "where to train: auto (cuda when available), cpu or cuda", flag="--device",
                      choices=("auto", "cpu", "cuda"))
    workers: int = opt(0, "worker processes training independent models at once (0 = one per CPU core, or up to "
                       "two per core where that ends uneven rounds of chains sooner, e.g. 3 chains on 2 cores; at "
                       "most one per model chain; 1 on a GPU unless set)", flag="--workers", lo=0, hi=1024)
    threads: int = opt(0, "CPU threads per worker (0 = cores / workers); results depend on it, so it is "
                       "recorded; more than the machine's cores only slows training (the CLI warns)", flag="--threads",
                       lo=0, hi=MAX_THREADS)
    backend: str = opt("local", "where training tasks run: local (this machine: processes over its cores) or ray "
                       "(Ray tasks: a local Ray instance, or the cluster at --address)", flag="--backend",
                       choices=("local", "ray"))
    ray_address: str | None = opt(None, "address of an existing Ray cluster for --backend ray (e.g. ray://HOST:10001); "
                                  "default: start a local Ray instance", flag="--address")
    out: str | None = opt(None, "output directory (default, also when empty: runs/reproduce-<timestamp>); one that "
                          "holds anything but a run of the same config is refused (a run of the same config is run "
                          "again, e.g. after an interruption)", flag="--out")
    overwrite: bool = opt(False, "replace an --out that holds another run or other files: the new run is written beside "
                          "it and swapped in whole when it completes; the old one stays until then", flag="--overwrite")
    cache_dir: str | None = opt(None, "directory of trained and measured models reused by any run whose settings "
                                "for that model are identical (same data, training, seed, device, threads, "
                                "versions); sweeps use OUT/cache", flag="--cache-dir")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def check(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"invalid --seeds (seeds): seeds must be distinct, got {list(self.seeds)}")
        if self.ray_address is not None and self.backend != "ray":
            raise ConfigError(f"--address {self.ray_address} (ray_address) is for --backend ray; add --backend ray, or "
                              "drop --address to train on this machine")


SECTIONS = ("data", "model", "train", "mixup", "prune", "distill", "bench")
# Top-level settings that say where outputs go and where tasks run, never what a run computes: not swept,
# not part of a sweep cell's name, and not a difference between runs that a comparison reports.
PLACEMENT_FIELDS = ("out", "overwrite", "cache_dir", "backend", "ray_address")


def what_it_computes(config: dict[str, Any]) -> dict[str, Any]:
    """A config's fields (to_dict) without PLACEMENT_FIELDS, and without LATE_FIELDS at their defaults (a run written
    before such a field existed computed what its default computes): what decides whether two runs are the same."""
    out = {}
    for key, value in config.items():
        if key in PLACEMENT_FIELDS:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if LATE_FIELDS.get((key, k), ()) != v}
        out[key] = value
    return out


# Fields added after sweeps were first written, with their defaults: left out of a cell's identity while
# at the default, so that sweep directories written before the field existed keep their cell names.
LATE_FIELDS: dict[tuple[str, str], Any] = {("train", "stack_models"): None, ("model", "weights"): "", ("data", "dataset"): "fashion-mnist",
                                            ("data", "image_size"): 0, ("data", "test_fraction"): 0.2,
                                            ("data", "memory_budget_mb"): 0.0, ("train", "lr_schedule"): "step",
                                            ("train", "warmup_epochs"): 0, ("train", "label_smoothing"): 0.0,
                                            ("distill", "enabled"): False, ("distill", "temperature"): 4.0,
                                            ("distill", "weight"): 0.9, ("distill", "teacher"): ""}


def identity(cfg: StudyConfig) -> dict[str, Any]:
    """to_dict(cfg) without late fields at their defaults: what names a sweep cell."""
    out = to_dict(cfg)
    for (section, name), default in LATE_FIELDS.items():
        if out[section].get(name) == default:
            del out[section][name]
    return {k: v for k, v in out.items() if v != {}}  # a late section all at its defaults: as if absent


def to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """Plain JSON/TOML-ready dict of a config (tuples become lists)."""
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v
    out = {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
    return {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in out.items()}


def check_names(raw: dict[str, Any], where: str = "config") -> None:
    """ConfigError naming `where` for a value that is not a table of settings, or an unknown section or field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(raw).__name__}")
    top_fields = {f.name for f in dataclasses.fields(StudyConfig)}
    hints = typing.get_type_hints(StudyConfig)
    for key, value in raw.items():
        if key not in top_fields:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(top_fields)}")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table of settings, got {_shown(value)}")
            known = {f.name for f in dataclasses.fields(hints[key])}
            for sub in value:
                if sub not in known:
                    raise ConfigError(f"{where}: unknown setting {key}.{sub}; known: {', '.join(sorted(known))}")


def from_dict(raw: dict[str, Any], where: str = "config") -> StudyConfig:
    """Build a StudyConfig from nested plain data, rejecting unknown sections and fields by name."""
    check_names(raw, where)
    hints = typing.get_type_hints(StudyConfig)
    return StudyConfig(**{k: hints[k](**v) if k in SECTIONS else v for k, v in raw.items()})


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw with the dotted key ('train.epochs', 'seeds') set to value, in place."""
    section, _, name = key.rpartition(".")
    (raw[section] if section else raw)[name] = value


def layered(layers: list[tuple[str, dict[str, Any]]], overrides: dict[str, Any] | None = None,
            base: StudyConfig | None = None) -> StudyConfig:
    """One StudyConfig from the paper's defaults (or `base`), then each (where, settings) layer (a study file, a
    config file), then `overrides` (dotted keys: the flags). Each layer's names are checked against the fields
    (naming its file); values and their combinations are checked once, on the merged settings, so a file may
    hold a setting that only a flag makes valid."""
    merged = to_dict(base or StudyConfig())
    for where, raw in layers:
        check_names(raw, where)
        for key, value in raw.items():
            if isinstance(value, dict):
                merged[key].update(value)
            else:
                merged[key] = value
    for key, value in (overrides or {}).items():
        _set(merged, key, value)
    return from_dict(merged, where=layers[-1][0] if layers else "config")


MAX_TOML_BYTES = 1 << 20  # config and study files are a few hundred bytes; 1 MiB is far beyond any real one


def read_toml(p: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A TOML file (parsed, never evaluated) of at most MAX_TOML_BYTES; ConfigError naming `what` (e.g.
    'config file') otherwise, with `hint` added where the file cannot be read."""
    from .atomic import TooLarge, read_text_capped

    try:
        text = read_text_capped(p, MAX_TOML_BYTES)
    except TooLarge:
        raise ConfigError(f"{what} {p} is larger than {MAX_TOML_BYTES:,} bytes: not a mixprune {what}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror or exc}{hint}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {p} is not UTF-8 text") from None
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))  # a byte-order mark: what some editors save first
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {p} is not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits: Python refuses to convert it
        raise ConfigError(f"{what} {p} holds a value mixprune cannot take ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{what} {p} nests tables or arrays too deeply to be a mixprune {what}") from None


RECIPES = Path(__file__).parent.parent / "recipes"  # bundled config files: `--config NAME`


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def config_path(name_or_path: str) -> Path:
    """--config's file: a bundled recipe named without a path (bundled_recipes(); a file of that name in the
    working directory wins), else the path given."""
    p = Path(name_or_path)
    if not p.exists() and name_or_path in bundled_recipes():
        return RECIPES / f"{name_or_path}.toml"
    return p


def load_config_file(path: str | Path, base: StudyConfig | None = None,
                     overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Parse a TOML config file (never evaluated) into a StudyConfig: its settings on top of `base` (or the paper's
    defaults), then `overrides` (dotted keys), checked together once merged."""
    p = Path(path)
    return layered([(f"config file {p}", read_toml(p, "config file"))], overrides, base)


def with_overrides(cfg: StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """Return cfg with dotted keys ('train.epochs', 'seeds') replaced; validation runs again."""
    return layered([], overrides, cfg)


def flag_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type hint) for every field that has a CLI flag, in declaration order."""
    out = []
    top_hints = typing.get_type_hints(StudyConfig)
    for f in dataclasses.fields(StudyConfig):
        if f.name in SECTIONS:
            cls = top_hints[f.name]
            hints = typing.get_type_hints(cls)
            out += [(f"{f.name}.{g.name}", g, hints[g.name]) for g in dataclasses.fields(cls) if g.metadata.get("flag")]
        elif f.metadata.get("flag"):
            out.append((f.name, f, top_hints[f.name]))
    return out


def toml_text(cfg: StudyConfig) -> str:
    """The resolved config as TOML (None values are left out: they mean 'default')."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else str(v)
        # ints and strings: JSON's quoting is valid TOML, as long as non-ASCII characters stay themselves (JSON's
        # \\ud83d surrogate escapes for an emoji are not valid TOML)
        return json.dumps(v, ensure_ascii=False)
    raw = to_dict(cfg)
    lines = ["# mixprune resolved config; reuse with: mixprune reproduce --config config.toml"]
    lines += [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict) and v is not None]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {value(v)}" for k, v in body.items() if v is not None]
    return "\n".join(lines) + "\n"
