"""Sweeps: typed grids, one directory per cell, finished cells skipped, interrupted cells redone."""

from __future__ import annotations

import json

import pytest

from mixprune import StudyConfig, load_fashion_mnist
from mixprune.core.config import layered, with_overrides
from mixprune.core.errors import ConfigError
from mixprune.explore.sweep import cells, parse_grid, run_sweep

from ..helpers import TINY, write_idx_set


def test_parse_grid_types_values_from_the_config():
    grid = parse_grid(["mixup.alpha=0.2,1", "train.epochs=1,2", "prune.scope=layerwise,global", "bench.onnx=false"])
    assert grid == {"mixup.alpha": [0.2, 1.0], "train.epochs": [1, 2], "prune.scope": ["layerwise", "global"],
                    "bench.onnx": [False]}


@pytest.mark.parametrize("item, message", [
    ("mixup.alpha", "expected FIELD=V1,V2"),
    ("optim.lr=0.1", "unknown section 'optim'"),
    ("train.nope=1", "not a field that can be swept"),
    ("train.epochs=ten", "'ten' is not a valid int"),
    ("seeds=1,2", "not a field that can be swept"),
])
def test_bad_grid_items(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid([item])


def test_cells_validate_every_value_before_running():
    with pytest.raises(ConfigError, match="--alpha"):
        cells(StudyConfig(), {"mixup.alpha": [0.5, -1.0]})
    names = [n for n, _ in cells(StudyConfig(), {"mixup.alpha": [0.2, 1.0], "prune.fc_amount": [0.5, 0.9]})]
    assert len(names) == len(set(names)) == 4 and names[0].startswith("alpha=0.2_fc_amount=0.5-")


def test_sweep_runs_each_cell_once_and_redoes_interrupted_ones(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0, 1], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.latency": False, "bench.onnx": False})
    grid = {"mixup.alpha": [0.2, 1.0]}
    first = run_sweep(base, grid, tmp_path / "sw", dataset=ds)
    assert [c["skipped"] for c in first["cells"]] == [False, False]
    assert all(c["accuracy"]["mixup"]["n"] == 2 for c in first["cells"])
    run_dirs = sorted((tmp_path / "sw" / "runs").iterdir())
    assert len(run_dirs) == 2 and all(json.loads((d / "results.json").read_text())["complete"] for d in run_dirs)
    # simulate a kill in the middle of the second cell: its results are not complete
    results = json.loads((run_dirs[1] / "results.json").read_text())
    (run_dirs[1] / "results.json").write_text(json.dumps({**results, "complete": False}))
    again = run_sweep(base, grid, tmp_path / "sw", dataset=ds)
    skipped = {c["name"]: c["skipped"] for c in again["cells"]}
    assert skipped == {run_dirs[0].name: True, run_dirs[1].name: False}
    assert again["cells"][0]["accuracy"] == first["cells"][0]["accuracy"]
    table = (tmp_path / "sw" / "sweep.md").read_text()
    assert "| alpha | baseline | mixup | pruned | mixup_pruned |" in table.replace("mixup.alpha", "alpha")


def test_a_diverging_cell_is_recorded_and_the_rest_still_run(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 2, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.latency": False, "bench.onnx": False})
    summary = run_sweep(base, {"train.lr": [1e12, 0.01]}, tmp_path / "sw", dataset=ds)
    bad, good = summary["cells"]
    assert "training loss became" in bad["failed"] and "accuracy" not in bad
    assert "failed" not in good and good["accuracy"]["baseline"]["n"] == 1
    assert "failed: train epoch" in (tmp_path / "sw" / "sweep.md").read_text()


def test_bundled_studies_are_valid():
    from mixprune.explore.sweep import bundled_studies, load_study

    assert set(bundled_studies()) == {"paper", "alpha-x-sparsity", "structured-vs-unstructured", "dropout", "cv5"}
    sizes = {}
    for name in bundled_studies():
        study, grid = load_study(name)
        sizes[name] = len(cells(layered([study]), grid))  # every cell's config validates
    assert sizes == {"paper": 1, "alpha-x-sparsity": 30, "structured-vs-unstructured": 6, "dropout": 2, "cv5": 5}
    _, grid = load_study("alpha-x-sparsity")
    assert grid["mixup.alpha"][0] == 0.0 and isinstance(grid["prune.sparsity"][0], float)


@pytest.mark.parametrize("text, message", [
    ("[grid]\n\"train.epochs\" = 3\n", "must be a non-empty list"),
    ("[grid]\n\"train.nope\" = [1]\n", "not a field that can be swept"),
    ("[train]\nepochs = [1\n", "is not valid TOML"),
    ("[train]\nepochz = 1\n", "unknown setting train.epochz"),
    ("[grid]\n\"mixup.alpha\" = [\"x\"]\n", "'x' is not a valid float"),
])
def test_bad_study_files(tmp_path, text, message):
    from mixprune.explore.sweep import load_study

    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_study(str(path))


def test_cli_sweep_needs_a_grid_or_a_study(capsys):
    from mixprune.cli import main

    assert main(["sweep"]) == 2
    assert "needs --grid" in capsys.readouterr().err
    assert main(["sweep", "--study", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "bundled studies: alpha-x-sparsity" in err and "Traceback" not in err


def test_a_cell_from_another_results_format_runs_again(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.latency": False, "bench.onnx": False})
    grid = {"mixup.alpha": [0.5]}
    run_sweep(base, grid, tmp_path / "sw", dataset=ds)
    (cell,) = (tmp_path / "sw" / "runs").iterdir()
    results = json.loads((cell / "results.json").read_text())
    (cell / "results.json").write_text(json.dumps({**results, "schema_version": 0}))
    again = run_sweep(base, grid, tmp_path / "sw", dataset=ds)
    assert again["cells"][0]["skipped"] is False
    assert json.loads((cell / "results.json").read_text())["schema_version"] == results["schema_version"]


def test_a_config_file_layers_over_a_study_file(tmp_path):
    """--study S --config F: F's settings on top of S's, flags on top of both; S's grid is kept."""
    from mixprune.cli import _base_config, build_parser
    from mixprune.explore.sweep import load_study

    study = tmp_path / "s.toml"
    study.write_text('seeds = [3]\n[train]\nepochs = 2\nlr = 0.02\n[grid]\n"mixup.alpha" = [0.2, 1.0]\n')
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nlr = 0.05\n[prune]\nfinetune_epochs = 1\n")
    args = build_parser().parse_args(["sweep", "--study", str(study), "--config", str(conf), "--batch-size", "64"])
    layer, grid = load_study(str(study))
    cfg = _base_config(args, ("grid", "study"), layer)
    assert (cfg.seeds, cfg.train.epochs, cfg.train.lr) == ((3,), 2, 0.05)
    assert (cfg.prune.finetune_epochs, cfg.train.batch_size) == (1, 64)
    assert grid == {"mixup.alpha": [0.2, 1.0]}


def test_a_second_sweep_into_the_same_directory_is_refused(tmp_path):
    from mixprune.core.errors import OutputError
    from mixprune.core.outputs import exclusive_dir

    out = tmp_path / "sw"
    base = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 0, "workers": 1})
    with exclusive_dir(out):  # as if another sweep were running there
        with pytest.raises(OutputError, match="another mixprune process is writing to"):
            run_sweep(base, {"mixup.alpha": [0.2]}, out)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_quick_sweep_measures_accuracy_only_and_still_reports(tmp_path):
    """--quick (bench.quick): test metrics, counts and the fp32 file per model; the sweep and its reports work."""
    from mixprune.reporting.compare import runs_below, write_collection_report

    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                          "bench.quick": True})
    assert not base.bench.latency and not base.bench.onnx
    run_sweep(base, {"prune.fc_amount": [0.3, 0.5]}, tmp_path / "sw", dataset=ds)
    for run in sorted((tmp_path / "sw" / "runs").iterdir()):
        results = json.loads((run / "results.json").read_text())
        m = results["models"]["pruned"]["seeds"]["0"]
        assert {"test_accuracy", "params_nonzero", "macs_slim", "size_bytes_fp32", "gzip_bytes_fp32"} <= set(m)
        assert not {"noise_accuracy", "size_bytes_fp16", "size_bytes_onnx", "latency_ms_batch1"} & set(m)
        assert sorted(p.name for p in (run / "models").iterdir()) == sorted(
            f"{n}-seed0.safetensors" for n in ("baseline", "mixup", "pruned", "mixup_pruned"))
        assert "not testable here" in (run / "report.md").read_text()
    write_collection_report(tmp_path / "sw", runs_below(tmp_path / "sw"))
    assert (tmp_path / "sw" / "report.md").is_file()
