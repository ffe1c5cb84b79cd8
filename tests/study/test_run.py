"""End to end through the Python API on tiny synthetic data: every output file and its invariants."""

from __future__ import annotations

import csv
import json

import pytest

from mixprune import (
    StudyConfig,
    load_config_file,
    load_fashion_mnist,
    load_model,
    reproduce,
)
from mixprune.core.config import with_overrides
from mixprune.models import count_nonzero
from mixprune.reporting.report import fmt
from mixprune.study.variants import PAPER, Design

NAMES = tuple(v.name for v in PAPER)
design_label = Design(PAPER).label

from ..helpers import TINY

METRICS = {"test_accuracy", "test_loss", "params_total", "params_nonzero", "sparsity", "compression_ratio",
           "train_seconds", "latency_ms_batch1", "latency_ms_batch256", "size_bytes_fp32", "size_bytes_fp16",
           "size_bytes_sparse", "per_class_f1", "size_bytes_onnx", "onnx_prediction_agreement", "onnx_verified"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    from ..helpers import write_idx_set
    ds = load_fashion_mnist(write_idx_set(root / "data"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0, 1], "train.epochs": 2, "prune.finetune_epochs": 1, "workers": 1,
                                         "bench.min_run_time": 0.01, "out": str(root / "out")})
    return cfg, reproduce(cfg, dataset=ds), root / "out"


def test_results_json_schema(run):
    cfg, results, out = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["models"].keys() == set(NAMES)
    assert on_disk["config"]["seeds"] == [0, 1] and "torch" in on_disk["environment"]["versions"]
    for name in NAMES:
        entry = on_disk["models"][name]
        assert entry["seeds"].keys() == {"0", "1"}
        for seed in ("0", "1"):
            assert METRICS <= entry["seeds"][seed].keys()
            assert len(entry["seeds"][seed]["per_class_f1"]) == 10
        acc = entry["summary"]["test_accuracy"]
        values = [entry["seeds"][s]["test_accuracy"] for s in ("0", "1")]
        assert acc["n"] == 2 and acc["mean"] == pytest.approx(sum(values) / 2)


def test_pruned_models_have_paper_counts(run):
    _, results, out = run
    for name in ("pruned", "mixup_pruned"):
        for seed, m in results.seeds(name).items():
            assert m["params_nonzero"] == 31_424 and m["params_total"] == 44_426
            assert m["sparsity"] == pytest.approx(13_002 / 44_190)
            assert m["compression_ratio"] == pytest.approx(44_426 / 31_424)
            assert count_nonzero(load_model(out / "models" / f"{name}-seed{seed}.safetensors")) == 31_424
    assert results.metrics("baseline", 0)["params_nonzero"] == 44_426


def test_every_file_written_and_sizes_measured(run):
    _, results, out = run
    for name in NAMES:
        for seed in (0, 1):
            m = results.metrics(name, seed)
            for suffix, key in (("safetensors", "size_bytes_fp32"), ("fp16.safetensors", "size_bytes_fp16"),
                                ("sparse.safetensors", "size_bytes_sparse"), ("onnx", "size_bytes_onnx")):
                assert (out / "models" / f"{name}-seed{seed}.{suffix}").stat().st_size == m[key]
    assert not list(out.rglob("*.tmp"))


def test_history_csv(run):
    _, _, out = run
    rows = list(csv.DictReader((out / "history.csv").open()))
    # 2 seeds x (2 dense models x 2 epochs + 2 pruned x 1 epoch)
    assert len(rows) == 2 * (2 * 2 + 2 * 1)
    assert {r["phase"] for r in rows if r["model"] in ("pruned", "mixup_pruned")} == {"finetune"}
    assert set(rows[0]) == {"model", "seed", "phase", "epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds"}


def test_report_and_resolved_config(run):
    cfg, results, out = run
    report = (out / "report.md").read_text()
    results = run[1]
    assert all(m["onnx_verified"] for n in results.names for m in results.seeds(n).values())
    assert "8 of 8 exported models match PyTorch" in report
    for heading in ("Table 2", "Table 3", "Table 4", "Per-class F1", "Inconsistencies in the paper"):
        assert heading in report
    table2 = report.split("## Table 2")[1].split("## Table 3")[0]
    for name in ("baseline", "mixup"):  # the 'Ours' cells are this run's numbers, beside the paper's
        ours = fmt(results.summary(name, "test_accuracy"))
        row = next(line for line in table2.splitlines() if line.startswith(f"| {design_label(name)} |"))
        assert ours in row and "(n=2)" in ours
    assert load_config_file(out / "config.toml") == cfg


def test_same_seed_same_metrics(run, tmp_path):
    cfg, results, _ = run
    from ..helpers import write_idx_set
    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    again = reproduce(with_overrides(cfg, {"seeds": [1], "out": str(tmp_path / "o"), "bench.latency": False}), dataset=ds)
    for name in NAMES:
        a, b = results.metrics(name, 1), again.metrics(name, 1)
        for key in ("test_accuracy", "test_loss", "per_class_f1", "params_nonzero", "size_bytes_sparse"):
            assert a[key] == b[key], (name, key)


def test_worker_processes_give_identical_results(tmp_path):
    """Two spawned workers with one thread each reproduce the in-process run with one thread exactly."""
    from ..helpers import write_idx_set
    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    base = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1,
                                          "bench.latency": False, "bench.onnx": False, "threads": 1})
    serial = reproduce(with_overrides(base, {"workers": 1, "out": str(tmp_path / "a")}), dataset=ds)
    parallel = reproduce(with_overrides(base, {"workers": 2, "out": str(tmp_path / "b")}), dataset=ds)
    assert parallel.execution["workers"] == 2 and serial.execution["workers"] == 1
    for name in NAMES:
        a, b = serial.metrics(name, 0), parallel.metrics(name, 0)
        assert (a["test_accuracy"], a["test_loss"], a["per_class_f1"]) == (b["test_accuracy"], b["test_loss"], b["per_class_f1"])
    assert (tmp_path / "a" / "history.csv").read_text().count("\n") == (tmp_path / "b" / "history.csv").read_text().count("\n")


@pytest.mark.parametrize("prune, check", [
    ({"method": "structured", "conv_amount": 0.5, "fc_amount": 0.5},
     lambda m: m["widths"] == [3, 8, 60, 42] and m["params_present"] < 44_426 / 2 and "size_bytes_slim" in m
     and m["test_accuracy_slim"] == pytest.approx(m["test_accuracy"], abs=0.01)),
    ({"schedule": "gradual", "conv_amount": 0.5, "fc_amount": 0.9, "gradual_every": 1},
     lambda m: m["params_nonzero"] == 44_426 - (75 + 1200 + 27648 + 9072 + 756)),
    ({"method": "2:4"}, lambda m: m["params_nonzero"] == 44_426 - (30720 + 10080 + 840) // 2),
    ({"finetune_mixup": "never"}, lambda m: m["params_nonzero"] == 31_424),
])
def test_pruning_methods_end_to_end(prune, check, tmp_path):
    from ..helpers import write_idx_set
    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False, "out": str(tmp_path / "o"),
                                         **{f"prune.{k}": v for k, v in prune.items()}})
    results = reproduce(cfg, dataset=ds)
    for name in ("pruned", "mixup_pruned"):
        assert check(results.metrics(name, 0)), results.metrics(name, 0)


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno
    import os

    from mixprune.core.atomic import write_text_atomic
    from mixprune.core.errors import OutputError

    target = tmp_path / "results.json"
    write_text_atomic(target, "old")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match="No space left on device"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    from mixprune.deploy.files import save_safetensors, save_sparse
    from mixprune.models import LeNet5
    for save in (save_safetensors, save_sparse):  # model files: one line too (was a SafetensorError traceback)
        with pytest.raises(OutputError, match="No space left on device"):
            save(LeNet5(), tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_report_has_figures_and_a_self_contained_html(run):
    _, _, out = run
    report = (out / "report.md").read_text()
    for png in ("training_curves", "confusion", "per_class_f1", "size_vs_accuracy", "layer_sparsity"):
        assert f"(plots/{png}.png)" in report
        assert (out / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "<table>" in page  # incl. per-layer sparsity
    assert "http" not in page and "src='plots/" not in page  # nothing fetched from anywhere


def test_earlier_results_are_never_silently_replaced(tmp_path):
    """A finished --out is refused for another config (nothing of it changes), rerun for the same config, and
    replaced whole with --overwrite: no file of the first run stays beside the second's."""
    from mixprune.core.errors import OutputError

    from ..helpers import write_idx_set

    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    out = tmp_path / "out"
    first = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                           "bench.latency": False, "out": str(out)})
    reproduce(first, dataset=ds)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert "baseline-seed0.int8.onnx" in before
    other = with_overrides(first, {"bench.onnx": False})
    with pytest.raises(OutputError, match="already holds another run .*--overwrite"):
        reproduce(other, dataset=ds)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    again = reproduce(first, dataset=ds)  # the same config: run again in place (what a re-run after kill -9 does)
    assert again.complete and (out / "models" / "baseline-seed0.int8.onnx").is_file()
    replaced = reproduce(with_overrides(other, {"overwrite": True}), dataset=ds)
    assert replaced.output_dir == str(out) and not list(out.rglob("*.onnx"))  # no stale file of the first run
    assert load_config_file(out / "config.toml").bench.onnx is False
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary directory left
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"already holds other files \(notes.txt\)"):
        reproduce(with_overrides(first, {"out": str(tmp_path / "stranger")}), dataset=ds)


def test_a_run_of_the_same_config_resumes_what_was_finished(tmp_path):
    """Run again into its own --out (after kill -9, say), a run keeps every model it finished, with its files and
    history, and trains only the rest; the numbers are those of an uninterrupted run."""
    import json

    from ..helpers import write_idx_set

    ds = load_fashion_mnist(write_idx_set(tmp_path / "data"), spec=TINY)
    out = tmp_path / "out"
    cfg = with_overrides(StudyConfig(), {"seeds": [0, 1], "train.epochs": 1, "prune.finetune_epochs": 1, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False, "out": str(out)})
    full = reproduce(cfg, dataset=ds)
    history = (out / "history.csv").read_text()
    cut = json.loads((out / "results.json").read_text())  # as if killed after seed 0's models
    cut["complete"] = False
    for entry in cut["models"].values():
        del entry["seeds"]["1"]
    (out / "results.json").write_text(json.dumps(cut))
    again = reproduce(cfg, dataset=ds)
    assert sorted(again.execution["resumed_models"]) == sorted(f"{n}-seed0" for n in NAMES)
    for name in NAMES:
        assert again.metrics(name, 0) == full.metrics(name, 0)  # kept as it was
        for key in ("test_accuracy", "test_loss", "per_class_f1", "size_bytes_sparse", "gzip_bytes_fp32"):
            assert again.metrics(name, 1)[key] == full.metrics(name, 1)[key], (name, key)

    def without_seconds(text: str) -> list[str]:
        return [line.rsplit(",", 1)[0] for line in text.splitlines()]
    assert without_seconds((out / "history.csv").read_text()) == without_seconds(history)  # same rows, same order
