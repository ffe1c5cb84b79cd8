"""Structured pruning of any network (Torch-Pruning's dependency graph): groups, masks, exact slimming,
pickle-free slimmed files, gradual removal, sensitivity, and the one-line refusals."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from mixprune.cli import main
from mixprune.compress.pruning import l1_masks, make_permanent, semi_structured_masks
from mixprune.compress.sensitivity import LADDER, choose_ratios, sensitivity
from mixprune.compress.structured import (
    GradualStructuredPruner,
    check_exact,
    max_difference,
    ratios_for,
    slim_any,
    structured_keep,
    unit_groups,
)
from mixprune.core.errors import ConfigError
from mixprune.data import Dataset
from mixprune.deploy.files import load_model, save_safetensors
from mixprune.models import LeNet5, build_model, count_params, macs_per_image

from ..helpers import structurally_pruned

USER_MODEL = textwrap.dedent('''
    """A small CNN with BatchNorm, a residual add, a depthwise conv and flatten into FC."""
    import torch
    from torch import nn


    class ResBN(nn.Module):
        def __init__(self, in_channels, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc1 = nn.Linear(8 * 4, 16)
            self.fc2 = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.b(self.a(x)))
            x = torch.flatten(self.pool(self.dw(x)), 1)
            return self.fc2(torch.relu(self.fc1(x)))


    def build(in_channels=1, num_classes=10):
        return ResBN(in_channels, num_classes)
''')


@pytest.fixture
def user_model_file(tmp_path):
    path = tmp_path / "resbn.py"
    path.write_text(USER_MODEL)
    return path


def user_model(path, shape=(1, 8, 8), classes=10, seed=0):
    model = build_model(f"{path}:build", shape, classes, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # BatchNorm statistics as after training, so eval mode is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_groups_couple_residual_batchnorm_and_depthwise(user_model_file):
    model = user_model(user_model_file)
    groups = {g.name: g for g in unit_groups(model)}
    assert "fc2" not in groups  # the classifier keeps its outputs
    # the residual add couples stem and b (and the depthwise conv reading them): one group of 8 channels
    residual = [g for g in groups.values() if any(p.module == "b.0" for p in g.producers)]
    assert len(residual) == 1 and residual[0].size == 8
    producers = {p.module for p in residual[0].producers}
    assert {"stem.0", "stem.1", "b.0", "b.1", "dw.0", "dw.1"} <= producers
    assert groups["a.0"].size == 12 and groups["fc1"].size == 16


EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "my_model.py") + ":build"


@pytest.mark.parametrize("arch", ["lenet5", "torchvision:resnet18", "torchvision:mobilenet_v3_small", EXAMPLE, "user"])
def test_slimmed_network_computes_what_the_masked_one_does(arch, user_model_file):
    if arch == "user":
        model = user_model(user_model_file)
    else:
        model = build_model(arch, (3, 32, 32) if arch == EXAMPLE else (1, 28, 28), 10,
                            torch.Generator().manual_seed(0)).eval()
    masked, keep = structurally_pruned(copy.deepcopy(model), 0.5, 0.5)
    small = slim_any(masked)
    assert count_params(small) < 0.6 * count_params(model)
    assert macs_per_image(small) < 0.6 * macs_per_image(model)
    removed = {g: int((~k).sum()) for g, k in keep.items()}
    assert small.pruned_channels == {g: n for g, n in removed.items() if n}
    x = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(small(x), masked(x), atol=1e-5, rtol=1e-4)


def test_lenet_groups_rank_as_torch_ln_structured():
    model = LeNet5(generator=torch.Generator().manual_seed(0))
    groups = unit_groups(model)
    assert [g.name for g in groups] == ["conv1", "conv2", "fc1", "fc2"]
    keep = structured_keep(model, groups, ratios_for(groups, 0.5, 0.3))
    for g in groups:
        w = model.get_submodule(g.name).weight.detach()
        amount = 0.5 if g.kind == "conv" else 0.3
        expected = torch.nn.utils.prune.LnStructured(amount, n=1, dim=0).compute_mask(w, torch.ones_like(w))
        assert torch.equal(keep[g.name], expected.flatten(1).any(1))


def test_global_scope_removes_the_same_total_and_keeps_every_group(user_model_file):
    model = user_model(user_model_file)
    groups = unit_groups(model)
    ratios = ratios_for(groups, 0.5, 0.5)
    layerwise = structured_keep(model, groups, ratios)
    glob = structured_keep(model, groups, ratios, scope="global")
    assert sum(int((~k).sum()) for k in glob.values()) == sum(int((~k).sum()) for k in layerwise.values())
    assert all(k.any() for k in glob.values())


def test_bn_scale_importance_ranks_by_batchnorm(user_model_file):
    model = user_model(user_model_file)
    groups = [g for g in unit_groups(model) if g.name == "a.0"]
    keep = structured_keep(model, groups, {"a.0": 0.5}, importance="bn-scale")["a.0"]
    gamma = model.a[1].weight.detach().abs()
    assert int(keep.sum()) == 6 and gamma[~keep].max() <= gamma[keep].min()
    with pytest.raises(ConfigError, match="no BatchNorm"):
        lenet = LeNet5()
        structured_keep(lenet, unit_groups(lenet), {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5, "fc2": 0.5},
                        importance="bn-scale")


def test_keep_and_ratio_errors(user_model_file):
    model = user_model(user_model_file)
    with pytest.raises(ConfigError, match="invalid --keep nosuch"):
        unit_groups(model, keep=("nosuch",))
    kept = unit_groups(model, keep=("a.0",))
    assert "a.0" not in {g.name for g in kept}
    groups = unit_groups(model)
    with pytest.raises(ConfigError, match="removes all 12 channels of a.0"):
        structured_keep(model, groups, {**ratios_for(groups, 0.2, 0.2), "a.0": 0.99})
    with pytest.raises(ConfigError, match="is not a prunable group"):
        ratios_for(groups, 0.2, 0.2, {"stem.1": 0.5})


class FixedWidth(nn.Module):
    """Code that names a width Torch-Pruning cannot see: it reads channels 0-7 one by one."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.fc(torch.stack([x[:, i] for i in range(8)], 1))


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)),
     "changes what it computes"),
    (FixedWidth(), "does not run once channels are removed"),
])
def test_a_network_that_slimming_would_change_is_refused(model, message):
    model.input_shape = (1, 8, 8)
    groups = unit_groups(model)
    with pytest.raises(ConfigError, match=message):
        check_exact(model, groups, structured_keep(model, groups, ratios_for(groups, 0.5, 0.5)))


def test_gradual_removal_reaches_the_final_counts_and_never_brings_back(user_model_file):
    model = user_model(user_model_file).train()
    groups = unit_groups(model)
    hook = GradualStructuredPruner(model, groups, ratios_for(groups, 0.5, 0.5), end_step=10, every=2)
    assert all(k.all() for k in hook.keep.values())
    before = None
    for step in range(0, 12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(step)) * 0.1)
        hook(step)
        now = {n: k.clone() for n, k in hook.keep.items()}
        if before is not None:
            assert all(not (now[n] & ~before[n]).any() for n in now)  # kept only shrinks
        before = now
    assert {n: int((~k).sum()) for n, k in hook.keep.items()} == {g.name: round(0.5 * g.size) for g in groups}
    small = slim_any(make_permanent(model))
    assert max_difference(model, small) < 1e-5


def test_unstructured_and_2to4_masks_cover_every_layer_of_any_model(user_model_file):
    model = user_model(user_model_file)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(l1_masks(model, 0.3, 0.3)) == layers
    masks, skipped = semi_structured_masks(model)
    assert set(masks) | set(skipped) == layers
    assert "dw.0" in skipped  # depthwise rows of 9 do not split into 4s
    for name, mask in masks.items():
        assert (mask.flatten(1).view(mask.shape[0], -1, 4).sum(2) == 2).all()


def test_slimmed_file_loads_without_pickle_into_the_same_network(tmp_path, user_model_file):
    masked, _ = structurally_pruned(user_model(user_model_file), 0.5, 0.5)
    small = slim_any(masked)
    path = tmp_path / "small.safetensors"
    save_safetensors(small, path)
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["architecture"])
    assert desc["pruned_channels"] == small.pruned_channels
    with pytest.raises(Exception, match="imports user code only when you name it"):
        load_model(path)
    loaded = load_model(path, arch=f"{user_model_file}:build")
    assert max_difference(small, loaded) == 0.0
    into = load_model(path, model=build_model(f"{user_model_file}:build", (1, 8, 8), 10))  # the dense network loses the same channels
    assert max_difference(small, into) == 0.0


def test_resnet18_slimmed_file_is_rebuilt_by_the_registry(tmp_path):
    model = build_model("torchvision:resnet18", (1, 28, 28), 10, torch.Generator().manual_seed(0)).eval()
    small = slim_any(structurally_pruned(model, 0.5, 0.5)[0])
    path = tmp_path / "r.safetensors"
    save_safetensors(small, path)
    assert max_difference(small, load_model(path)) == 0.0


def test_hold_out_is_stratified_and_leaves_the_test_split_alone():
    g = torch.Generator().manual_seed(0)
    ds = Dataset(torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(200) % 4,
                 torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10) % 4, "test")
    held = ds.hold_out(0.1)
    assert len(held.val_y) == 20 and len(held.train_y) == 180
    assert torch.bincount(held.val_y).tolist() == [5, 5, 5, 5]
    assert torch.equal(held.test_x, ds.test_x)
    both = torch.cat([held.train_x, held.val_x]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(ds.train_x.flatten(1), dim=0))


def test_sensitivity_rows_and_chosen_ratios(user_model_file):
    model = user_model(user_model_file)
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)  # the model's own predictions: 100% before pruning
    groups = unit_groups(model)
    reference = copy.deepcopy(model)
    base, rows = sensitivity(model, groups, x, y, ladder=(0.25, 0.5, 0.75))
    assert base == 100.0
    assert all(0 < r["removed"] < r["channels"] for r in rows)
    assert {r["group"] for r in rows} == {g.name for g in groups}
    assert max_difference(model, reference) == 0.0  # weights restored after each rung
    chosen = choose_ratios(groups, rows, max_drop=5.0)
    for g in groups:
        mine = sorted((r for r in rows if r["group"] == g.name), key=lambda r: r["ratio"])
        allowed = [r["ratio"] for i, r in enumerate(mine) if all(q["drop"] <= 5.0 for q in mine[:i + 1])]
        assert chosen[g.name] == (allowed[-1] if allowed else 0.0)


def run_cli(tmp_path, user_model_file, *flags):
    out = tmp_path / "run"
    code = main(["reproduce", "--dataset", "digits", "--arch", f"{user_model_file}:build", "--seeds", "0",
                 "--epochs", "2", "--finetune-epochs", "1", "--prune-method", "structured", "--no-latency",
                 "--out", str(out), *flags])
    return code, out


@pytest.mark.slow
def test_cli_prunes_a_users_batchnorm_residual_model_structurally(tmp_path, user_model_file):
    code, out = run_cli(tmp_path, user_model_file, "--conv-amount", "0.5", "--fc-amount", "0.5")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    base, pruned = (results["models"][n]["seeds"]["0"] for n in ("baseline", "pruned"))
    assert pruned["prune_ratios"] == {"stem.0": 0.5, "a.0": 0.5, "fc1": 0.5}
    assert pruned["pruned_channels"] == {"stem.0": 4, "a.0": 6, "fc1": 8}
    assert pruned["params_present"] < 0.6 * pruned["params_total"] and pruned["macs_slim"] < 0.6 * base["macs_slim"]
    # the deployable files are the slimmed network: smaller ONNX, verified in ONNX Runtime
    assert pruned["onnx_network"] == "slimmed" and pruned["onnx_verified"]
    assert pruned["size_bytes_onnx"] < 0.7 * base["size_bytes_onnx"]
    assert abs(pruned["onnx_test_accuracy"] - pruned["test_accuracy"]) <= 0.05
    report = (out / "report.md").read_text()
    assert "## Structured pruning" in report
    assert "Pruned (C), seed 0: ratios stem.0 0.5, a.0 0.5, fc1 0.5; slimmed: {'stem.0': 4" in report
    small = load_model(out / "models" / "pruned-seed0.slim.safetensors", arch=f"{user_model_file}:build")
    masked = load_model(out / "models" / "pruned-seed0.safetensors", arch=f"{user_model_file}:build")
    assert count_params(small) == pruned["params_present"]
    assert max_difference(masked, small) < 1e-5
    # bench on the run: both networks quantized with the run's own calibration images, re-read from its config
    assert main(["bench", str(out), "--batches", "4", "--threads", "1", "--seconds", "0.01",
                 "--arch", f"{user_model_file}:build"]) == 0
    bench = json.loads((out / "bench.json").read_text())["models"]["pruned-seed0"]
    assert {"eager slimmed", "ORT slimmed", "ORT int8", "ORT int8 slimmed"} <= {r["variant"] for r in bench["rows"]}


@pytest.mark.slow
def test_cli_auto_ratios_come_from_a_validation_split(tmp_path, user_model_file):
    code, out = run_cli(tmp_path, user_model_file, "--prune-ratios", "auto", "--max-drop", "3", "--no-onnx",
                        "--val-fraction", "0.2")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["validation_examples"] == pytest.approx(0.2 * (results["data"]["train_examples"] +
                                                                          results["data"]["validation_examples"]), abs=10)
    ratios = results["models"]["pruned"]["seeds"]["0"]["prune_ratios"]
    assert set(ratios) == {"stem.0", "a.0", "fc1"} and all(r in (0.0, *LADDER) for r in ratios.values())


@pytest.mark.parametrize("flags, message", [
    (["--keep", "nosuch"], "invalid --keep nosuch"),
    (["--prune-ratios", "a.0=0.99"], "removes all 12 channels of a.0"),
    (["--prune-ratios", "stem.1=0.5"], "is not a prunable group"),
    (["--prune-ratios", "a.0=half"], "invalid --prune-ratios entry"),
    (["--keep", "a.0", "--prune-method", "unstructured"], "apply to --prune-method structured"),
])
def test_cli_refuses_bad_structured_input_in_one_line(tmp_path, user_model_file, capsys, flags, message):
    code, out = run_cli(tmp_path, user_model_file, *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_refuses_a_network_whose_slimming_would_not_be_exact(tmp_path, capsys):
    path = tmp_path / "sig.py"
    path.write_text("from torch import nn\n\ndef build(in_channels=1, num_classes=10):\n"
                    "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3),\n"
                    "                         nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes))\n")
    code, out = run_cli(tmp_path, path)
    err = capsys.readouterr().err
    assert code == 2 and "changes what it computes" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_sensitivity_writes_table_plot_and_the_ratios_flag(tmp_path, user_model_file, capsys):
    out = tmp_path / "sens"
    argv = ["sensitivity", "--dataset", "digits", "--arch", f"{user_model_file}:build", "--seeds", "3",
            "--epochs", "2", "--ladder", "0.25", "0.5", "--max-drop", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "sensitivity.json").read_text())
    assert {r["group"] for r in result["rows"]} == {"stem.0", "a.0", "fc1"}
    assert result["validation_examples"] > 0 and "minus the validation split" in result["model"]
    assert (out / "sensitivity.png").stat().st_size > 0 and (out / "sensitivity.csv").read_text().startswith("group,")
    assert f"--prune-ratios {result['prune_ratios_flag']}" in printed.replace("\n", "")
    other = [*argv[:-4], "--max-drop", "1", "--out", str(out)]
    assert main(other) == 2  # the results of the first call are not replaced by another table
    assert "already holds another sensitivity" in capsys.readouterr().err
    assert json.loads((out / "sensitivity.json").read_text()) == result
