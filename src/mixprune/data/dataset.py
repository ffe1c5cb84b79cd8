"""A dataset in memory (uint8 images, int64 labels, class names) and its per-batch normalization.

    ds = Dataset(train_x, train_y, test_x, test_y, source="...", classes=("cat", "dog"))
    ds.shape, ds.num_classes                 # (C, H, W), K
    mean, std = ds.normalization()           # per channel: the spec's, or measured on the training split
    images = Images(ds.test_x, mean, std)    # images[i:j] -> float32 [j-i, C, H, W], (x/255 - mean) / std

Images stay uint8 wherever they live (CIFAR-10 is 150 MB as uint8, 600 MB as float32) and are
normalized batch by batch on the device that holds them; `images[idx]` computes exactly what
normalizing the whole tensor first and then indexing it would (the same elementwise operations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.config import MAX_CLASSES
from ..core.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """The whole dataset in memory: uint8 images [N, C, H, W] (or [N, H, W], taken as one channel), int64
    labels [N], the class names, and where it came from. mean/std (per channel, in units of the [0, 1]
    pixel range) are the dataset's published normalization; None: measured on the training split."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: Path | str
    classes: tuple[str, ...] = ()
    name: str = "custom"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    mapped: Path | None = None  # images memory-mapped from this file (too large for memory), else resident
    val_x: torch.Tensor | None = None  # a validation split held out from the training images (hold_out)
    val_y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dim() == 3:
                x = x.unsqueeze(1)
                object.__setattr__(self, f"{split}_x", x)
            if x.dim() != 4 or x.dtype != torch.uint8:
                raise DataError(f"{self.name}: {split} images must be uint8 [N, C, H, W], got {x.dtype} "
                                f"{list(x.shape)}")
            if y.dim() != 1 or len(y) != len(x):
                raise DataError(f"{self.name}: {len(x)} {split} images but labels of shape {list(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(f"{self.name}: train images are {list(self.train_x.shape[1:])}, test images "
                            f"{list(self.test_x.shape[1:])}; they must match")
        if not self.classes:
            top = max((int(y.max()) for y in (self.train_y, self.test_y) if len(y)), default=0)
            if top >= MAX_CLASSES:
                raise DataError(f"{self.name}: a label is {top}, more classes than the {MAX_CLASSES:,} mixprune takes")
            object.__setattr__(self, "classes", tuple(str(c) for c in range(top + 1)))
        if len(self.classes) > MAX_CLASSES:
            raise DataError(f"{self.name}: {len(self.classes):,} classes, more than the {MAX_CLASSES:,} mixprune takes "
                            "(each model's results hold a confusion matrix of them)")
        for split in ("train", "test"):
            y = getattr(self, f"{split}_y")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataError(f"{self.name}: a {split} label is outside 0-{len(self.classes) - 1} "
                                f"({len(self.classes)} classes)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _with(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor) -> Dataset:
        return dataclasses.replace(self, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)

    def subset(self, train: int = 0, test: int = 0) -> Dataset:
        """The first `train` / `test` examples (0 keeps all)."""
        tr = slice(None, train or None)
        te = slice(None, test or None)
        return self._with(self.train_x[tr], self.train_y[tr], self.test_x[te], self.test_y[te])

    def cv_split(self, fold: int, folds: int) -> Dataset:
        """Fold `fold` of `folds` of the training images becomes the evaluation split, the rest the training
        split. Folds come from one fixed permutation (seed 0), so they are disjoint and cover every image."""
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        order = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(0))
        bounds = [len(order) * k // folds for k in range(folds + 1)]
        held = order[bounds[fold]:bounds[fold + 1]]
        rest = torch.cat([order[:bounds[fold]], order[bounds[fold + 1]:]])
        return self._with(self.train_x[rest], self.train_y[rest], self.train_x[held], self.train_y[held])

    def hold_out(self, fraction: float) -> Dataset:
        """round(fraction * n) images of every class move from the training split to a validation split
        (val_x, val_y), chosen by one fixed permutation (seed 0); the test split is untouched."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        order = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(0))
        held = torch.zeros(len(order), dtype=torch.bool)
        for c in range(len(self.classes)):
            members = order[self.train_y[order] == c]
            held[members[:round(fraction * len(members))]] = True
        if not held.any() or held.all():
            raise DataError(f"{self.name}: holding out {fraction:g} of {len(order)} training images leaves no "
                            "validation or no training images; use more images or another --val-fraction")
        rest, val = (~held).nonzero().flatten(), held.nonzero().flatten()
        return dataclasses.replace(self._with(self.train_x[rest], self.train_y[rest], self.test_x, self.test_y),
                                   val_x=self.train_x[val], val_y=self.train_y[val])

    def resized(self, size: int) -> Dataset:
        """Every image resized to size x size (bilinear with antialiasing, rounded back to uint8); DataError, before
        anything is allocated, where the resized images would take more than the memory budget."""
        if size <= 0 or (self.shape[1], self.shape[2]) == (size, size):
            return self
        images = len(self.train_x) + len(self.test_x)
        need, budget = images * self.shape[0] * size * size, memory_budget()
        if need > budget:
            raise DataError(f"{self.name}: {images:,} images resized to {size}x{size} take {need / 2**30:.1f} GiB, more "
                            f"than the {budget / 2**30:.1f} GiB of memory at hand; use fewer images (--train-subset, "
                            "--test-subset) or a smaller --image-size")
        return self._with(resize(self.train_x, size), self.train_y, resize(self.test_x, size), self.test_y)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel: the published ones, or measured on the training split."""
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        return channel_stats(self.train_x)


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], in chunks so that the float copy stays small."""
    parts = [F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                           align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
             for i in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else images.new_zeros((0, images.shape[1], size, size))


def memory_budget() -> int:
    """Bytes of decoded images kept in memory before they go to a memory-mapped file: half of what the
    machine has available now (MemAvailable), or 4 GiB where that cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in units of the [0, 1] pixel range (summed
    chunk by chunk in float64, so a memory-mapped dataset is read once and never copied whole)."""
    if len(images) == 0:
        raise DataError("cannot measure the normalization of an empty training split")
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk].transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
        total += part.sum(1)
        squares += (part * part).sum(1)
    n = images[0, 0].numel() * len(images)
    mean = total / n
    std = (squares / n - mean * mean).clamp_(min=0).sqrt()
    if bool((std == 0).any()):
        raise DataError("every training image has the same value in some channel: nothing to learn from; "
                        "check the images")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class Images:
    """uint8 images [N, C, H, W] on one device, normalized when indexed: images[idx] is float32
    (x / 255 - mean) / std, in `memory_format` when 4-d. Stands in for the float tensor wherever code
    slices or indexes the dataset (training batches, evaluation batches, calibration images)."""

    def __init__(self, raw: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 memory_format: torch.memory_format = torch.contiguous_format, device: torch.device | None = None):
        """device: where batches go, when the images stay elsewhere (memory-mapped on the CPU for a GPU run)."""
        self.raw = raw
        self.memory_format = memory_format
        self.out = torch.device(device) if device is not None else raw.device
        shape = (len(mean), 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.out).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.out).view(shape)
        self.stats = (tuple(mean), tuple(std))

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, torch.Tensor) and index.dim() >= 1 and not index.dtype.is_floating_point \
                and index.dtype != torch.bool:  # index_select: ~8x faster than advanced indexing on the CPU
            flat = index.flatten().to(self.raw.device)
            picked = self.raw.index_select(0, flat).view(*index.shape, *self.raw.shape[1:])
        else:
            picked = self.raw[index]
        x = picked.to(self.out, non_blocking=True).to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    @property
    def device(self) -> torch.device:
        return self.out

    @property
    def is_cuda(self) -> bool:
        return self.out.type == "cuda"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None) -> Images:
        """On `device`: the images themselves move there, unless they stay mapped on the CPU (then batches do)."""
        fmt = self.memory_format if memory_format is None else memory_format
        if self.raw.device != self.out:  # a mapped dataset stays where it is
            return Images(self.raw, *self.stats, memory_format=fmt, device=device)
        return Images(self.raw.to(device), *self.stats, memory_format=fmt)

    def value_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized values of pixels 0 and 255 per channel [C, 1, 1]: the valid input range."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std
