"""The dataset registry: every loader on small files in its real format, written here (nothing is downloaded)."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from mixprune.core.config import DataConfig, StudyConfig, with_overrides
from mixprune.core.errors import ConfigError, DataError, MixpruneError
from mixprune.data import (
    IDX_FAMILY,
    Dataset,
    Images,
    channel_stats,
    load_dataset,
    load_idx,
)
from mixprune.data.cifar import CIFAR, load_cifar, read_batch

from ..helpers import write_idx_set, write_pngs


@pytest.mark.parametrize("name, layout", [("mnist", "MNIST"), ("kmnist", "KMNIST")])
def test_idx_family_in_torchvision_layout(tmp_path, name, layout):
    write_idx_set(tmp_path / layout / "raw", n_train=30, n_test=10)
    spec = dataclasses.replace(IDX_FAMILY[name], counts={"train": 30, "test": 10})
    ds = load_idx(spec, tmp_path)
    assert ds.shape == (1, 28, 28) and ds.num_classes == 10 and ds.name == name
    assert ds.classes == IDX_FAMILY[name].classes and ds.mean is None  # measured on the training split
    mean, std = ds.normalization()
    assert mean[0] == pytest.approx(ds.train_x.double().mean().item() / 255)


def test_idx_counts_of_the_real_dataset_are_required(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", n_train=30, n_test=10)
    with pytest.raises(DataError, match="holds 30 examples, expected 60000"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path)))


def write_cifar(root, n_per_batch=6, hundred=False, seed=0):
    """torchvision's CIFAR layout with python pickles of uint8 [N, 3072] arrays, as the real files are."""
    rng = np.random.default_rng(seed)
    layout = CIFAR["cifar100" if hundred else "cifar10"].layout()
    folder = root / layout.base_folder
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    for name, _ in layout.train_list + layout.test_list:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 key: [int(v) for v in rng.integers(0, classes, n_per_batch)], "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {layout.meta["key"]: [f"class{i}" for i in range(classes)]}
    (folder / layout.meta["filename"]).write_bytes(pickle.dumps(meta, protocol=2))
    return folder


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_batches_load(tmp_path, hundred):
    write_cifar(tmp_path, hundred=hundred)
    ds = load_cifar(CIFAR["cifar100" if hundred else "cifar10"], tmp_path, verify=False)
    n_train = 6 * (1 if hundred else 5)
    assert ds.train_x.shape == (n_train, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert ds.num_classes == (100 if hundred else 10) and ds.classes[3] == "class3"
    raw = read_batch(tmp_path / CIFAR["cifar10"].layout().base_folder / "test_batch")["data"] if not hundred else None
    if raw is not None:  # rows are R, G, B planes of 32x32
        assert torch.equal(ds.test_x[0, 1].flatten(), torch.from_numpy(raw[0, 1024:2048]))


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refused to load posix.system|refused to load os.system"):
        load_cifar(CIFAR["cifar10"], tmp_path, verify=False)  # the restricted unpickler alone stops it
    with pytest.raises(DataError, match="MD5 is not the published one"):
        load_cifar(CIFAR["cifar10"], tmp_path)  # and with verification the file is never opened as a pickle
    assert not (tmp_path / "pwned").exists()


def test_cifar_registry_verifies_checksums(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match=r"batches.meta: MD5 is not the published one"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="has no cifar-10-batches-py/ folder"):
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "nothing")))


def test_digits_offline_fixed_split_and_resize():
    ds = load_dataset(DataConfig(dataset="digits"))
    assert (len(ds.train_y), len(ds.test_y)) == (1437, 360) and ds.shape == (1, 8, 8)
    per_class = torch.bincount(torch.cat([ds.train_y, ds.test_y]))
    assert ((torch.bincount(ds.test_y) - per_class * 360 / 1797).abs() <= 1).all()  # stratified
    again = load_dataset(DataConfig(dataset="digits")).resized(28)
    assert again.shape == (1, 28, 28) and torch.equal(again.test_y, ds.test_y)
    assert again.train_x.dtype == torch.uint8 and int(again.train_x.max()) > 200


def test_folder_rgb_train_test(tmp_path):
    write_pngs(tmp_path / "train")
    write_pngs(tmp_path / "test", n=2, seed=1)
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    assert ds.shape == (3, 10, 12) and ds.classes == ("cat", "dog", "owl")
    assert ds.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and len(ds.test_y) == 6
    from PIL import Image
    first = np.array(Image.open(tmp_path / "train" / "cat" / "0.png"))
    assert torch.equal(ds.train_x[0], torch.from_numpy(first).permute(2, 0, 1))


def test_folder_gray_tree_split_by_fraction(tmp_path):
    write_pngs(tmp_path, classes=("a", "b"), n=10, mode="L")
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.3))
    assert ds.shape == (1, 10, 12) and (len(ds.train_y), len(ds.test_y)) == (14, 6)
    assert torch.bincount(ds.test_y).tolist() == [3, 3]
    same = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.3))
    assert torch.equal(same.test_x, ds.test_x)  # a fixed split


def test_folder_bad_inputs_are_one_line(tmp_path):
    def fails(root, match, **kw):
        with pytest.raises(DataError, match=match) as exc:
            load_dataset(DataConfig(dataset=f"folder:{root}", **kw))
        assert "\n" not in str(exc.value)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    fails(tmp_path / "empty", "at least two class folders")
    fails(write_pngs(tmp_path / "one", classes=("a",)), "at least two class folders")
    write_pngs(tmp_path / "mis" / "train", classes=("a", "b"))
    write_pngs(tmp_path / "mis" / "test", classes=("a", "c"))
    fails(tmp_path / "mis", r"class folders differ .*only in train: \['b'\].*only in test: \['c'\]")
    write_pngs(tmp_path / "half" / "train")
    fails(tmp_path / "half", "has train/ but no test/")
    bad = write_pngs(tmp_path / "trunc", classes=("a", "b"))
    png = bad / "a" / "1.png"
    png.write_bytes(png.read_bytes()[:60])
    fails(bad, r"a/1.png: not a readable image")
    mixed = write_pngs(tmp_path / "mixed", classes=("a", "b"))
    write_pngs(mixed, classes=("b",), n=1, size=(20, 20))
    fails(mixed, "different sizes.*--image-size")
    assert load_dataset(DataConfig(dataset=f"folder:{mixed}", image_size=16)).shape == (3, 16, 16)
    fails(tmp_path / "absent", "not a directory")


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar11'.*folder:PATH"):  # the registry checks names
        load_dataset(DataConfig(dataset="cifar11"))


def test_images_normalize_per_batch_like_the_whole_tensor():
    raw = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(raw)
    images = Images(raw, mean, std, torch.channels_last)
    whole = raw.float().div(255.0).sub(torch.tensor(mean).view(3, 1, 1)).div(torch.tensor(std).view(3, 1, 1))
    idx = torch.tensor([4, 0, 17])
    assert torch.equal(images[idx], whole[idx]) and images[idx].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(images[:].mean((0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_dataset_checks_its_tensors():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match="uint8"):
        Dataset(x.float(), torch.zeros(4, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64), "t")
    with pytest.raises(DataError, match="label is outside 0-1"):
        Dataset(x, torch.tensor([0, 1, 2, 0]), x, torch.zeros(4, dtype=torch.int64), "t", classes=("a", "b"))


def test_a_folder_over_the_memory_budget_is_memory_mapped_with_the_same_numbers(tmp_path):
    from mixprune import run_study
    from mixprune.core.config import with_overrides

    write_pngs(tmp_path / "img" / "train", n=6, size=(16, 16))
    write_pngs(tmp_path / "img" / "test", n=2, size=(16, 16), seed=1)
    resident = load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'img'}"))
    mapped = load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'img'}", memory_budget_mb=0.001))
    assert resident.mapped is None and mapped.mapped is not None and mapped.mapped.stat().st_size == 24 * 3 * 16 * 16
    assert torch.equal(mapped.train_x, resident.train_x) and torch.equal(mapped.test_x, resident.test_x)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1,
                                         "train.batch_size": 8, "bench.latency": False, "bench.onnx": False, "workers": 1})
    a = run_study(with_overrides(cfg, {"out": str(tmp_path / "a")}), dataset=resident)
    b = run_study(with_overrides(cfg, {"out": str(tmp_path / "b")}), dataset=mapped)
    assert "memory-mapped" in b.data["storage"] and "resident" in a.data["storage"]
    for name in a.names:
        assert a.metrics(name, 0)["test_loss"] == b.metrics(name, 0)["test_loss"]


def test_images_are_resized_after_the_subset_and_within_the_memory_budget(monkeypatch):
    """--image-size used to resize every image before --train-subset took a few: 100 images at 256 px took 8.7 GB."""
    from mixprune.data import dataset as D
    from mixprune.data.prepare import prepare_dataset

    resized = []
    real = D.resize
    monkeypatch.setattr(D, "resize", lambda images, size: resized.append(len(images)) or real(images, size))
    cfg = with_overrides(StudyConfig(), {"data.dataset": "digits", "data.image_size": 64, "data.train_subset": 10,
                                         "data.test_subset": 5})
    ds = prepare_dataset(cfg, None)
    assert ds.shape == (1, 64, 64) and resized == [10, 5]
    monkeypatch.setattr(D, "memory_budget", lambda: 1 << 20)  # 1 MiB at hand
    with pytest.raises(DataError, match=r"1,797 images resized to 64x64 take .* GiB, more than .*--train-subset"):
        prepare_dataset(with_overrides(cfg, {"data.train_subset": 0, "data.test_subset": 0}), None)


def test_class_folders_beyond_the_limit_are_refused_before_any_image_is_read(tmp_path):
    for i in range(1001):
        (tmp_path / "many" / f"c{i}").mkdir(parents=True)
    with pytest.raises(DataError, match="1,001 class folders, more than the 1,000 classes"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'many'}"))
    with pytest.raises(DataError, match="more classes than the 1,000"):
        Dataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 5000]),
                torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.tensor([0]), "tensors")


def test_a_class_folder_whose_name_is_not_utf8_keeps_a_distinct_printable_name(tmp_path):
    """A folder named in Latin-1 used to train fully, then crash while plotting; its name now keeps its bytes as
    escapes, which JSON, reports and plots can hold."""
    import os

    write_pngs(tmp_path / "img", classes=("cat", "dog"), n=4, size=(8, 8))
    os.rename(tmp_path / "img" / "dog", os.fsencode(tmp_path / "img") + b"/caf\xe9")
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'img'}"))
    assert ds.classes == ("caf\\xe9", "cat")
    "\n".join(ds.classes).encode("utf-8")  # writable as UTF-8


def test_cifar_files_that_are_not_regular_files_are_refused_at_once(tmp_path):
    """A batches.meta that is /dev/zero used to read until MemoryError; a FIFO there hung."""
    import os

    folder = write_cifar(tmp_path)
    meta = folder / CIFAR["cifar10"].layout().meta["filename"]
    meta.unlink()
    meta.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="not a regular file"):
        load_cifar(CIFAR["cifar10"], tmp_path, verify=False)
    meta.unlink()
    os.mkfifo(meta)
    with pytest.raises(DataError, match="not a regular file"):
        load_cifar(CIFAR["cifar10"], tmp_path, verify=False)


def test_the_decoded_cache_is_checked_and_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """A decoded folder cache that was changed is decoded again; a disk that fills up while it is written is an
    error before any page is mapped (it used to die of SIGBUS), and leaves no temporary file."""
    import errno
    import os

    write_pngs(tmp_path / "img" / "train", n=6, size=(16, 16))
    write_pngs(tmp_path / "img" / "test", n=2, size=(16, 16), seed=1)
    cfg = DataConfig(dataset=f"folder:{tmp_path / 'img'}", memory_budget_mb=0.001)
    resident = load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'img'}"))
    mapped = load_dataset(cfg).mapped
    with open(mapped, "r+b") as fh:  # one byte changed on disk
        fh.write(bytes([fh.read(1)[0] ^ 0xFF]))
    again = load_dataset(cfg)
    assert torch.equal(again.train_x, resident.train_x) and torch.equal(again.test_x, resident.test_x)
    mapped.unlink()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(MixpruneError, match="No space left on device"):
        load_dataset(cfg)
    assert not list(mapped.parent.glob(".*.tmp"))
