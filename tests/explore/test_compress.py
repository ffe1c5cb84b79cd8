"""`mixprune compress` end to end on tiny data: a checkpoint in, each budget met as measured, files that load without
pickle and agree in ONNX Runtime, resumable, re-runnable from config.toml; bad input refused in one line before
anything is written."""

from __future__ import annotations

import json

import pytest
import torch

import mixprune
from mixprune.core.config import StudyConfig, with_overrides
from mixprune.deploy.files import load_model
from mixprune.models import LeNet5, build_model, macs_per_image

from mixprune.cli import main

from ..helpers import cli



@pytest.fixture
def checkpoint(tmp_path):
    """A LeNet-5 'trained' elsewhere, saved as people save one: nested, with DataParallel's prefix."""
    model = LeNet5(generator=torch.Generator().manual_seed(5))
    path = tmp_path / "lenet.pth"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


DATA = ("--dataset", "digits", "--image-size", "28", "--train-subset", "60", "--test-subset", "20")  # offline


def _refused(capsys, *args: str) -> str:
    """The one-line error of `mixprune ARGS` run in this process (exit 2, no traceback)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _args(out, weights, *extra):
    return ["compress", *DATA, "--weights", str(weights), "--out", str(out), "--finetune-epochs", "1",
            "--seeds", "0", "1", "--no-latency", *extra]


def _run(out, weights, *extra):
    return cli("compress", *DATA, "--weights", str(weights), "--out", str(out), "--finetune-epochs", "1",
               "--seeds", "0", "1", "--no-latency", *extra)


@pytest.mark.slow
def test_compress_meets_each_budget_writes_verified_files_and_resumes(tmp_path, checkpoint):
    out = tmp_path / "out"
    res = _run(out, checkpoint, "--target-macs", "0.5x", "--target-params", "20000")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    original = result["original"]
    assert original["macs"] == macs_per_image(LeNet5()) and result["validation_examples"] == 4
    assert [t["label"] for t in result["targets"]] == ["macs-0.5x", "params-20000"]
    for t in result["targets"]:
        assert t["budget_met"] and t["achieved"] <= t["limit"] and t["achieved"] >= 0.95 * t["limit"]
        assert len(t["seeds"]) == 2 and t["accuracy_change"]["n"] == 2
        for s in t["seeds"]:
            cell = out / t["label"] / f"seed{s['seed']}"
            small = load_model(cell / "model.safetensors")  # safetensors: no pickle
            assert macs_per_image(small) == s["macs"] and s["onnx_prediction_agreement"] == 1.0
            assert (cell / "model.int8.onnx").stat().st_size == s["bytes_onnx_int8"]
    assert "macs-0.5x" in (out / "compress.md").read_text() and (out / "report.html").stat().st_size > 1000
    assert (out / "budget.png").exists() and (out / "budget.csv").read_text().count("\n") == 4  # header, original, two targets
    before = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    again = cli("compress", "--config", str(out / "config.toml"), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == before  # resumed: nothing redone
    assert json.loads((out / "results.json").read_text())["targets"] == result["targets"]


@pytest.mark.parametrize("flags,fragments", [
    (("--target-macs", "0x"), ("--target-macs 0x", "above 0x")),
    (("--target-macs", "1.5x"), ("--target-macs 1.5x", "at most 1x")),
    (("--target-params", "abc"), ("--target-params 'abc'",)),
    (("--max-drop", "-1"), ("--max-drop",)),
    (("--max-drop", "nan"), ("--max-drop",)),
    (("--target-params", "100"), ("--target-params 100 cannot be met", "smallest this network reaches")),
    (("--target-bytes", "1000", "--format", "zip"), ("--format",)),
    (("--backend", "ray"), ("runs on this machine for now",)),
    (("--target-latency", "1"), ("--target-latency needs latency measured",)),
    (("--conv-amount", "0.5", "--alpha", "0.2"), ("--alpha, --conv-amount: not used by mixprune compress",)),
])
def test_bad_budgets_are_one_line_and_write_nothing(tmp_path, capsys, checkpoint, flags, fragments):
    out = tmp_path / "out"
    line = _refused(capsys, *_args(out, checkpoint, *flags))
    assert all(f in line for f in fragments), line
    assert not out.exists()


def test_bad_weights_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    other = tmp_path / "wide.pt"
    torch.save(LeNet5(widths=(8, 16, 120, 84)).state_dict(), other)
    assert "conv1.weight has shape [8, 1, 5, 5] in the file" in _refused(capsys, *_args(out, other))
    pickled = tmp_path / "module.pt"
    torch.save(LeNet5(), pickled)
    assert "needs code to load" in _refused(capsys, *_args(out, pickled))
    assert "needs --weights" in _refused(capsys, "compress", *DATA, "--out", str(out))
    assert not out.exists()


def test_a_different_run_into_the_same_out_is_refused(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    quick = ("--seeds", "0", "--finetune-epochs", "0")
    assert main(_args(out, checkpoint, "--target-macs", "0.7x", *quick)) == 0
    capsys.readouterr()
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "already holds another compress" in _refused(capsys, *_args(out, checkpoint, "--target-macs", "0.6x", *quick))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == kept


def test_python_api_takes_a_trained_module_and_tensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(60) % 3,
            torch.randint(0, 256, (15, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(15) % 3)
    model = LeNet5(num_classes=3, generator=g)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "prune.finetune_epochs": 1, "bench.latency": False})
    result = mixprune.compress(model, data, targets={"macs": ["0.6x"]}, cfg=cfg, out=tmp_path / "api",
                               bench_batch=4)
    t = result["targets"][0]
    assert t["budget_met"] and t["accuracy_kept"] is None  # one seed: no interval, no verdict on accuracy
    assert result["bench"]["batch"] == 4 and result["original"]["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_a_torchvision_resnet18_checkpoint_compresses_end_to_end(tmp_path):
    net = build_model("torchvision:resnet18", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    weights = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), weights)  # a plain torch.save(state_dict) checkpoint
    out = tmp_path / "out"
    res = cli("compress", *DATA, "--arch", "torchvision:resnet18", "--weights", str(weights), "--out", str(out),
              "--finetune-epochs", "1", "--seeds", "0", "--target-macs", "0.5x", "--no-latency")
    assert res.returncode == 0, res.stderr[-3000:]
    t = json.loads((out / "results.json").read_text())["targets"][0]
    assert t["budget_met"] and 0.475 <= t["achieved_ratio"] <= 0.5
    assert t["seeds"][0]["onnx_prediction_agreement"] >= 0.95


def test_a_config_files_compress_table_is_checked(tmp_path, capsys, checkpoint):
    bad = tmp_path / "c.toml"
    bad.write_text('[compress]\ntarget_macs = ["0.5x"]\nformat = 3\n')
    assert "format = 3 is not a str" in _refused(capsys, *_args(tmp_path / "out", checkpoint, "--config", str(bad)))
    bad.write_text('[compress]\ntarget_flops = ["0.5x"]\n')
    assert "unknown setting 'target_flops'" in _refused(capsys, *_args(tmp_path / "out", checkpoint, "--config",
                                                                        str(bad)))
    assert not (tmp_path / "out").exists()


def test_an_accuracy_budget_alone_chooses_the_design(tmp_path, checkpoint):
    out = tmp_path / "out"
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "prune.finetune_epochs": 0, "bench.latency": False,
                                         "prune.max_drop": 5.0, "model.weights": str(checkpoint),
                                         "data.dataset": "digits", "data.image_size": 28, "data.train_subset": 60,
                                         "data.test_subset": 20})
    result = mixprune.compress(None, None, cfg=cfg, out=out)
    t = result["targets"][0]
    assert t["label"] == "max-drop" and t["predicted_drop"] <= 5.0 and "budget_met" not in t
    assert (out / "max-drop" / "seed0" / "model.onnx").exists()


@pytest.mark.slow
def test_worker_processes_recover_the_same_networks(tmp_path, checkpoint):
    base = with_overrides(StudyConfig(), {"seeds": [0, 1], "prune.finetune_epochs": 1, "threads": 1,
                                          "model.weights": str(checkpoint), "data.dataset": "digits",
                                          "data.image_size": 28, "data.train_subset": 60, "data.test_subset": 20})
    serial = mixprune.compress(targets={"macs": ["0.5x"]}, cfg=base, out=tmp_path / "serial")
    parallel = mixprune.compress(targets={"macs": ["0.5x"]}, cfg=with_overrides(base, {"workers": 2}),
                                 out=tmp_path / "parallel")
    assert (serial["execution"], parallel["execution"]) == ({"workers": 1, "threads": 1}, {"workers": 2, "threads": 1})
    timed = ("latency_ms", "ort_latency_ms", "ort_int8_latency_ms")
    for a, b in zip(serial["targets"][0]["seeds"], parallel["targets"][0]["seeds"]):
        assert {k: v for k, v in a.items() if k not in timed} == {k: v for k, v in b.items() if k not in timed}
        assert all(k in b for k in timed)  # timed after the workers, in this process
    for seed in (0, 1):
        for name in ("model.safetensors", "model.onnx"):
            assert (tmp_path / "serial" / "macs-0.5x" / f"seed{seed}" / name).read_bytes() == \
                (tmp_path / "parallel" / "macs-0.5x" / f"seed{seed}" / name).read_bytes()
