"""The IDX family (FashionMNIST, MNIST, KMNIST): locate the four files, verify, load as uint8 tensors.

    files = IDX_FAMILY["fashion-mnist"]
    ds = load_idx(files, data_dir=None)              # search the usual places, verify, Dataset
    load_fashion_mnist()                             # the paper's dataset
    download_idx(files, Path("~/data"))              # torchvision's download, for machines with internet

Files may be gzip-compressed or raw. Verification covers the IDX magic number, counts, image size,
label range and, where the dataset's digests are known (FashionMNIST), the SHA-256 of the
*decompressed* bytes (Debian recompresses the .gz files, so checksums of the compressed files differ
between sources while their contents are identical). MNIST and KMNIST are checked by structure; their
download through torchvision checks torchvision's published MD5 of each archive.
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

from ..core.atomic import open_regular
from ..core.errors import DataError
from .dataset import Dataset

ENV_VAR = "MIXPRUNE_DATA"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # IDX: unsigned byte, 3 dims / 1 dim
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


@dataclass(frozen=True)
class IdxFiles:
    """What a valid copy of one IDX dataset looks like, and where it is looked for."""
    name: str  # registry name, e.g. "fashion-mnist"
    torchvision: str  # torchvision's class name, e.g. "FashionMNIST" (its download layout: <root>/<name>/raw)
    classes: tuple[str, ...]
    counts: dict[str, int]  # split -> number of examples
    files: dict[str, str] = field(default_factory=lambda: dict(FILES))  # role -> base file name (without .gz)
    image_hw: tuple[int, int] = (28, 28)
    sha256: dict[str, str] | None = None  # role -> hex digest of decompressed bytes
    system_dir: Path | None = None  # where a system package installs it
    mean: tuple[float, ...] | None = None  # published normalization; None: measured on the training split
    std: tuple[float, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def how_to_get(self) -> str:
        debian = ("install it with `apt-get install dataset-fashion-mnist` (Debian), or "
                  if self.name == "fashion-mnist" else "")
        return (f"{debian}run `mixprune data download --dataset {self.name}` on a machine with internet access, "
                f"or pass --data-dir DIR / set {ENV_VAR} to a directory holding the four IDX files")


FASHION_MNIST = IdxFiles(
    name="fashion-mnist", torchvision="FashionMNIST",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    counts={"train": 60_000, "test": 10_000},
    sha256={"train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
    system_dir=Path("/usr/share/datasets/fashion-mnist"),
    mean=(0.5,), std=(0.5,),  # the paper's: inputs span [-1, 1]
)
MNIST = IdxFiles(name="mnist", torchvision="MNIST", classes=tuple(str(d) for d in range(10)),
                 counts={"train": 60_000, "test": 10_000})
KMNIST = IdxFiles(name="kmnist", torchvision="KMNIST",
                  classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                  counts={"train": 60_000, "test": 10_000})
IDX_FAMILY = {f.name: f for f in (FASHION_MNIST, MNIST, KMNIST)}
SYSTEM_DIR = FASHION_MNIST.system_dir


def user_cache_dir(name: str = "fashion-mnist") -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mixprune" / name


def candidate_dirs(data_dir: str | Path | None = None, name: str = "fashion-mnist",
                   system_dir: Path | None = SYSTEM_DIR) -> list[Path]:
    """Where to look, in order: --data-dir, $MIXPRUNE_DATA, the user cache, the system package's dir."""
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(ENV_VAR):
        env = Path(os.environ[ENV_VAR]).expanduser()
        if not env.is_dir():  # as --data-dir: a wrong setting is said, not silently passed over
            raise DataError(f"${ENV_VAR}={os.environ[ENV_VAR]} is not a directory; point it at the directory that "
                            "holds the dataset's files, or unset it")
        dirs.append(env)
    return dirs + [user_cache_dir(name)] + ([system_dir] if system_dir else [])


def named_dir(data_dir: str | Path | None) -> tuple[Path, str] | None:
    """The directory the user named for the dataset's files, and how (--data-dir, else $MIXPRUNE_DATA), or None: a
    named directory must hold them; only unnamed places are passed over."""
    if data_dir:
        return Path(data_dir).expanduser(), f"--data-dir {data_dir}"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}={os.environ[ENV_VAR]}"
    return None


def _find_file(directory: Path, base: str, layout: str) -> Path | None:
    # torchvision's download puts files under <root>/<Name>/raw/; accept that layout too.
    for d in (directory, directory / layout / "raw"):
        for name in (base, base + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def locate(data_dir: str | Path | None = None, spec: IdxFiles = FASHION_MNIST) -> dict[str, Path]:
    """Paths of the four files in the first place that has all of them; DataError listing the places."""
    searched = candidate_dirs(data_dir, spec.name, spec.system_dir)
    named = named_dir(data_dir)
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory; {spec.how_to_get()}")
    for d in searched:
        found = {role: _find_file(d, base, spec.torchvision) for role, base in spec.files.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if named is not None and d == named[0]:
            missing = ", ".join(spec.files[r] for r, p in found.items() if p is None)
            raise DataError(f"{named[1]} lacks {missing} (.gz or raw); {spec.how_to_get()}")
    places = ", ".join(str(d) for d in searched)
    raise DataError(f"{spec.torchvision} not found (looked in {places}); {spec.how_to_get()}")


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """File contents (at most `limit` bytes), gunzipped in a stream when the file starts with the gzip magic
    number: a small file that inflates to gigabytes costs no more memory than `limit`."""
    try:
        with open_regular(path) as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            fh = gzip.GzipFile(fileobj=raw) if gz else raw
            return fh.read(-1 if limit is None else limit)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc}); delete it and fetch the "
                        "dataset again") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_idx(path: Path, magic: int, count: int, hw: tuple[int, int] | None, split: str = "") -> tuple[np.ndarray, bytes]:
    """An IDX file whose header must promise `count` examples (of hw pixels): the header is checked against
    that first, then exactly the promised bytes plus one are read (the one reveals trailing bytes), so
    memory is bounded by what the dataset should hold, whatever the file claims or inflates to."""
    header = 4 + 4 * (magic & 0xFF)
    head = read_bytes(path, header)
    if len(head) < header or struct.unpack(">I", head[:4])[0] != magic:
        parse_idx(head, path, magic)  # raises the precise error (too short, wrong magic)
    dims = struct.unpack(f">{magic & 0xFF}I", head[4:header])
    if dims[0] != count:
        raise DataError(f"{path}: holds {dims[0]} examples, expected {count}{f' for the {split} split' if split else ''}; "
                        "are the files swapped or from another dataset?")
    if hw is not None and tuple(dims[1:]) != tuple(hw):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {hw[0]}x{hw[1]}")
    data = read_bytes(path, header + int(np.prod(dims, dtype=np.int64)) + 1)
    return parse_idx(data, path, magic), data


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
    if len(data) < expected:
        raise DataError(f"{path}: truncated: header promises {'x'.join(map(str, dims))} values "
                        f"({expected} bytes), file has {len(data)} bytes")
    if len(data) > expected:
        raise DataError(f"{path}: has trailing bytes: header promises {'x'.join(map(str, dims))} values "
                        f"({expected} bytes), the file holds more")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_split(paths: dict[str, Path], split: str, spec: IdxFiles, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for role, magic in ((f"{split}_images", IMAGE_MAGIC), (f"{split}_labels", LABEL_MAGIC)):
        hw = spec.image_hw if magic == IMAGE_MAGIC else None
        arr, data = read_idx(paths[role], magic, spec.counts[split], hw, split)
        if verify and spec.sha256:
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec.sha256[role]:
                raise DataError(f"{paths[role]}: SHA-256 of the decompressed contents is {digest[:16]}..., "
                                f"expected {spec.sha256[role][:16]}...; the file is corrupt or not "
                                f"{spec.torchvision}; fetch it again")
        out.append(arr)
    images, labels = out
    if labels.max(initial=0) >= spec.num_classes:
        raise DataError(f"{paths[f'{split}_labels']}: label {int(labels.max())} is outside "
                        f"0-{spec.num_classes - 1}; the file is corrupt")
    return images, labels


def load_idx(spec: IdxFiles, data_dir: str | Path | None = None, verify: bool = True) -> Dataset:
    """Locate, verify and load one IDX dataset as uint8 image [N, 1, H, W] / int64 label tensors on the CPU."""
    paths = locate(data_dir, spec)
    tr_x, tr_y = _load_split(paths, "train", spec, verify)
    te_x, te_y = _load_split(paths, "test", spec, verify)

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(a.copy()).to(dtype)  # copy: frombuffer is read-only
    return Dataset(tensor(tr_x, torch.uint8), tensor(tr_y, torch.int64), tensor(te_x, torch.uint8),
                   tensor(te_y, torch.int64), paths["train_images"].parent, spec.classes, spec.name, spec.mean,
                   spec.std)


def load_fashion_mnist(data_dir: str | Path | None = None, spec: IdxFiles = FASHION_MNIST,
                       verify: bool = True) -> Dataset:
    """The paper's dataset (or another IdxFiles spec): locate, verify, load."""
    return load_idx(spec, data_dir, verify)


def download_idx(spec: IdxFiles, directory: str | Path | None = None) -> Path:
    """Fetch the dataset through torchvision (which checks its published MD5s) into directory (default:
    the user cache); verify what arrived."""
    import torchvision.datasets  # heavy import, only here

    root = Path(directory).expanduser() if directory else user_cache_dir(spec.name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(torchvision.datasets, spec.torchvision)(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        hint = ("install the Debian package dataset-fashion-mnist instead" if spec.name == "fashion-mnist"
                else "copy the four IDX files here and pass --data-dir")
        raise DataError(f"download into {root} failed: {exc}; without internet access, {hint}") from None
    load_idx(spec, root)  # verify what arrived
    return root


def download_fashion_mnist(directory: str | Path | None = None) -> Path:
    return download_idx(FASHION_MNIST, directory)
