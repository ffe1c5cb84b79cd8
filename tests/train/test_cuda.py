"""The GPU path: CUDA-graph training steps equal eager ones, 2:4 kernels, a study on the GPU.

Skipped where no CUDA device is present (CI); run on a GPU machine with `pytest tests/train/test_cuda.py`.
"""

from __future__ import annotations

import json

import pytest
import torch

from mixprune.commands.bench import semi_structured_gpu
from mixprune.compress.pruning import (
    attach_masks,
    make_permanent,
    semi_structured_masks,
)
from mixprune.core.config import StudyConfig, with_overrides
from mixprune.core.runtime import generator
from mixprune.data import load_fashion_mnist
from mixprune.data.prepare import Tensors
from mixprune.models import LeNet5
from mixprune.study.run import run_study
from mixprune.train.engine import FitSpec, fit
from mixprune.train.losses import training_loss
from mixprune.train.schedules import lr_steps

from ..helpers import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    t = Tensors(torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g),
                torch.randn(50, 1, 28, 28, generator=g), torch.randint(0, 10, (50,), generator=g))
    return Tensors(*(x.cuda() for x in (t.train_x, t.train_y, t.test_x, t.test_y)))


def _train(data, graphs: bool, alpha: float | None, masked: bool = False):
    model = LeNet5(generator=torch.Generator().manual_seed(0)).cuda()
    if masked:
        attach_masks(model, semi_structured_masks(model)[0])
    spec = FitSpec(epochs=3, lr=lr_steps(0.05, 2, 0.1), batch_size=64, mixup_alpha=alpha, cuda_graphs=graphs)
    hist = fit(model, data, spec, generator(0, "order"), generator(0, "mixup") if alpha else None)
    return model, hist


@pytest.mark.parametrize("alpha", [None, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_graphed_steps_equal_eager(data, alpha, masked):
    # 300 images in batches of 64: 4 graphed steps and one eager partial step per epoch; two LRs
    eager, h1 = _train(data, False, alpha, masked)
    graphed, h2 = _train(data, True, alpha, masked)
    for (n, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), n
    assert [r.train_loss for r in h1] == pytest.approx([r.train_loss for r in h2], rel=1e-4)


@pytest.mark.parametrize("alpha", [None, 1.0])
def test_graphed_distillation_equals_eager(data, alpha):
    """A teacher's forward inside the captured step: the same weights as eager distillation."""
    teacher, _ = _train(data, False, None)
    teacher.requires_grad_(False)
    models = []
    for graphs in (False, True):
        model = LeNet5(generator=torch.Generator().manual_seed(1)).cuda()
        spec = FitSpec(epochs=2, lr=lr_steps(0.05, 1, 0.1), batch_size=64, mixup_alpha=alpha, cuda_graphs=graphs,
                       loss=training_loss("kd", 0.1, 4.0, 0.9), teacher=teacher)
        fit(model, data, spec, generator(0, "order"), generator(0, "mixup") if alpha else None)
        models.append(model)
    for (n, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), n


def test_graphed_training_learns_and_repeats(data):
    a, h = _train(data, True, None)
    b, _ = _train(data, True, None)
    assert h[-1].train_loss < h[0].train_loss
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, atol=1e-6)


def test_semi_structured_kernels_match_dense():
    model = LeNet5(generator=torch.Generator().manual_seed(0))
    attach_masks(model, semi_structured_masks(model)[0])
    make_permanent(model)
    rows, line = semi_structured_gpu(model, batches=(256,), min_run_time=0.05)
    assert {r["variant"] for r in rows} == {"GPU fp16 dense FC (padded)", "GPU fp16 2:4 FC (padded)"}, line
    assert rows[0]["max_abs_diff"] < 1e-2
    dense_rows, line = semi_structured_gpu(LeNet5(), batches=(256,))
    assert dense_rows == [] and "not 2:4 sparse" in line


def test_study_runs_on_the_gpu(tiny_dir, tmp_path):
    cfg = with_overrides(StudyConfig(), {"train.epochs": 2, "prune.finetune_epochs": 1, "train.batch_size": 8,
                                         "seeds": [0], "device": "cuda", "out": str(tmp_path / "r")})
    res = run_study(cfg, dataset=load_fashion_mnist(tiny_dir, spec=TINY))
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["environment"]["device"].startswith("cuda") and "gpu" in saved["environment"]
    assert set(res["models"]) == {"baseline", "mixup", "pruned", "mixup_pruned"}


def test_gpu_workers_match_one_process(tiny_dir, tmp_path):
    ds = load_fashion_mnist(tiny_dir, spec=TINY)
    base = {"train.epochs": 2, "prune.finetune_epochs": 1, "train.batch_size": 8, "seeds": [0], "device": "cuda",
            "bench.latency": False, "bench.onnx": False, "threads": 1, "train.stack_models": False}
    one = run_study(with_overrides(StudyConfig(), {**base, "out": str(tmp_path / "a"), "workers": 1}), dataset=ds)
    two = run_study(with_overrides(StudyConfig(), {**base, "out": str(tmp_path / "b"), "workers": 2}), dataset=ds)
    assert two["execution"]["workers"] == 2
    for name in one["models"]:
        a, b = one["models"][name]["seeds"]["0"], two["models"][name]["seeds"]["0"]
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4), name


def _stack(data, graphs: bool, masked: bool):
    from mixprune.train.stacked import Member, fit_stacked

    members = []
    for seed, alpha in ((0, None), (0, 1.0), (1, 1.0)):
        model = LeNet5(generator=torch.Generator().manual_seed(seed)).cuda()  # as _train's
        if masked:
            attach_masks(model, semi_structured_masks(model)[0])
        spec = FitSpec(epochs=3, lr=lr_steps(0.05, 2, 0.1), batch_size=64, mixup_alpha=alpha, cuda_graphs=graphs)
        members.append(Member(model, spec, generator(seed, "order"), generator(seed, "mixup") if alpha else None))
    return members, fit_stacked(members, data)


@pytest.mark.parametrize("masked", [False, True])
def test_stacked_graphs_equal_stacked_eager_and_separate_training(data, masked):
    eager, h1 = _stack(data, False, masked)
    graphed, h2 = _stack(data, True, masked)
    for a, b in zip(eager, graphed):
        for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
            assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)
    assert [r.train_loss for h in h1 for r in h] == pytest.approx([r.train_loss for h in h2 for r in h], rel=1e-4)
    # against the model trained by itself, in full fp32: cuDNN's default TF32 convolutions round the
    # grouped and the plain convolution differently (~1e-4 apart after 3 epochs, seen on an H200)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        stacked, _ = _stack(data, True, masked)
        alone, _ = _train(data, True, 1.0, masked)  # seed 0's Mixup model, trained by itself
    for x, y in zip(stacked[1].model.state_dict().values(), alone.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-4, rtol=1e-3)


def test_stacked_study_on_the_gpu(tiny_dir, tmp_path):
    ds = load_fashion_mnist(tiny_dir, spec=TINY)
    base = {"train.epochs": 2, "prune.finetune_epochs": 1, "train.batch_size": 8, "seeds": [0, 1], "device": "cuda",
            "bench.latency": False, "bench.onnx": False}
    sep = run_study(with_overrides(StudyConfig(), {**base, "out": str(tmp_path / "a"), "train.stack_models": False}),
                    dataset=ds)
    stk = run_study(with_overrides(StudyConfig(), {**base, "out": str(tmp_path / "b")}), dataset=ds)
    assert stk["execution"]["stacked_chains"] == [4] and sep["execution"]["stacked_chains"] == []  # default: stacked
    for name in sep["models"]:
        for seed in ("0", "1"):
            a, b = sep["models"][name]["seeds"][seed], stk["models"][name]["seeds"][seed]
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3), name


def test_a_network_with_batchnorm_and_residuals_trains_on_the_gpu(tmp_path):
    """The CUDA path with a non-LeNet model: torchvision's resnet18 (BatchNorm, residual adds; trained eagerly,
    no CUDA graphs, no stacking) through the whole study (ONNX export is checked on the CPU, tests/models/test_generic.py,
    and left out here to keep the GPU check short)."""
    from ..helpers import write_idx_set

    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1,
                                         "model.arch": "torchvision:resnet18", "device": "cuda",
                                         "bench.latency": False, "bench.onnx": False, "out": str(tmp_path / "out")})
    results = run_study(cfg, dataset=ds)
    assert results["environment"]["device"].startswith("cuda")
    for entry in results["models"].values():
        m = entry["seeds"]["0"]
        assert m["params_total"] > 11_000_000 and 0 <= m["test_accuracy"] <= 100
        assert m["test_accuracy_fp16"] == pytest.approx(m["test_accuracy"], abs=10)  # the decoded file scores too
    assert results["models"]["pruned"]["seeds"]["0"]["params_nonzero"] < 11_000_000


def test_structured_pruning_of_resnet18_on_the_gpu(tmp_path):
    """Structured pruning on the CUDA path: masks on the GPU model, slimming and the slimmed file on the CPU,
    the slimmed network's ONNX verified in ONNX Runtime."""
    from ..helpers import write_idx_set

    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1,
                                         "model.arch": "torchvision:resnet18", "device": "cuda", "mixup.alpha": 0.0,
                                         "prune.method": "structured", "prune.conv_amount": 0.5,
                                         "prune.fc_amount": 0.5, "bench.latency": False, "out": str(tmp_path / "out")})
    results = run_study(cfg, dataset=ds)
    pruned = results["models"]["pruned"]["seeds"]["0"]
    assert pruned["params_present"] < 0.3 * pruned["params_total"]
    assert pruned["onnx_network"] == "slimmed" and pruned["onnx_verified"]
    assert pruned["test_accuracy_slim"] == pytest.approx(pruned["test_accuracy"], abs=0.5)
