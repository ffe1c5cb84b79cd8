"""Every dataset mixprune knows, one entry each, behind one interface.

    ds = load_dataset(DataConfig(dataset="digits"))                    # a Dataset, loaded and verified
    describe()                                                         # name -> one line, for --help

Entries: fashion-mnist (the paper's), mnist and kmnist (IDX files), cifar10 and cifar100 (torchvision's
python batches), digits (scikit-learn's bundled 8x8 digits) and folder:PATH (a user's ImageFolder
tree). Each entry says how to load (locate + verify) and, where it can, how to download. A dataset's
shape, classes and normalization travel with the Dataset it returns (data.dataset.Dataset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ConfigError, DataError
from .cifar import CIFAR, download_cifar, load_cifar
from .dataset import Dataset
from .digits import load_digits
from .folder import load_folder
from .idx import IDX_FAMILY, download_idx, load_idx

if TYPE_CHECKING:
    from ..core.config import DataConfig

FOLDER = "folder:"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    summary: str  # shape, classes, where its files come from
    load: Callable[[DataConfig], Dataset]  # locate, verify and load (before resizing)
    download: Callable[[str | None], Path] | None = None  # torchvision's download, for machines with internet


def _idx(name: str, summary: str) -> DatasetSpec:
    files = IDX_FAMILY[name]
    return DatasetSpec(name, summary, lambda cfg: load_idx(files, cfg.data_dir), lambda d: download_idx(files, d))


def _cifar(name: str, summary: str) -> DatasetSpec:
    files = CIFAR[name]
    return DatasetSpec(name, summary, lambda cfg: load_cifar(files, cfg.data_dir), lambda d: download_cifar(files, d))


REGISTRY = {spec.name: spec for spec in (
    _idx("fashion-mnist", "1x28x28, 10 classes, 60,000/10,000 (the paper's; Debian package or torchvision)"),
    _idx("mnist", "1x28x28, 10 digits, 60,000/10,000 (IDX files; torchvision download)"),
    _idx("kmnist", "1x28x28, 10 Kuzushiji characters, 60,000/10,000 (IDX files; torchvision download)"),
    _cifar("cifar10", "3x32x32, 10 classes, 50,000/10,000 (torchvision's python batches)"),
    _cifar("cifar100", "3x32x32, 100 classes, 50,000/10,000 (torchvision's python batches)"),
    DatasetSpec("digits", "1x8x8, 10 digits, 1,437/360 (bundled with scikit-learn: works offline)",
                lambda cfg: load_digits()),
)}


def describe() -> dict[str, str]:
    return {**{n: s.summary for n, s in REGISTRY.items()},
            "folder:PATH": "your images: PATH/train/<class>/* and PATH/test/<class>/* (or PATH/<class>/* split by "
                           "--test-fraction), grayscale or RGB"}


def check_name(name: str) -> None:
    """ConfigError for a name that is neither registered nor folder:PATH."""
    if name in REGISTRY or (name.startswith(FOLDER) and len(name) > len(FOLDER)):
        return
    raise ConfigError(f"invalid --dataset (data.dataset): unknown dataset {name!r}; known: "
                      f"{', '.join(REGISTRY)}, or folder:PATH for your own ImageFolder tree")


def get(name: str) -> DatasetSpec:
    check_name(name)
    if name.startswith(FOLDER):
        path = name[len(FOLDER):]
        return DatasetSpec(name, "your images", lambda cfg: load_folder(
            path, cfg.image_size, cfg.test_fraction, int(cfg.memory_budget_mb * 2**20) if cfg.memory_budget_mb else None))
    return REGISTRY[name]


def load_dataset(cfg: DataConfig) -> Dataset:
    """The configured dataset, loaded and verified (image folders are decoded at --image-size; any other dataset
    keeps its size here: data.prepare resizes it once subset)."""
    return get(cfg.dataset).load(cfg)


def download(name: str, directory: str | None = None) -> Path:
    spec = get(name)
    if spec.download is None:
        raise DataError(f"--dataset {name}: nothing to download ({spec.summary})")
    return spec.download(directory)
