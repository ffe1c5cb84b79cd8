"""Trained weights in: every way people save a state dict loads, nothing that needs code to load is unpickled, and a
file of another network is refused naming its first mismatch."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mixprune.core.errors import ConfigError, ModelFileError
from mixprune.models import LeNet5, build_model
from mixprune.models.weights import checkpoint_limit, hub_file, load_state, read_state_dict


@pytest.fixture
def trained():
    return LeNet5(generator=torch.Generator().manual_seed(3)).eval()


def _fresh() -> nn.Module:
    return LeNet5(generator=torch.Generator().manual_seed(99)).eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "model_state_dict", "module.", "_orig_mod.",
                                  "module._orig_mod.", "safetensors"])
def test_every_common_checkpoint_layout_loads(tmp_path, trained, wrap):
    state = trained.state_dict()
    path = tmp_path / "w.pt"
    if wrap == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif wrap in ("state_dict", "model", "model_state_dict"):
        torch.save({"epoch": 7, "optimizer": {"lr": 0.1}, wrap: state}, path)
    elif wrap.endswith("."):
        torch.save({wrap + k: v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model = load_state(_fresh(), read_state_dict(path, checkpoint_limit(trained)), str(path))
    assert _same(model, trained)


def test_a_pickled_module_is_refused_not_unpickled(tmp_path, trained):
    path = tmp_path / "whole.pt"
    torch.save(trained, path)  # pickles the class: loading it would run code
    with pytest.raises(ModelFileError, match="needs code to load.*save model.state_dict"):
        read_state_dict(path, checkpoint_limit(trained))


def test_a_checkpoint_without_a_state_dict_is_named(tmp_path, trained):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "accuracy": 91.0}, path)
    with pytest.raises(ModelFileError, match=r"not a state dict.*\['accuracy', 'epoch'\]"):
        read_state_dict(path, checkpoint_limit(trained))


def test_weights_of_another_network_name_the_first_mismatch(tmp_path, trained):
    wider = LeNet5(widths=(8, 16, 120, 84))
    with pytest.raises(ModelFileError, match=r"conv1.weight has shape \[8, 1, 5, 5\] in the file, \[6, 1, 5, 5\]"):
        load_state(_fresh(), wider.state_dict(), "w.pt")
    renamed = {k.replace("fc3", "head"): v for k, v in trained.state_dict().items()}
    with pytest.raises(ModelFileError, match="no tensor 'fc3.weight' .the file has 'head.weight'"):
        load_state(_fresh(), renamed, "w.pt")
    extra = {**trained.state_dict(), "fc4.weight": torch.zeros(2, 2)}
    with pytest.raises(ModelFileError, match="the file has 'fc4.weight', which the network does not"):
        load_state(_fresh(), extra, "w.pt")


def test_non_finite_weights_and_integer_weights_are_refused(trained):
    bad = dict(trained.state_dict(), **{"fc1.bias": torch.full((120,), float("nan"))})
    with pytest.raises(ModelFileError, match="fc1.bias holds NaN or infinite"):
        load_state(_fresh(), bad, "w.pt")
    ints = dict(trained.state_dict(), **{"fc1.bias": torch.zeros(120, dtype=torch.int64)})
    with pytest.raises(ModelFileError, match="fc1.bias holds torch.int64"):
        load_state(_fresh(), ints, "w.pt")


def test_files_that_are_not_checkpoints_are_refused_without_reading_them_whole(tmp_path, trained):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ModelFileError, match="neither a safetensors file nor a PyTorch checkpoint"):
        read_state_dict(junk, checkpoint_limit(trained))
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:
        fh.truncate(10_000)  # sparse: costs no disk
    with pytest.raises(ModelFileError, match="holds 10,000 bytes, more than a checkpoint of this network"):
        read_state_dict(big, 5_000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="not a regular file"):
        read_state_dict(fifo, checkpoint_limit(trained))
    with pytest.raises(ModelFileError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt", checkpoint_limit(trained))
    truncated = tmp_path / "cut.pt"
    torch.save(trained.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ModelFileError, match="not a readable PyTorch checkpoint"):
        read_state_dict(truncated, checkpoint_limit(trained))


def test_pretrained_weights_come_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match=r"squeezenet1_1-\w+\.pth is not in the local cache.*downloads nothing"):
        hub_file("torchvision:squeezenet1_1", "torchvision:DEFAULT")
    with pytest.raises(ConfigError, match="no such weights"):
        hub_file("torchvision:squeezenet1_1", "torchvision:NOPE")
    with pytest.raises(ConfigError, match="is for --arch torchvision:NAME, not lenet5"):
        hub_file("lenet5", "torchvision:DEFAULT")
    net = build_model("torchvision:squeezenet1_1", (3, 64, 64), 1000, torch.Generator().manual_seed(0))
    cached = hub_file.__globals__["_torchvision_file"]("torchvision:squeezenet1_1", "DEFAULT")
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)  # as torchvision's own download would have left it
    fresh = build_model("torchvision:squeezenet1_1", (3, 64, 64), 1000, torch.Generator().manual_seed(1))
    path = hub_file("torchvision:squeezenet1_1", "torchvision:DEFAULT")
    load_state(fresh, read_state_dict(path, checkpoint_limit(fresh)), str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), net.eval()(x))


def test_mixprune_model_files_are_weights_too(tmp_path, trained):
    from mixprune.compress.structured import slim_network
    from mixprune.deploy.files import load_weights, save_safetensors

    from ..helpers import structurally_pruned

    whole = tmp_path / "whole.safetensors"
    save_safetensors(trained, whole)
    assert _same(load_weights(_fresh(), str(whole), "lenet5"), trained)
    small = slim_network(structurally_pruned(copy.deepcopy(trained), 0.5, 0.5)[0])  # its file names its widths
    slim = tmp_path / "slim.safetensors"
    save_safetensors(small, slim)
    loaded = load_weights(_fresh(), str(slim), "lenet5")
    assert loaded.widths == small.widths and _same(loaded, small)


def test_timm_weights_come_from_the_hugging_face_cache_only(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    with pytest.raises(ConfigError, match=r"models--timm--resnet10t.*model.safetensors is not in the local cache"):
        hub_file("timm:resnet10t", "timm:DEFAULT")
    folder = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc")
    (folder / "snapshots" / "abc").mkdir(parents=True)
    (folder / "snapshots" / "abc" / "model.safetensors").write_bytes(b"{}")  # found: reading it is read_state_dict's
    assert hub_file("timm:resnet10t", "timm:DEFAULT") == folder / "snapshots" / "abc" / "model.safetensors"
