"""The public entry point: the study on any data and network, with its report.

    from mixprune import StudyConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2)))    # the paper's study; writes results.json, report.md, ...

    # your own network and data: a factory(in_channels, num_classes) or an nn.Module, and tensors
    results = reproduce(cfg, dataset=(train_x, train_y, test_x, test_y), model=build, classes=("cat", "dog"))

Data may be a mixprune Dataset, a tuple of tensors (train images, train labels, test images, test
labels; images uint8 [N, C, H, W] or [N, H, W], or floats in [0, 1], which are rounded to 8 bits) or a
pair of torch Datasets (train, test) whose items are (image, label) with PIL images or tensors. A
model given as Python code trains in this process (worker processes could not import it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import StudyConfig
from .data import Dataset
from .errors import DataError
from .paths import RunPaths
from .report import write_report
from .study import Observer, run_study


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


def reproduce(cfg: StudyConfig | None = None, dataset: Any = None, observer: Observer | None = None,
              model: Any = None, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the study (the paper's four variants) and write its report; returns the content of results.json.

    dataset: None (the configured --dataset), or your data (see as_dataset); model: None (the configured
    --arch), a factory called as model(in_channels=C, num_classes=K), or an nn.Module (every seed starts
    from its weights); classes: names for your labels."""
    data = as_dataset(dataset, classes) if dataset is not None else None
    results = run_study(cfg or StudyConfig(), dataset=data, observer=observer, model=model)
    write_report(results, RunPaths(Path(results["output_dir"])))
    return results
