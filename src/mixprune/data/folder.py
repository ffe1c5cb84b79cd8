"""A user's own images in the ImageFolder layout, decoded with Pillow.

    ds = load_folder("~/flowers")                     # ~/flowers/train/<class>/*.png and ~/flowers/test/<class>/...
    ds = load_folder("~/flowers", test_fraction=0.2)  # or one tree ~/flowers/<class>/*, split per class

Grayscale trees load as one channel, anything with colour as RGB (grayscale images among colour ones
are repeated to three channels). Decoded images that would take more than the memory budget (half of
the memory available, or --memory-budget) go to a file under ~/.cache/mixprune/decoded/ that is
memory-mapped, so a large tree costs page cache, not resident memory, and the next run reuses it. Images of different sizes need `image_size` (every image resized to
N x N, bilinear). The split of one tree is fixed: per class, a permutation seeded with 0, the first
round(fraction * n) images (at least one where the class has two or more) go to the test split.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_path, ensure_dir, read_text_capped, write_text_atomic
from ..core.config import MAX_CLASSES, MAX_SIDE
from ..core.errors import DataError
from .dataset import Dataset, memory_budget
from .idx import user_cache_dir

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def class_name(directory: Path) -> str:
    """A class folder's name as text: a name that is not UTF-8 keeps its bytes as backslash escapes (\\xe9), so that
    every class keeps a distinct name that reports, plots and JSON can hold."""
    return directory.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scan(directory: Path) -> dict[str, list[Path]]:
    """class name -> its image files (sorted), for every sub-directory of `directory`; DataError beyond MAX_CLASSES
    class folders, found before any image is read."""
    try:
        subdirs = sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError as exc:
        raise DataError(f"cannot read {directory}: {exc.strerror or exc}") from None
    if len(subdirs) > MAX_CLASSES:
        raise DataError(f"{directory}: {len(subdirs):,} class folders, more than the {MAX_CLASSES:,} classes mixprune "
                        "takes")
    return {class_name(d): sorted(f for f in d.rglob("*") if f.suffix.lower() in SUFFIXES and f.is_file())
            for d in subdirs}


def _decode(path: Path, image_size: int, mode: str) -> np.ndarray:
    """One image as uint8 [H, W] (mode "L") or [H, W, 3] ("RGB": grayscale repeated to three channels)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = im.convert(mode)
                if image_size:
                    im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); remove or replace it") from None


def _header(path: Path) -> tuple[bool, tuple[int, int]]:
    """(grayscale?, (width, height)) from the file's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in GRAY_MODES, im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); remove or replace it") from None


def _shape(files: list[Path], image_size: int) -> tuple[int, int, int]:
    """(C, H, W) every image will have: RGB if any image has colour; one size, or image_size."""
    headers = [_header(f) for f in files]
    sizes = {size: f for (_, size), f in zip(headers, files)}
    if len(sizes) > 1 and not image_size:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DataError(f"images have different sizes ({s1[0]}x{s1[1]} in {f1}, {s2[0]}x{s2[1]} in {f2}); "
                        "pass --image-size N to resize every image to N x N")
    w, h = (image_size, image_size) if image_size else next(iter(sizes))
    if max(w, h) > MAX_SIDE:
        raise DataError(f"images are {w}x{h} ({next(iter(sizes.values()))}), larger than the {MAX_SIDE} pixels a side "
                        "mixprune takes; pass --image-size N to resize them")
    return (1 if all(gray for gray, _ in headers) else 3), h, w


def _mapped_file(files: list[Path], shape: tuple[int, ...], image_size: int) -> Path:
    """Where the decoded images of exactly these files (paths, sizes, times) are kept memory-mapped."""
    h = hashlib.sha256(json.dumps([list(shape), image_size]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return user_cache_dir("decoded") / f"{h.hexdigest()[:24]}.u8"


def _stack(files: list[Path], image_size: int, budget: int) -> tuple[torch.Tensor, Path | None]:
    """Every image decoded into one uint8 tensor [N, C, H, W]: in memory, or, when it would exceed `budget`
    bytes, in a file that is memory-mapped (read page by page as batches need it; kept for the next run)."""
    c, h, w = _shape(files, image_size)
    shape = (len(files), c, h, w)
    mode = "L" if c == 1 else "RGB"
    if len(files) * c * h * w <= budget:
        out = np.empty(shape, dtype=np.uint8)
        for i, f in enumerate(files):
            out[i] = _as_chw(_decode(f, image_size, mode))
        return torch.from_numpy(out), None
    path = _mapped_file(files, shape, image_size)
    if not _intact(path, int(np.prod(shape))):
        ensure_dir(path.parent)
        with atomic_path(path) as tmp:
            with open(tmp, "r+b") as fh:  # the whole file's blocks, reserved now: a disk that fills up is an
                os.posix_fallocate(fh.fileno(), 0, int(np.prod(shape)))  # error here, not SIGBUS on a mapped page
            target = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
            for i, f in enumerate(files):
                target[i] = _as_chw(_decode(f, image_size, mode))
            target.flush()
            del target
        write_text_atomic(_digest_file(path), _digest(path))
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape)), path


def _digest_file(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _intact(path: Path, size: int) -> bool:
    """Whether a decoded file from an earlier run can be used: its size, and the SHA-256 recorded beside it when it
    was written (a file changed since, or cut short by a full disk, is decoded again)."""
    try:
        return (path.stat().st_size == size and
                read_text_capped(_digest_file(path), 128).strip() == _digest(path))
    except (OSError, ValueError):
        return False


def _as_chw(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 0, 1) if a.ndim == 3 else a[None]


def _labelled(tree: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], torch.Tensor]:
    files = [f for c in classes for f in tree[c]]
    labels = torch.tensor([i for i, c in enumerate(classes) for _ in tree[c]], dtype=torch.int64)
    return files, labels


def _split_tree(tree: dict[str, list[Path]], fraction: float) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    train, test = {}, {}
    for c, files in tree.items():
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = min(max(round(fraction * len(files)), 1 if len(files) > 1 else 0), len(files) - 1)
        test[c] = [files[i] for i in sorted(order[:n_test])]
        train[c] = [files[i] for i in sorted(order[n_test:])]
    return train, test


def load_folder(root: str | Path, image_size: int = 0, test_fraction: float = 0.2, budget: int | None = None) -> Dataset:
    """Images below root in the ImageFolder layout (see the module docstring) as a Dataset; decoded images
    larger than `budget` bytes (default: half of the memory available now) are memory-mapped from a file."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--dataset folder:{root}: not a directory; expected {root}/train/<class>/ and "
                        f"{root}/test/<class>/ (or {root}/<class>/ with --test-fraction)")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        missing = "test" if has_train else "train"
        raise DataError(f"{root} has {'train' if has_train else 'test'}/ but no {missing}/; add {root}/{missing}/"
                        f"<class>/ or put the class folders directly in {root} to split with --test-fraction")
    if has_train:
        train, test = _scan(root / "train"), _scan(root / "test")
        if set(train) != set(test):
            raise DataError(f"{root}: class folders differ between train/ and test/ (only in train: "
                            f"{sorted(set(train) - set(test))}, only in test: {sorted(set(test) - set(train))})")
    else:
        train, test = _split_tree(_scan(root), test_fraction)
    classes = sorted(train)
    empty = [c for c in classes if not train[c]]
    if len(classes) < 2 or empty:
        found = sum(len(v) for v in train.values())
        raise DataError(f"{root}: needs at least two class folders with images ({len(classes)} class folder(s), "
                        f"{found} training image(s){', empty: ' + ', '.join(empty) if empty else ''}); image files end "
                        f"in {', '.join(sorted(SUFFIXES))}")
    tr_files, tr_y = _labelled(train, classes)
    te_files, te_y = _labelled(test, classes)
    if not te_files:
        raise DataError(f"{root}: the test split has no images; add images to {root}/test/<class>/ or use more images")
    images, mapped = _stack(tr_files + te_files, image_size, memory_budget() if budget is None else budget)
    tr_x, te_x = images.split([len(tr_files), len(te_files)])
    return Dataset(tr_x, tr_y, te_x, te_y, root, tuple(classes), f"folder:{root}", mapped=mapped)
