"""FashionMNIST from its four IDX files: locate, verify, load into memory, normalize.

    ds = load_fashion_mnist()                      # search the usual places, verify, uint8 tensors
    x, y = to_model_inputs(ds.train_x, ds.train_y) # float32 [N, 1, 28, 28], (x/255 - 0.5) / 0.5
    download_fashion_mnist(Path("~/data"))         # torchvision download, for machines with internet

Files may be gzip-compressed or raw. Verification covers the IDX magic number, counts, image size,
label range and the SHA-256 of the *decompressed* bytes (Debian recompresses the .gz files, so
checksums of the compressed files differ between sources while their contents are identical).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "MIXPRUNE_DATA"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # IDX: unsigned byte, 3 dims / 1 dim
MEAN, STD = 0.5, 0.5  # paper: normalize to [-1, 1]
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist` (Debian), "
              "or run `mixprune data download` on a machine with internet access, "
              "or pass --data-dir DIR / set MIXPRUNE_DATA to a directory holding the four IDX files")


@dataclass(frozen=True)
class DatasetSpec:
    """What a valid copy of the dataset looks like."""
    files: dict[str, str]  # role -> base file name (without .gz)
    counts: dict[str, int]  # split -> number of examples
    image_hw: tuple[int, int]
    num_classes: int
    sha256: dict[str, str] | None = field(default=None)  # role -> hex digest of decompressed bytes


FASHION_MNIST = DatasetSpec(
    files={"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
           "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"},
    counts={"train": 60_000, "test": 10_000},
    image_hw=(28, 28),
    num_classes=10,
    sha256={"train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
)


@dataclass(frozen=True)
class Dataset:
    """The whole dataset in memory: uint8 images [N, H, W] and int64 labels [N]."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: Path

    def subset(self, train: int = 0, test: int = 0) -> "Dataset":
        """The first `train` / `test` examples (0 keeps all)."""
        tr = slice(None, train or None)
        te = slice(None, test or None)
        return Dataset(self.train_x[tr], self.train_y[tr], self.test_x[te], self.test_y[te], self.source)

    def cv_split(self, fold: int, folds: int) -> Dataset:
        """Fold `fold` of `folds` of the training images becomes the evaluation split, the rest the training
        split. Folds come from one fixed permutation (seed 0), so they are disjoint and cover every image."""
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        order = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(0))
        bounds = [len(order) * k // folds for k in range(folds + 1)]
        held = order[bounds[fold]:bounds[fold + 1]]
        rest = torch.cat([order[:bounds[fold]], order[bounds[fold + 1]:]])
        return Dataset(self.train_x[rest], self.train_y[rest], self.train_x[held], self.train_y[held], self.source)


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mixprune" / "fashion-mnist"


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where to look, in order: --data-dir, $MIXPRUNE_DATA, the user cache, the Debian package's dir."""
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    return dirs + [user_cache_dir(), SYSTEM_DIR]


def _find_file(directory: Path, base: str) -> Path | None:
    # torchvision's download puts files under <root>/FashionMNIST/raw/; accept that layout too.
    for d in (directory, directory / "FashionMNIST" / "raw"):
        for name in (base, base + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def locate(data_dir: str | Path | None = None, spec: DatasetSpec = FASHION_MNIST) -> dict[str, Path]:
    """Paths of the four files in the first place that has all of them; DataError listing the places."""
    searched = candidate_dirs(data_dir)
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory; {HOW_TO_GET}")
    for d in searched:
        found = {role: _find_file(d, base) for role, base in spec.files.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if d == (Path(data_dir).expanduser() if data_dir else None):
            missing = ", ".join(spec.files[r] for r, p in found.items() if p is None)
            raise DataError(f"--data-dir {d} lacks {missing} (.gz or raw); {HOW_TO_GET}")
    places = ", ".join(str(d) for d in searched)
    raise DataError(f"FashionMNIST not found (looked in {places}); {HOW_TO_GET}")


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc}); delete it and fetch the "
                        "dataset again") from None


def parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file; DataError naming the file and what is wrong."""
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header; the file is truncated")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = {IMAGE_MAGIC: "an image file", LABEL_MAGIC: "a label file"}
        raise DataError(f"{path}: IDX magic number is 0x{found:08x} ({kind.get(found, 'not a known IDX type')}), "
                        f"expected 0x{magic:08x} ({kind[magic]}); are the files swapped or corrupt?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: header promises {'x'.join(map(str, dims))} values "
                        f"({expected} bytes), file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_split(paths: dict[str, Path], split: str, spec: DatasetSpec, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for role, magic in ((f"{split}_images", IMAGE_MAGIC), (f"{split}_labels", LABEL_MAGIC)):
        data = read_bytes(paths[role])
        arr = parse_idx(data, paths[role], magic)
        if arr.shape[0] != spec.counts[split]:
            raise DataError(f"{paths[role]}: holds {arr.shape[0]} examples, expected {spec.counts[split]} "
                            f"for the {split} split; are the files swapped or from another dataset?")
        if verify and spec.sha256:
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec.sha256[role]:
                raise DataError(f"{paths[role]}: SHA-256 of the decompressed contents is {digest[:16]}..., "
                                f"expected {spec.sha256[role][:16]}...; the file is corrupt or not "
                                "FashionMNIST; fetch it again")
        out.append(arr)
    images, labels = out
    if images.shape[1:] != spec.image_hw:
        raise DataError(f"{paths[f'{split}_images']}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"expected {spec.image_hw[0]}x{spec.image_hw[1]}")
    if labels.max(initial=0) >= spec.num_classes:
        raise DataError(f"{paths[f'{split}_labels']}: label {int(labels.max())} is outside "
                        f"0-{spec.num_classes - 1}; the file is corrupt")
    return images, labels


def load_fashion_mnist(data_dir: str | Path | None = None, spec: DatasetSpec = FASHION_MNIST,
                       verify: bool = True) -> Dataset:
    """Locate, verify and load the dataset as uint8 image / int64 label tensors on the CPU."""
    paths = locate(data_dir, spec)
    tr_x, tr_y = _load_split(paths, "train", spec, verify)
    te_x, te_y = _load_split(paths, "test", spec, verify)
    t = lambda a, dt: torch.from_numpy(a.copy()).to(dt)  # noqa: E731 - copy: frombuffer is read-only
    return Dataset(t(tr_x, torch.uint8), t(tr_y, torch.int64), t(te_x, torch.uint8), t(te_y, torch.int64),
                   paths["train_images"].parent)


def to_model_inputs(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] normalized with the paper's mean 0.5, std 0.5."""
    x = images.to(device=device, dtype=torch.float32).div_(255.0)
    return x.sub_(MEAN).div_(STD).unsqueeze(1)


def download_fashion_mnist(directory: str | Path | None = None) -> Path:
    """Fetch the dataset through torchvision into directory (default: the user cache); verify it."""
    from torchvision.datasets import FashionMNIST  # heavy import, only here

    root = Path(directory).expanduser() if directory else user_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"download into {root} failed: {exc}; without internet access, "
                        "install the Debian package dataset-fashion-mnist instead") from None
    load_fashion_mnist(root)  # verify what arrived
    return root
