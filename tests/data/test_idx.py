"""IDX parsing, dataset search order and every validation failure, on tiny files made here."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixprune.core.errors import DataError
from mixprune.data import Images
from mixprune.data import idx as D

from ..helpers import TINY, idx_bytes, write_idx_set


def test_loads_gz_and_raw_identically(tmp_path):
    a = D.load_fashion_mnist(write_idx_set(tmp_path / "gz", gz=True), spec=TINY)
    b = D.load_fashion_mnist(write_idx_set(tmp_path / "raw", gz=False), spec=TINY)
    assert a.train_x.shape == (40, 1, 28, 28) and a.train_x.dtype == torch.uint8
    assert a.test_y.shape == (20,) and a.test_y.dtype == torch.int64
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_y.tolist() == [i % 10 for i in range(40)]


def test_torchvision_layout_is_found(tmp_path):
    write_idx_set(tmp_path / "root" / "FashionMNIST" / "raw")
    assert D.load_fashion_mnist(tmp_path / "root", spec=TINY).train_x.shape[0] == 40


def test_search_order(tmp_path, monkeypatch):
    system, cache, env, flag = (write_idx_set(tmp_path / n) for n in ("system", "cache", "env", "flag"))
    spec = dataclasses.replace(TINY, system_dir=system)
    monkeypatch.setattr(D, "user_cache_dir", lambda name: cache)
    assert D.locate(None, spec)["train_images"].parent == cache
    monkeypatch.setenv("MIXPRUNE_DATA", str(env))
    assert D.locate(None, spec)["train_images"].parent == env
    assert D.locate(flag, spec)["train_images"].parent == flag
    assert [p for p in D.candidate_dirs(flag, spec.name, system)] == [flag, env, cache, system]


def test_nothing_found_says_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(DataError) as exc:
        D.locate(None, dataclasses.replace(TINY, system_dir=tmp_path / "nope"))
    msg = str(exc.value)
    assert str(tmp_path / "nope") in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "mixprune data download" in msg and "\n" not in msg


def test_data_dir_missing_a_file_is_named(tiny_dir):
    (tiny_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def test_data_dir_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        D.load_fashion_mnist(tmp_path / "absent", spec=TINY)


def test_truncated_file_is_named(tiny_dir):
    f = tiny_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def test_corrupt_gzip_is_named(tiny_dir):
    f = tiny_dir / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def swap(a, b) -> None:
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def test_swapped_images_and_labels(tiny_dir):
    swap(tiny_dir / "train-images-idx3-ubyte.gz", tiny_dir / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="magic number is 0x00000801 .*expected 0x00000803.*swapped"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def test_swapped_splits_fail_on_counts(tiny_dir):
    for kind in ("images-idx3", "labels-idx1"):
        swap(tiny_dir / f"train-{kind}-ubyte.gz", tiny_dir / f"t10k-{kind}-ubyte.gz")
    with pytest.raises(DataError, match="holds 20 examples, expected 40 for the train split"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def test_wrong_image_size(tmp_path):
    d = write_idx_set(tmp_path / "d")
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((40, 32, 32)))))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        D.load_fashion_mnist(d, spec=TINY)


def test_label_out_of_range(tmp_path):
    d = write_idx_set(tmp_path / "d")
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(20, 12))))
    with pytest.raises(DataError, match="label 12 is outside 0-9"):
        D.load_fashion_mnist(d, spec=TINY)


def test_trailing_bytes(tmp_path):
    d = write_idx_set(tmp_path / "d", gz=False)
    f = d / "train-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(DataError, match="has trailing bytes"):
        D.load_fashion_mnist(d, spec=TINY)


def test_checksum_of_decompressed_bytes(tiny_dir):
    raw = {role: gzip.decompress((tiny_dir / f"{base}.gz").read_bytes()) for role, base in TINY.files.items()}
    good = {role: hashlib.sha256(b).hexdigest() for role, b in raw.items()}
    spec = dataclasses.replace(TINY, sha256=good)
    D.load_fashion_mnist(tiny_dir, spec=spec)  # recompressing does not matter: contents are hashed
    (tiny_dir / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw["train_labels"], compresslevel=1))
    D.load_fashion_mnist(tiny_dir, spec=spec)
    bad = dict(good, test_images="0" * 64)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: SHA-256 of the decompressed contents"):
        D.load_fashion_mnist(tiny_dir, spec=dataclasses.replace(TINY, sha256=bad))


def test_normalization_and_shape():
    images = Images(torch.tensor([[[[0, 255], [51, 204]]]], dtype=torch.uint8), (0.5,), (0.5,))
    x = images[:]
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 1.0, -0.6, 0.6]))
    lo, hi = images.value_range()
    assert lo.item() == -1.0 and hi.item() == 1.0


def test_subset_keeps_first_examples(tiny_dir):
    ds = D.load_fashion_mnist(tiny_dir, spec=TINY)
    sub = ds.subset(train=7, test=0)
    assert len(sub.train_y) == 7 and len(sub.test_y) == 20
    assert torch.equal(sub.train_x, ds.train_x[:7])


@pytest.mark.realdata
def test_real_dataset_verifies(real_data_dir):
    ds = D.load_fashion_mnist(real_data_dir)
    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10



@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_idx_never_crashes_on_arbitrary_bytes(blob):
    from pathlib import Path
    for magic in (D.IMAGE_MAGIC, D.LABEL_MAGIC):
        try:
            arr = D.parse_idx(blob, Path("x"), magic)
        except DataError as exc:
            assert str(exc).startswith("x: ") and "\n" not in str(exc)
        else:
            assert arr.dtype == np.uint8 and arr.ndim == (3 if magic == D.IMAGE_MAGIC else 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=3), st.integers(-3, 3))
def test_parse_idx_checks_length_against_header(dims, delta):
    from pathlib import Path
    dims = (dims + [1, 1])[:3]
    body = bytes(int(np.prod(dims)) + max(delta, -int(np.prod(dims))))
    blob = struct.pack(">I", D.IMAGE_MAGIC) + struct.pack(">3I", *dims) + body
    if len(body) == int(np.prod(dims)):
        assert D.parse_idx(blob, Path("x"), D.IMAGE_MAGIC).shape == tuple(dims)
    else:
        with pytest.raises(DataError, match="truncated|trailing"):
            D.parse_idx(blob, Path("x"), D.IMAGE_MAGIC)


def test_memory_is_bounded_by_what_the_header_promises(tiny_dir):
    """A small gzip file that inflates far beyond its header's promise is refused after reading the promise
    plus one byte; a header promising more examples than the dataset has is refused before any body is read."""
    import tracemalloc

    f = tiny_dir / "train-labels-idx1-ubyte.gz"
    body = gzip.decompress(f.read_bytes())
    with gzip.open(f, "wb", compresslevel=1) as out:  # ~200 KB on disk, 200 MB inflated
        out.write(body)
        for _ in range(200):
            out.write(bytes(1_000_000))
    assert f.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: has trailing bytes"):
            D.load_fashion_mnist(tiny_dir, spec=TINY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # bytes: the promise (40 labels) plus buffers, not the 200 MB the file inflates to
    images = tiny_dir / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(struct.pack(">4I", D.IMAGE_MAGIC, 2**31, 28, 28)))
    f.write_bytes(gzip.compress(body))
    with pytest.raises(DataError, match="holds 2147483648 examples, expected 20 for the test split"):
        D.load_fashion_mnist(tiny_dir, spec=TINY)


def test_a_mixprune_data_directory_that_lacks_the_dataset_is_said(tmp_path, monkeypatch):
    """$MIXPRUNE_DATA set to an empty or partial directory used to fall back silently to another copy."""
    system = write_idx_set(tmp_path / "system")
    spec = dataclasses.replace(TINY, system_dir=system)
    partial = write_idx_set(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    for directory in (tmp_path / "empty", partial):
        directory.mkdir(exist_ok=True)
        monkeypatch.setenv("MIXPRUNE_DATA", str(directory))
        with pytest.raises(DataError, match=r"\$MIXPRUNE_DATA=.* lacks .*t10k-labels-idx1-ubyte"):
            D.locate(None, spec)
    assert D.locate(system, spec)["train_images"].parent == system  # --data-dir is asked first
