"""Datasets: a registry of loaders (IDX family, CIFAR, scikit-learn digits, image folders) that all
return one Dataset (uint8 images, labels, class names, normalization), and a run's view of it (prepare.py:
subset, cross-validation fold, validation split, tensors on the device). See registry.py."""

from .dataset import Dataset, Images, channel_stats
from .idx import (
    ENV_VAR,
    FASHION_MNIST,
    IDX_FAMILY,
    IdxFiles,
    download_fashion_mnist,
    load_fashion_mnist,
    load_idx,
    locate,
    parse_idx,
    read_bytes,
)
from .prepare import Tensors, as_dataset, evaluation_split, on_device, prepare_dataset, prepare_tensors
from .registry import REGISTRY, DatasetSpec, check_name, describe, download, load_dataset

__all__ = ["Dataset", "Images", "channel_stats", "ENV_VAR", "FASHION_MNIST", "IDX_FAMILY", "IdxFiles",
           "download_fashion_mnist", "load_fashion_mnist", "load_idx", "locate", "parse_idx", "read_bytes", "REGISTRY",
           "DatasetSpec", "check_name", "describe", "download", "load_dataset", "Tensors", "as_dataset", "evaluation_split",
           "on_device", "prepare_dataset", "prepare_tensors"]
