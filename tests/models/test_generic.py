"""Any network on any data: the model registry, pickle-free files of any model, and the study end to end on a
user's model (BatchNorm + a residual connection) over an RGB image folder, through the CLI and the Python API."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from mixprune import StudyConfig, load_model, reproduce
from mixprune.cli import main
from mixprune.core.config import with_overrides
from mixprune.core.errors import ConfigError, ModelFileError
from mixprune.deploy.files import save_safetensors, save_sparse
from mixprune.models import build_model, count_params, prunable
from mixprune.study.results import Results
from mixprune.study.variants import PAPER

from ..helpers import write_pngs

USER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))  # residual add


    def build(in_channels, num_classes):
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


    def too_rigid(in_channels, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))
''')


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("code") / "my_model.py"
    path.write_text(USER_MODEL)
    return path


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_pngs(root / "train", n=8, size=(16, 16))
    write_pngs(root / "test", n=4, size=(16, 16), seed=1)
    return root


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mixprune", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, user_model, rgb_folder):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["reproduce", "--dataset", f"folder:{rgb_folder}", "--arch", f"{user_model}:build", "--seeds", "0",
                 "--epochs", "2", "--finetune-epochs", "1", "--batch-size", "8", "--bench-seconds", "0.01",
                 "--workers", "1", "--out", str(out)])
    return code, out


@pytest.mark.slow
def test_user_model_on_rgb_folder_through_the_cli(folder_run, user_model):
    code, out = folder_run
    assert code == 0
    results = Results.load(out / "results.json")
    assert results.data["input_shape"] == [3, 16, 16] and results.data["classes"] == ["cat", "dog", "owl"]
    assert results.claims == [] and "not audited here" in (out / "report.md").read_text()
    for v in PAPER:
        m = results.metrics(v.name, 0)
        assert m["onnx_verified"] and len(m["per_class_f1"]) == 3
        for suffix in ("safetensors", "fp16.safetensors", "sparse.safetensors", "sparse-int8.safetensors", "onnx",
                       "int8.onnx"):
            assert (out / "models" / f"{v.name}-seed0.{suffix}").stat().st_size > 0
    pruned = results.metrics("pruned", 0)
    net = build_model(f"{user_model}:build", (3, 16, 16), 3)  # conv weights lose 20%, FC weights 30%
    expected = sum(round((0.2 if isinstance(m, nn.Conv2d) else 0.3) * m.weight.numel()) for _, m in prunable(net))
    assert pruned["params_total"] == count_params(net)  # BatchNorm's affine parameters included, never pruned
    assert pruned["params_total"] - pruned["params_nonzero"] == expected


@pytest.mark.slow
def test_user_factory_files_load_only_when_named(folder_run, user_model, capsys):
    _, out = folder_run
    path = out / "models" / "pruned-seed0.sparse.safetensors"
    with pytest.raises(ModelFileError, match="imports user code only when you name it"):
        load_model(path)
    model = load_model(path, arch=f"{user_model}:build")
    assert model.input_shape == (3, 16, 16) and isinstance(model[3].bn, nn.BatchNorm2d)
    dense = load_model(out / "models" / "pruned-seed0.safetensors", arch=f"{user_model}:build")
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(model(x), dense(x), atol=1e-2)  # fp16 values of the same weights
    capsys.readouterr()
    assert main(["bench", str(out / "models" / "pruned-seed0.safetensors"), "--arch", f"{user_model}:build",
                 "--batches", "1", "--threads", "1", "--seconds", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "ORT fp32" in printed and "slimming does not apply" in printed


def test_a_model_that_cannot_take_the_input_is_refused_before_training(tmp_path, user_model, rgb_folder, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "--dataset", f"folder:{rgb_folder}", "--arch", f"{user_model}:too_rigid",
                 "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "cannot take the dataset's 3x16x16 inputs" in line and "too_rigid" in line
    assert not out.exists()
    for arch, match in (("torchvision:resnet9000", "not a torchvision classification model"),
                        (f"{tmp_path}/absent.py:build", "does not exist"), (f"{user_model}:nothing", "no function"),
                        ("keras:vgg", "invalid --arch")):
        assert main(["reproduce", "--arch", arch, "--out", str(out)]) == 2, arch
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err and not out.exists(), (arch, err)


def small_net(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, num_classes))


def test_python_api_with_a_model_defined_in_code(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_x = torch.rand(48, 3, 12, 12, generator=g)  # floats in [0, 1]: rounded to 8 bits
    train_y, test_y = torch.arange(48) % 2, torch.arange(16) % 2
    test_x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8, generator=g)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1,
                                         "train.batch_size": 16, "bench.latency": False, "out": str(tmp_path / "o"),
                                         "train.stack_models": True})
    results = reproduce(cfg, dataset=(train_x, train_y, test_x, test_y), model=small_net, classes=("no", "yes"))
    assert "BatchNorm" in results.execution["stack_note"]  # asked for, and why it could not stack
    assert results.config["model"]["arch"] == "python:small_net" and results.data["classes"] == ["no", "yes"]
    assert results.execution["workers"] == 1 and "in_process" in results.execution
    path = tmp_path / "o" / "models" / "mixup_pruned-seed0.safetensors"
    with pytest.raises(ModelFileError, match="load_model\\(path, model=your_model\\)"):
        load_model(path)
    model = load_model(path, model=small_net(3, 2))
    assert count_params(model) == results.metrics("mixup_pruned", 0)["params_total"]
    again = reproduce(with_overrides(cfg, {"out": str(tmp_path / "p"), "bench.onnx": False}),
                      dataset=(train_x, train_y, test_x, test_y), model=small_net)
    assert again.metrics("pruned", 0)["test_loss"] == results.metrics("pruned", 0)["test_loss"]


@pytest.mark.parametrize("arch, shape", [("torchvision:resnet18", (1, 28, 28)),
                                         ("torchvision:mobilenet_v3_small", (3, 32, 32))])
def test_torchvision_models_are_adapted_and_seeded(arch, shape):
    state = torch.random.get_rng_state()
    a = build_model(arch, shape, 7, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    b = build_model(arch, shape, 7, torch.Generator().manual_seed(1))
    c = build_model(arch, shape, 7, torch.Generator().manual_seed(2))
    first = prunable(a)[0][1]
    assert first.in_channels == shape[0] and a.eval()(torch.zeros(2, *shape)).shape == (2, 7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(prunable(a)[0][1].weight, prunable(c)[0][1].weight)


def test_timm_models_where_installed():
    pytest.importorskip("timm")
    model = build_model("timm:resnet10t", (3, 32, 32), 5, torch.Generator().manual_seed(0))
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ConfigError, match="invalid --arch timm:no_such_net"):
        build_model("timm:no_such_net", (3, 32, 32), 5)


def test_any_model_round_trips_through_every_file_format(tmp_path):
    model = build_model("torchvision:mobilenet_v3_small", (3, 32, 32), 4, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = model(x)
    save_safetensors(model, tmp_path / "m.safetensors")
    assert torch.equal(load_model(tmp_path / "m.safetensors")(x), ref)
    save_sparse(model, tmp_path / "m.sparse.safetensors")
    save_safetensors(model, tmp_path / "m.fp16.safetensors", torch.float16)
    for name in ("m.sparse.safetensors", "m.fp16.safetensors"):
        assert torch.allclose(load_model(tmp_path / name)(x), ref, atol=5e-2, rtol=5e-2), name
    raw = (tmp_path / "m.safetensors").read_bytes()
    assert b"pickle" not in raw and b"torchvision:mobilenet_v3_small" in raw


def test_lenet_on_other_shapes_and_the_paper_shape_unchanged():
    paper = build_model("lenet5", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    assert count_params(paper) == 44_426
    cifar = build_model("lenet5", (3, 32, 32), 100, torch.Generator().manual_seed(0))
    assert cifar.fc1.in_features == 16 * 5 * 5 and cifar.fc3.out_features == 100 and cifar.conv1.in_channels == 3
    with pytest.raises(ConfigError, match="at least 16x16.*--image-size"):
        build_model("lenet5", (1, 8, 8), 10)


FACTORIES = {
    "exits at import": "import sys\nsys.exit(0)\ndef build(in_channels, num_classes):\n    pass\n",
    "exits in build": "import sys\ndef build(in_channels, num_classes):\n    sys.exit(0)\n",
    "prints and exits": "import os\nprint('{}')\ndef build(in_channels, num_classes):\n    os._exit(0)\n",
    "hangs": "import time\ndef build(in_channels, num_classes):\n    time.sleep(3600)\n",
    "starts a thread": ("import threading, time\nfrom torch import nn\ndef build(in_channels, num_classes):\n"
                        "    threading.Thread(target=time.sleep, args=(3600,)).start()\n"
                        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))\n"),
    "has no parameters": "from torch import nn\ndef build(in_channels, num_classes):\n    return nn.Flatten()\n",
}


@pytest.mark.parametrize("behaviour, message", [("exits at import", "exits the process"),
                                                ("exits in build", "exits the process"),
                                                ("prints and exits", "exits the process"),
                                                ("hangs", "did not finish within 3 s"),
                                                ("starts a thread", "starts threads that keep running"),
                                                ("has no parameters", "no trainable parameters")])
def test_user_factory_code_that_misbehaves_is_one_line(tmp_path, monkeypatch, behaviour, message):
    """sys.exit in a factory used to end mixprune with exit 0 having done nothing; a hang or a non-daemon thread
    hung it; a network without parameters was a traceback. The factory runs once in a child process first."""
    from mixprune.models import registry

    monkeypatch.setattr(registry, "FACTORY_SECONDS", 3)  # counted once the child's Python and torch have started
    path = tmp_path / "factory.py"
    path.write_text(FACTORIES[behaviour])
    with pytest.raises(ConfigError, match=message) as exc:
        build_model(f"{path}:build", (1, 8, 8), 10)
    assert "\n" not in str(exc.value)


def test_a_network_that_cannot_train_on_the_last_batch_of_one_is_refused_before_training(tmp_path, capsys):
    """BatchNorm1d needs two values per channel: 1,437 digits in batches of 4 leave a last batch of one, which used
    to fail with a traceback once training had started."""
    path = tmp_path / "bn1d.py"
    path.write_text("from torch import nn\ndef build(in_channels, num_classes):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 16), nn.BatchNorm1d(16),\n"
                    "                         nn.ReLU(), nn.Linear(16, num_classes))\n")
    out = tmp_path / "o"
    assert main(["reproduce", "--dataset", "digits", "--arch", f"{path}:build", "--batch-size", "4", "--seeds", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "last batch of every epoch holds one image" in err and "--batch-size" in err and "\n" not in err
    assert not out.exists()
