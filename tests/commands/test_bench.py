"""mixprune bench: variants timed at every batch and thread count, verdicts from the measured rows."""

from __future__ import annotations

import pytest
import torch

from mixprune.cli import main
from mixprune.commands.bench import (
    CsrLinearLeNet,
    bench_model,
    bench_targets,
    semi_structured_fit,
    verdicts,
)
from mixprune.core.errors import ModelFileError
from mixprune.deploy.files import save_safetensors
from mixprune.models import LeNet5, build_model

from ..helpers import structurally_pruned


@pytest.fixture
def slimmable():
    return structurally_pruned(LeNet5(generator=torch.Generator().manual_seed(0)), 0.5, 0.5)[0].eval()


def test_csr_variant_computes_the_same(slimmable):
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(CsrLinearLeNet(slimmable)(x), slimmable(x), atol=1e-5)


def test_bench_model_rows_and_verdicts(slimmable):
    rows, lines, macs = bench_model(slimmable, batches=(1, 8), threads=(1,), min_run_time=0.01,
                                    calibration_x=torch.randn(50, 1, 28, 28))
    variants = {r["variant"] for r in rows}
    assert variants == {"eager dense", "eager CSR FC", "ORT fp32", "eager slimmed", "ORT slimmed", "ORT int8",
                        "ORT int8 slimmed"}
    assert len(rows) == len(variants) * 2 and all(r["median_ms"] > 0 and r["iqr_ms"] >= 0 for r in rows)
    assert macs["slimmed"] < macs["dense"] / 2 and macs["effective"] <= macs["dense"]
    assert any(line.startswith("slimmed (6, 16, 120, 84) -> (3, 8, 60, 42)") for line in lines)
    assert any("2:4 semi-structured" in line for line in lines)


def test_verdict_words_follow_the_numbers():
    rows = [{"variant": "eager dense", "batch": 256, "threads": 1, "median_ms": 2.0},
            {"variant": "eager CSR FC", "batch": 256, "threads": 1, "median_ms": 3.0}]
    lines = verdicts(rows, {"dense": 100, "effective": 70, "slimmed": 100}, (6, 16, 120, 84), (6, 16, 120, 84))
    assert lines[0].startswith("torch CSR sparse kernels for the FC layers: 1.50x slower")
    assert "slimming does not apply" in lines[1]
    assert lines[-1] == "Slower than eager dense at batch 256, 1 thread: eager CSR FC (1.50x the time)."


def test_bench_any_network_slimmed_and_quantized():
    model = build_model("torchvision:resnet18", (1, 16, 16), 10, torch.Generator().manual_seed(0))
    pruned, _ = structurally_pruned(model.eval(), 0.5, 0.5)
    rows, lines, macs = bench_model(pruned, batches=(2,), threads=(1,), min_run_time=0.01,
                                    calibration_x=torch.randn(8, 1, 16, 16))
    assert {r["variant"] for r in rows} == {"eager dense", "ORT fp32", "eager slimmed", "ORT slimmed", "ORT int8",
                                            "ORT int8 slimmed"}
    assert macs["slimmed"] < 0.4 * macs["dense"]
    assert any(line.startswith("slimmed (the pruned channels removed)") for line in lines)


def test_semi_structured_shapes_are_checked_against_torch():
    fit = semi_structured_fit(LeNet5())
    assert set(fit) == {"fc1", "fc2", "fc3"} and all("does not qualify" in v for v in fit.values())
    assert "qualifies" in semi_structured_fit(LeNet5(widths=(6, 16, 128, 64)))["fc2"].replace("does not", "x")


def test_cli_bench_on_a_file_and_bad_paths(slimmable, tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_safetensors(slimmable, path)
    assert main(["bench", str(path), "--batches", "2", "--threads", "1", "--seconds", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "eager slimmed" in printed and "MACs per image" in printed
    with pytest.raises(ModelFileError, match="neither a model file nor a run directory"):
        bench_targets(tmp_path / "absent")
    assert main(["bench", str(tmp_path / "absent")]) == 2
    assert main(["bench", str(path), "--batches", "0"]) == 2
    assert "invalid --batches" in capsys.readouterr().err
