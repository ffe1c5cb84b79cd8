"""Model files: safetensors round trips, sparse encoding, safe loading with clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from mixprune.compress.pruning import attach_masks, l1_masks, make_permanent
from mixprune.core.errors import ModelFileError
from mixprune.deploy.files import (
    load_model,
    save_safetensors,
    save_sparse,
    sparse_state,
)
from mixprune.models import LeNet5


@pytest.fixture
def pruned():
    m = LeNet5(generator=torch.Generator().manual_seed(0))
    return make_permanent(attach_masks(m, l1_masks(m, 0.2, 0.3))).eval()


def test_fp32_round_trip_is_exact(pruned, tmp_path):
    size = save_safetensors(pruned, tmp_path / "m.safetensors")
    assert size == (tmp_path / "m.safetensors").stat().st_size and size > 44_426 * 4
    loaded = load_model(tmp_path / "m.safetensors").state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in pruned.state_dict().items())


def test_fp16_is_half_size_and_close(pruned, tmp_path):
    s32 = save_safetensors(pruned, tmp_path / "a.safetensors")
    s16 = save_safetensors(pruned, tmp_path / "b.safetensors", torch.float16)
    assert s16 < 0.52 * s32
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(load_model(tmp_path / "b.safetensors")(x), pruned(x), atol=1e-2)


def test_sparse_round_trip_equals_fp16_dense(pruned, tmp_path):
    save_sparse(pruned, tmp_path / "s.safetensors")
    save_safetensors(pruned, tmp_path / "h.safetensors", torch.float16)
    a, b = load_model(tmp_path / "s.safetensors"), load_model(tmp_path / "h.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    state = sparse_state(pruned)
    assert state["fc1.weight.values"].numel() == 30_720 - 9_216
    assert state["fc1.weight.bitmask"].numel() == 30_720 // 8


def test_sparse_smaller_than_fp16_only_when_sparse(tmp_path, pruned):
    dense = LeNet5()
    assert save_sparse(dense, tmp_path / "d.safetensors") > save_safetensors(dense, tmp_path / "d16.safetensors", torch.float16)
    assert save_sparse(pruned, tmp_path / "p.safetensors") < save_safetensors(pruned, tmp_path / "p16.safetensors", torch.float16)


def test_wrong_keys_and_shapes_rejected(tmp_path):
    state = {k: v.contiguous() for k, v in LeNet5().state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "fc3.bias"}, str(tmp_path / "k.safetensors"))
    with pytest.raises(ModelFileError, match=r"missing \['fc3.bias'\]"):
        load_model(tmp_path / "k.safetensors")
    save_file({**state, "fc3.weight": torch.zeros(5, 84)}, str(tmp_path / "s.safetensors"))
    with pytest.raises(ModelFileError, match=r"fc3.weight has shape \(5, 84\), expected \(10, 84\)"):
        load_model(tmp_path / "s.safetensors")


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/mixprune-pwned-by-pickle", "w"))


def test_pickle_is_refused_and_never_run(tmp_path):
    import os

    target = "/tmp/mixprune-pwned-by-pickle"
    if os.path.exists(target):
        os.unlink(target)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"conv1.weight": _Boom()}))
    with pytest.raises(ModelFileError, match="only safetensors"):
        load_model(evil)
    assert not os.path.exists(target)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_onnx_export_matches_pytorch_with_dynamic_batch(pruned, tmp_path):
    from mixprune.deploy.onnx import export_onnx, onnx_logits, verify_onnx

    path = tmp_path / "m.onnx"
    assert export_onnx(pruned, path) == path.stat().st_size > 44_426 * 4
    g = torch.Generator().manual_seed(0)
    for batch in (1, 7, 300):
        x = torch.randn(batch, 1, 28, 28, generator=g)
        with torch.no_grad():
            assert torch.allclose(onnx_logits(path, x, batch_size=128), pruned(x), atol=1e-4)
    x = torch.randn(200, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (200,), generator=g)
    with torch.no_grad():
        ref = pruned(x)
    check = verify_onnx(path, ref, x, y)
    assert check["onnx_prediction_agreement"] == 1.0
    assert check["onnx_test_accuracy"] == pytest.approx(100 * (ref.argmax(1) == y).double().mean().item())


def test_int8_sparse_round_trip_is_close_and_keeps_zeros(pruned, tmp_path):
    from mixprune.deploy.files import gzip_size

    size8 = save_sparse(pruned, tmp_path / "s8.safetensors", values="int8")
    size16 = save_sparse(pruned, tmp_path / "s16.safetensors", values="fp16")
    assert size8 < size16
    decoded = load_model(tmp_path / "s8.safetensors")
    for (name, a), b in zip(pruned.state_dict().items(), (decoded.state_dict()[k] for k in pruned.state_dict())):
        if name.endswith("weight"):
            assert torch.equal(a == 0, b == 0), name  # same zero pattern
            assert (a - b).abs().max() <= a.abs().max() / 127 / 2 + 1e-6, name  # within half a quantization step
    assert 0 < gzip_size(tmp_path / "s8.safetensors") < size8 * 1.1


def test_int8_onnx_is_smaller_and_agrees(pruned, tmp_path):
    from mixprune.deploy.onnx import export_onnx, quantize_onnx_int8, verify_onnx

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 28, 28, generator=g)
    fp32 = export_onnx(pruned, tmp_path / "m.onnx")
    int8 = quantize_onnx_int8(tmp_path / "m.onnx", tmp_path / "m8.onnx", x[:100])
    assert int8 < fp32 / 2
    with torch.no_grad():
        ref = pruned(x)
    check = verify_onnx(tmp_path / "m8.onnx", ref, x, ref.argmax(1))
    assert check["onnx_prediction_agreement"] > 0.9


def test_bad_sparse_value_type(pruned, tmp_path):
    with pytest.raises(ValueError, match="sparse values must be one of"):
        save_sparse(pruned, tmp_path / "x.safetensors", values="int4")


def test_the_same_model_writes_the_same_bytes(tmp_path):
    """safetensors writes metadata keys in a random order; mixprune's files are byte-identical run to run."""
    model = LeNet5(generator=torch.Generator().manual_seed(0))
    for writer in (lambda p: save_safetensors(model, p), lambda p: save_sparse(model, p, "int8")):
        blobs = set()
        for i in range(6):
            writer(tmp_path / f"m{i}.safetensors")
            blobs.add((tmp_path / f"m{i}.safetensors").read_bytes())
        assert len(blobs) == 1
        assert load_model(tmp_path / "m0.safetensors") is not None


@pytest.mark.parametrize("widths, match", [
    ("[6, 16, 60000, 60000]", "describes a network of 3,6.* parameters, more than a file of"),
    ("[6, 16, 120, 5000000]", "not sizes in 1..65536"),
    ("[1e400, 16, 120, 84]", "not sizes in"), ("[-1, 16, 120, 84]", "not sizes in"), ("[6, 16, 120]", "needs 4 widths"),
    ("[true, 16, 120, 84]", "not sizes in"), ('"many"', "not sizes in")])
def test_crafted_widths_are_refused_before_anything_is_built(tmp_path, widths, match):
    """The widths a file claims are checked against what the file can hold before a network is allocated (a
    178 KB file claiming a 5,000,000-unit layer used to allocate 3.3 GB first)."""
    path = tmp_path / "m.safetensors"
    save_safetensors(LeNet5(), path)
    from safetensors.torch import load_file
    save_file(load_file(str(path)), str(path), metadata={"format": "mixprune.lenet5", "encoding": "fp32",
                                                         "widths": widths, "dropout": "0.0"})
    with pytest.raises(ModelFileError, match=match) as exc:
        load_model(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_that_are_not_floats_are_refused(tmp_path, dtype):
    path = tmp_path / "m.safetensors"
    model = LeNet5()
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "mixprune.lenet5", "encoding": "fp32", "widths": "[6, 16, 120, 84]",
                                          "dropout": "0.0"})
    with pytest.raises(ModelFileError, match="holds torch.(int64|bool|complex64) values"):
        load_model(path)


def test_a_second_model_of_the_same_computation_gets_the_exporters_bytes(pruned, tmp_path):
    """export_onnx runs the exporter once per computation and swaps weights in for the next model: the file is
    byte for byte what the exporter writes for that model itself; a model whose BatchNorm the exporter folds
    into its convolutions is exported every time."""
    from mixprune.deploy import onnx as export
    from mixprune.deploy.fingerprint import computation_key
    from mixprune.models import build_model

    other = LeNet5(generator=torch.Generator().manual_seed(1))
    other = make_permanent(attach_masks(other, l1_masks(other, 0.5, 0.5))).eval()  # state dict in pruned's order
    export._ONNX_GRAPHS.clear()
    export.export_onnx(other, tmp_path / "other.onnx")
    assert len(export._ONNX_GRAPHS) == 1
    assert computation_key(pruned) == computation_key(LeNet5())  # the same kernels: latency is shared
    export.export_onnx(pruned, tmp_path / "swapped.onnx")
    export._ONNX_GRAPHS.clear()
    export.export_onnx(pruned, tmp_path / "exported.onnx")
    assert (tmp_path / "swapped.onnx").read_bytes() == (tmp_path / "exported.onnx").read_bytes()
    assert (tmp_path / "swapped.onnx").read_bytes() != (tmp_path / "other.onnx").read_bytes()

    resnet = build_model("torchvision:resnet18", (1, 28, 28), 10, torch.Generator().manual_seed(0)).eval()
    export._ONNX_GRAPHS.clear()
    export.export_onnx(resnet, tmp_path / "r.onnx")
    assert not export._ONNX_GRAPHS  # BatchNorm folded: the weights in the file are not the model's tensors


def _crafted(path, metadata: dict, tensors: dict | None = None):
    """A safetensors file holding `tensors` (a LeNet-5's by default) under the given metadata."""
    from safetensors.torch import load_file

    if tensors is None:
        save_safetensors(LeNet5(), path)
        tensors = load_file(str(path))
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("arch, classes", [("torchvision:vit_h_14", 10), ("torchvision:resnet18", 65_536)])
def test_a_file_naming_a_large_network_is_refused_before_it_is_built(tmp_path, arch, classes):
    """Any network a file names is counted without being built (the meta device), and refused where the file cannot
    hold it: a 178 KB file naming vit_h_14 used to take 3.2 GB before "keys do not match"; with 65,536 classes it
    ended in an allocation traceback. The child's peak memory shows that nothing large was allocated."""
    import json
    import subprocess
    import sys

    desc = {"arch": arch, "input_shape": [3, 224, 224], "num_classes": classes}
    path = _crafted(tmp_path / "m.safetensors", {"format": "mixprune.model", "encoding": "fp32",
                                                 "architecture": json.dumps(desc)})
    code = ("import resource\nfrom mixprune.deploy.files import load_model\n"
            "try:\n    load_model(%r)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" % str(path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    message, peak_kib = res.stdout.splitlines()
    assert message.startswith("ModelFileError") and "more than a file of" in message, res.stdout + res.stderr
    assert int(peak_kib) < 1_500_000  # the interpreter and torch: no network of gigabytes was allocated


def test_weights_that_are_not_finite_and_formats_mixprune_does_not_write_are_refused(pruned, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "m.safetensors"
    save_safetensors(pruned, path)
    meta = {"format": "mixprune.lenet5", "encoding": "fp32", "widths": "[6, 16, 120, 84]", "dropout": "0.0"}
    for value in (float("nan"), float("inf")):
        bad = load_file(str(path))
        bad["fc2.weight"][0, 0] = value
        _crafted(tmp_path / "bad.safetensors", meta, bad)
        with pytest.raises(ModelFileError, match="fc2.weight holds NaN or infinite values"):
            load_model(tmp_path / "bad.safetensors")
    save_sparse(pruned, tmp_path / "s.safetensors", "int8")
    sparse = load_file(str(tmp_path / "s.safetensors"))
    sparse["conv1.weight.scale"] = torch.tensor([float("nan")])
    _crafted(tmp_path / "s.safetensors", {**meta, "encoding": "sparse-bitmask-int8"}, sparse)
    with pytest.raises(ModelFileError, match="conv1.weight holds NaN"):
        load_model(tmp_path / "s.safetensors")
    for key, value in (("format", "mixprune.other"), ("encoding", "zip")):
        _crafted(tmp_path / "u.safetensors", {**meta, key: value}, load_file(str(path)))
        with pytest.raises(ModelFileError, match="is not a mixprune model file"):
            load_model(tmp_path / "u.safetensors")


def test_metadata_that_nests_deeply_or_names_a_huge_input_is_one_line(tmp_path):
    deep = "[" * 50_000 + "]" * 50_000
    for meta, match in (({"format": "mixprune.model", "encoding": "fp32", "architecture": deep}, "nests too deeply"),
                        ({"format": "mixprune.lenet5", "encoding": "fp32", "widths": deep}, "nests too deeply"),
                        ({"format": "mixprune.model", "encoding": "fp32", "architecture":
                          '{"arch": "torchvision:resnet18", "input_shape": [3, 4000, 4000], "num_classes": 10}'},
                         "side above 1024 pixels")):
        with pytest.raises(ModelFileError, match=match) as exc:
            load_model(_crafted(tmp_path / "m.safetensors", meta))
        assert "\n" not in str(exc.value)


def test_only_regular_files_are_read(tmp_path):
    """A FIFO used to hang load_model (and --teacher, sensitivity --model, bench); /dev/zero is never read."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    code = ("from mixprune.deploy.files import load_model\n"
            "for p in (%r, '/dev/zero', %r):\n"
            "    try:\n        load_model(p)\n    except Exception as e:\n        print(type(e).__name__, e)"
            % (str(fifo), str(tmp_path)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("ModelFileError") for line in lines), res.stdout + res.stderr
    assert "not a regular file" in lines[0] and "not a regular file" in lines[1]
