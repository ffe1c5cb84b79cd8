"""CIFAR-10 and CIFAR-100 from torchvision's file layout (the python batches), read without unpickling code.

    ds = load_cifar(CIFAR["cifar10"], data_dir="~/data")   # <dir>/cifar-10-batches-py/data_batch_1 ...
    download_cifar(CIFAR["cifar10"], "~/data")             # torchvision's download (needs internet)

The batches are Python pickles. Two guards, each enough alone: a file whose MD5 is not the published
one (torchvision's own list) is refused before it is opened, and every file is read by a restricted
unpickler that builds only numpy arrays and plain containers: any other global a pickle names (os.system,
builtins.eval, ...) is refused with a DataError instead of being called.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import TooLarge, read_capped
from ..core.errors import DataError
from .dataset import Dataset
from .idx import ENV_VAR, candidate_dirs, named_dir, user_cache_dir

MAX_BATCH_BYTES = 256 * 2**20  # the largest real file (CIFAR-100 train) is 155 MB


@dataclass(frozen=True)
class CifarFiles:
    name: str  # registry name
    torchvision: str  # torchvision's class: its base_folder, train_list, test_list and meta name the files
    label_key: str  # b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100)
    counts: dict[str, int]

    def layout(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision)

    def how_to_get(self) -> str:
        return (f"run `mixprune data download --dataset {self.name}` on a machine with internet access, or pass "
                f"--data-dir DIR / set {ENV_VAR} to the directory that holds {self.layout().base_folder}/")


CIFAR = {"cifar10": CifarFiles("cifar10", "CIFAR10", "labels", {"train": 50_000, "test": 10_000}),
         "cifar100": CifarFiles("cifar100", "CIFAR100", "fine_labels", {"train": 50_000, "test": 10_000})}
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists, strings and numbers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is numpy._core in numpy 2
            return super().find_class(module, name)


def read_batch(path: Path, md5: str | None = None) -> dict[str, Any]:
    """One pickled batch as a dict with str keys; md5 (when given) is checked before anything is unpickled."""
    try:
        raw = read_capped(path, MAX_BATCH_BYTES)
    except TooLarge:
        raise DataError(f"{path}: larger than any CIFAR batch ({MAX_BATCH_BYTES:,} bytes at most); not a CIFAR "
                        "file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if md5 is not None and hashlib.md5(raw, usedforsecurity=False).hexdigest() != md5:
        raise DataError(f"{path}: MD5 is not the published one ({md5}); the file is corrupt or was replaced; "
                        "delete it and download the dataset again")
    try:
        obj = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile or broken pickle is bad input
        raise DataError(f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch (a {type(obj).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _split(files: CifarFiles, folder: Path, entries: list[list[str]], verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name, md5 in entries:
        path = folder / name
        batch = read_batch(path, md5 if verify else None)
        data, y = batch.get("data"), batch.get(files.label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' must be a uint8 array [N, 3072] (32x32 RGB), got "
                            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        if not isinstance(y, (list, np.ndarray)) or len(y) != len(data):
            raise DataError(f"{path}: '{files.label_key}' must list one label per image ({len(data)})")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(np.asarray(y, dtype=np.int64)))
    return torch.cat(images), torch.cat(labels)


def find_folder(files: CifarFiles, data_dir: str | Path | None) -> Path:
    base = files.layout().base_folder
    searched = candidate_dirs(data_dir, files.name, None)
    named = named_dir(data_dir)
    if named is not None and not (named[0] / base).is_dir():
        raise DataError(f"{named[1]} has no {base}/ folder; {files.how_to_get()}")
    for d in searched:
        if (d / base).is_dir():
            return d / base
    raise DataError(f"{files.torchvision} not found (looked for {base}/ in {', '.join(map(str, searched))}); "
                    f"{files.how_to_get()}")


def load_cifar(files: CifarFiles, data_dir: str | Path | None = None, verify: bool = True) -> Dataset:
    """Locate, verify and load CIFAR-10/100 as uint8 [N, 3, 32, 32] images and int64 labels."""
    layout = files.layout()
    folder = find_folder(files, data_dir)
    meta = read_batch(folder / layout.meta["filename"], layout.meta["md5"] if verify else None)
    classes = meta.get(layout.meta["key"])
    if not isinstance(classes, list) or not all(isinstance(c, (str, bytes)) for c in classes):
        raise DataError(f"{folder / layout.meta['filename']}: no list of class names under {layout.meta['key']!r}")
    classes = tuple(c.decode() if isinstance(c, bytes) else c for c in classes)
    tr_x, tr_y = _split(files, folder, layout.train_list, verify)
    te_x, te_y = _split(files, folder, layout.test_list, verify)
    for split, y in (("train", tr_y), ("test", te_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{folder}: a {split} label is outside 0-{len(classes) - 1}; the files are corrupt")
    return Dataset(tr_x, tr_y, te_x, te_y, folder, classes, files.name)


def download_cifar(files: CifarFiles, directory: str | Path | None = None) -> Path:
    """torchvision's download (archive MD5 checked by torchvision) into directory; then verified here."""
    root = Path(directory).expanduser() if directory else user_cache_dir(files.name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            files.layout()(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"download into {root} failed: {exc}; without internet access, copy "
                        f"{files.layout().base_folder}/ here and pass --data-dir") from None
    load_cifar(files, root)
    return root
