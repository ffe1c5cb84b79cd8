"""A run's view of a dataset, and the dataset as tensors on the device that trains.

    ds = prepare_dataset(cfg, None)            # the configured dataset: resized, subset, cv fold, validation split
    data = prepare_tensors(ds, device)         # Tensors: uint8 images normalized per batch, labels, on `device`
    data = on_device(shared_cpu_tensors, gpu)  # a worker's copy on its GPU, moved once per process
    ds = as_dataset((train_x, train_y, test_x, test_y))   # what a Python user has, as a Dataset

The view is what the config asks for, in this order: the first --train-subset / --test-subset images, resized to
--image-size, cross-validation fold --cv-fold held out as the evaluation split (replacing the test split), and,
for --prune-ratios auto, a stratified validation split held out from the training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.config import StudyConfig
from ..core.errors import ConfigError, DataError
from ..core.runtime import memory_format
from .dataset import Dataset, Images
from .registry import load_dataset


@dataclass(frozen=True)
class Tensors:
    """A dataset ready for the model, on one device: inputs that index to normalized float32 batches
    [b, C, H, W] (Images over uint8 images, or plain float tensors) and int64 labels [N]."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None  # a validation split held out from the training images, where the run has one
    val_y: torch.Tensor | None = None


def evaluation_split(cfg: StudyConfig) -> str:
    """Which images the run's accuracies are measured on: "test", or "validation" (a cross-validation fold of the
    training images stands in for the test split)."""
    return "validation" if cfg.data.cv_fold >= 0 else "test"


def prepare_dataset(cfg: StudyConfig, dataset: Dataset | None) -> Dataset:
    """The configured dataset (or the caller's), subset, resized and cross-validation split as cfg says: subset
    first, so that --image-size costs memory for the images used only (the same images either way: resizing is
    per image)."""
    ds = load_dataset(cfg.data) if dataset is None else dataset
    ds = ds.subset(cfg.data.train_subset, cfg.data.test_subset).resized(cfg.data.image_size)
    if cfg.data.cv_fold >= 0:  # the held-out fold replaces the test split
        if len(ds.train_y) < 2 * cfg.data.cv_folds:
            raise ConfigError(f"--cv-folds {cfg.data.cv_folds} needs at least {2 * cfg.data.cv_folds} training images "
                              f"(two per fold), got {len(ds.train_y)}; use more images (--train-subset) or fewer folds")
        ds = ds.cv_split(cfg.data.cv_fold, cfg.data.cv_folds)
    if cfg.prune.method == "structured" and cfg.prune.ratios == "auto":  # sensitivity is measured on held-out images
        ds = ds.hold_out(cfg.prune.val_fraction)
    return ds


def prepare_tensors(ds: Dataset, device: torch.device) -> Tensors:
    """The dataset on `device` as uint8 images normalized per batch (Images) and labels."""
    fmt = memory_format(device)
    mean, std = ds.normalization()
    val = (None, None)
    if ds.val_x is not None and ds.val_y is not None:
        val = (Images(ds.val_x.to(device), mean, std, fmt), ds.val_y.to(device))
    if ds.mapped is not None:  # too large for memory: the images stay mapped, batches go to the device
        return Tensors(Images(ds.train_x, mean, std, fmt, device), ds.train_y.to(device),
                       Images(ds.test_x, mean, std, fmt, device), ds.test_y.to(device), *val)
    return Tensors(Images(ds.train_x.to(device), mean, std, fmt), ds.train_y.to(device),
                   Images(ds.test_x.to(device), mean, std, fmt), ds.test_y.to(device), *val)


_ON_DEVICE: dict[tuple[int, str], Tensors] = {}  # per process: the shared CPU tensors, moved to the GPU once


def on_device(data: Tensors, device: torch.device) -> Tensors:
    """data on `device`: GPU workers receive CPU tensors (shared memory) and move them once per process."""
    if data.train_x.device == device:
        return data
    key = (id(data), str(device))
    if key not in _ON_DEVICE:
        fmt = memory_format(device)
        val = (None, None) if data.val_x is None or data.val_y is None else \
            (data.val_x.to(device, memory_format=fmt), data.val_y.to(device))
        _ON_DEVICE[key] = Tensors(data.train_x.to(device, memory_format=fmt), data.train_y.to(device),
                                  data.test_x.to(device, memory_format=fmt), data.test_y.to(device), *val)
    return _ON_DEVICE[key]


def _images(x: Any, where: str) -> torch.Tensor:
    """uint8 images from uint8 tensors/arrays, or from floats in [0, 1] (rounded to 8 bits)."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach().cpu()
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise DataError(f"{where}: images must be uint8 or floats in [0, 1], got {t.dtype}")
    if len(t) and (float(t.min()) < 0 or float(t.max()) > 1):
        raise DataError(f"{where}: float images must lie in [0, 1] (got {float(t.min()):.3g} to {float(t.max()):.3g}); "
                        "pass uint8 pixels, or scale them: mixprune normalizes them itself")
    return (t * 255).round().to(torch.uint8)


def _from_torch_dataset(ds: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        arr = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img))
        if not isinstance(img, torch.Tensor) and arr.dim() == 3:  # PIL / numpy: H x W x C
            arr = arr.permute(2, 0, 1)
        images.append(_images(arr, f"{where}[{i}]"))
        labels.append(int(label))
    if not images:
        raise DataError(f"{where}: the dataset is empty")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DataError(f"{where}: images of different shapes {sorted(shapes)[:2]}; resize them to one size first")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def as_dataset(data: Any, classes: Sequence[str] | None = None) -> Dataset:
    """A mixprune Dataset from what a person has: a Dataset, (train_x, train_y, test_x, test_y) tensors or
    arrays, or (train, test) torch Datasets of (image, label) items."""
    if isinstance(data, Dataset):
        return data
    names = tuple(classes or ())
    if isinstance(data, (tuple, list)) and len(data) == 4:
        tr_x, tr_y, te_x, te_y = data
        return Dataset(_images(tr_x, "train images"), torch.as_tensor(np.asarray(tr_y), dtype=torch.int64),
                       _images(te_x, "test images"), torch.as_tensor(np.asarray(te_y), dtype=torch.int64),
                       "tensors given to mixprune.reproduce", names, "custom")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        (tr_x, tr_y), (te_x, te_y) = _from_torch_dataset(data[0], "train"), _from_torch_dataset(data[1], "test")
        return Dataset(tr_x, tr_y, te_x, te_y, "torch Datasets given to mixprune.reproduce", names, "custom")
    raise DataError("dataset must be a mixprune Dataset, (train_x, train_y, test_x, test_y) or (train, test) "
                    f"torch Datasets; got {type(data).__name__}")
