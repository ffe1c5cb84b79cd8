"""Hardening II: every input a user can get wrong ends in one line and exit 2, without a traceback and
without an output directory; nothing crafted or out of range gets far enough to do harm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mixprune import StudyConfig, load_config_file, load_fashion_mnist, reproduce
from mixprune.cli import main
from mixprune.core.config import with_overrides
from mixprune.core.errors import ConfigError, MixpruneError

from .helpers import TINY, write_idx_set


def one_line_exit_2(capsys, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    # exactly one line: no traceback, and no empty line before it (a progress display that never showed)
    assert err.startswith("mixprune") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_floats_beyond_float32_are_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="float32's range"):
        with_overrides(StudyConfig(), {"train.lr": 1e39})
    out = tmp_path / "o"
    for flag in ("--lr", "--finetune-lr", "--weight-decay"):
        assert "float32's range" in one_line_exit_2(capsys, ["reproduce", flag, "3.5e38", "--out", str(out)])
    assert not out.exists()


def test_usage_errors_are_one_line(capsys):
    assert "argument --epochs: invalid int value" in one_line_exit_2(capsys, ["reproduce", "--epochs", "x"])
    assert "unrecognized arguments: --no-such-flag (see `mixprune --help`)" in one_line_exit_2(
        capsys, ["reproduce", "--no-such-flag"])
    one_line_exit_2(capsys, ["frobnicate"])


def test_an_error_found_after_the_run_started_is_one_line_too(tmp_path, capsys):
    out = tmp_path / "o"
    assert "at least 16x16" in one_line_exit_2(capsys, ["reproduce", "--dataset", "digits", "--out", str(out)])
    assert not out.exists()


def test_threads_are_bounded_and_more_than_the_cores_warned(tmp_path, capsys):
    from mixprune.cli import _base_config, build_parser

    out = tmp_path / "o"
    assert "--threads" in one_line_exit_2(capsys, ["reproduce", "--threads", "1000", "--out", str(out)])
    assert not out.exists()
    cfg = _base_config(build_parser().parse_args(["reproduce", "--threads", "200"]), ())
    assert cfg.threads == 200 and "warning: --threads 200 is more than this machine's" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_mixprune_data_must_be_a_directory(tmp_path, monkeypatch, capsys, kind):
    target = tmp_path / "f"
    if kind == "file":
        target.write_text("x")
    monkeypatch.setenv("MIXPRUNE_DATA", str(target))
    assert "MIXPRUNE_DATA" in one_line_exit_2(capsys, ["data", "check"])


def test_paths_the_system_refuses_are_one_line(tmp_path, capsys):
    long = str(tmp_path / ("x" * 300))
    one_line_exit_2(capsys, ["data", "check", "--data-dir", long])
    one_line_exit_2(capsys, ["report", long])
    one_line_exit_2(capsys, ["bench", long])


def test_too_few_images_for_cross_validation(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"data.train_subset": 4, "data.cv_fold": 0, "data.cv_folds": 5,
                                         "out": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="needs at least 10 training images"):
        reproduce(cfg, dataset=ds)
    assert not (tmp_path / "o").exists()


def test_bench_bounds_its_inputs(tmp_path, capsys):
    f = tmp_path / "m.safetensors"
    for args, match in ((["--seconds", "inf"], "--seconds"), (["--seconds", "nan"], "--seconds"),
                        (["--batches", "1000000000"], "--batches"), (["--threads", "100000"], "--threads")):
        assert match in one_line_exit_2(capsys, ["bench", str(f), *args])


def test_a_non_ascii_out_writes_a_config_that_runs_again(tmp_path):
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    out = tmp_path / "run-\U0001F600-ü"
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 0, "prune.finetune_epochs": 0, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False, "out": str(out)})
    reproduce(cfg, dataset=ds)
    assert load_config_file(out / "config.toml") == cfg


def test_a_report_over_a_run_that_lacks_a_variant(tmp_path, capsys):
    import json
    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    cfg = with_overrides(StudyConfig(), {"seeds": [0], "train.epochs": 0, "prune.finetune_epochs": 0, "workers": 1,
                                         "bench.latency": False, "bench.onnx": False})
    for name in ("a", "b"):
        reproduce(with_overrides(cfg, {"out": str(tmp_path / "runs" / name)}), dataset=ds)
    path = tmp_path / "runs" / "a" / "results.json"
    results = json.loads(path.read_text())
    del results["models"]["mixup"]
    path.write_text(json.dumps(results))
    assert "lacks the results of mixup" in one_line_exit_2(capsys, ["report", str(tmp_path / "runs" / "a")])
    assert main(["report", str(tmp_path / "runs")]) == 0  # a report over runs leaves the broken one out
    assert "1 complete runs" in (tmp_path / "runs" / "report.md").read_text()


def _die(shared, task, observer, emit):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_is_one_clear_error():
    from mixprune.core.errors import WorkerDied
    from mixprune.study.backends import run_tasks

    with pytest.raises(WorkerDied, match="a worker process died .*fewer --workers"):
        run_tasks(_die, [1, 2], None, workers=2, threads=1, observer=None, on_result=print)
    assert issubclass(WorkerDied, MixpruneError)


@pytest.mark.realdata
def test_an_ascii_locale_prints_without_crashing(tmp_path, real_data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    res = subprocess.run([sys.executable, "-m", "mixprune", "reproduce", "--data-dir", str(real_data_dir),
                          "--train-subset", "300", "--test-subset", "100", "--epochs", "1", "--finetune-epochs", "1",
                          "--seeds", "0", "1", "--workers", "1", "--no-latency", "--no-onnx", "--out",
                          str(tmp_path / "o")], capture_output=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert b"Done." in res.stderr and b"Traceback" not in res.stderr
    assert Path(tmp_path / "o" / "report.md").is_file()


def test_a_sweep_with_bad_input_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "sweep"
    one_line_exit_2(capsys, ["sweep", "--grid", "mixup.alpha=0.2,1.0", "--data-dir", str(tmp_path / "nothing"),
                             "--out", str(out)])
    assert "at least 16x16" in one_line_exit_2(capsys, ["sweep", "--grid", "mixup.alpha=0.2,1.0", "--dataset",
                                                         "digits", "--out", str(out)])
    assert "removes all 64 channels" in one_line_exit_2(capsys, ["sweep", "--grid", "prune.conv_amount=0.2,0.999",
                                                                  "--prune-method", "structured", "--dataset", "digits",
                                                                  "--arch", "torchvision:resnet18", "--out", str(out)])
    assert not out.exists()


def test_long_grids_give_cell_names_a_file_system_accepts():
    from mixprune.explore.sweep import cells, parse_grid

    grid = parse_grid(["train.epochs=1", "train.batch_size=64", "train.lr=0.01", "train.momentum=0.5",
                       "train.weight_decay=0.0001", "train.lr_decay_epoch=1", "train.lr_decay_factor=0.5",
                       "mixup.alpha=0.123456789", "prune.conv_amount=0.123456789", "prune.fc_amount=0.987654321,0.5"])
    names = [name for name, _ in cells(StudyConfig(), grid)]
    assert len(names) == 2 and len(set(names)) == 2 and all(len(n.encode()) <= 255 for n in names)


def test_text_files_are_read_with_a_cap(tmp_path, capsys):
    """--config /dev/zero or a huge file, a results.json that is a link to /dev/zero, deeply nested TOML or JSON: one
    line each."""
    out = tmp_path / "o"
    assert "not a regular file" in one_line_exit_2(capsys, ["reproduce", "--config", "/dev/zero", "--out", str(out)])
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1 << 21))
    assert "larger than" in one_line_exit_2(capsys, ["reproduce", "--config", str(huge), "--out", str(out)])
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nests" in one_line_exit_2(capsys, ["reproduce", "--config", str(deep), "--out", str(out)])
    assert "nests" in one_line_exit_2(capsys, ["sweep", "--study", str(deep), "--out", str(out)])
    assert not out.exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").symlink_to("/dev/zero")
    assert "results.json" in one_line_exit_2(capsys, ["report", str(run)])
    (run / "results.json").unlink()
    (run / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nests too deeply" in one_line_exit_2(capsys, ["report", str(run)])


# Hardening III: output directories, leftovers on error, teachers and sensitivity inputs

DIGITS = ["--dataset", "digits", "--image-size", "28", "--seeds", "0", "--epochs", "1", "--finetune-epochs", "1",
          "--no-latency", "--no-onnx"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_sweep_or_search_does_not_go_on_with_someone_elses(tmp_path, capsys):
    """A second sweep with another --lr, or a search on other data, into the same --out used to reuse and rewrite
    the first one's files; now they are refused before anything in OUT changes (the same settings go on)."""
    import json

    sweep = tmp_path / "sweep"
    argv = ["sweep", "--grid", "mixup.alpha=0.5", *DIGITS, "--quick", "--out", str(sweep)]
    assert main(argv) == 0
    assert "| mixup.alpha | baseline |" in capsys.readouterr().out  # the sweep's table
    before = _tree(sweep)
    assert "already holds another sweep" in one_line_exit_2(capsys, [*argv, "--lr", "0.02"])
    assert _tree(sweep) == before
    assert main(argv) == 0 and json.loads((sweep / "sweep.json").read_text())["cells"][0]["skipped"]
    capsys.readouterr()
    search = tmp_path / "search"
    search.mkdir()
    (search / "search.json").write_text(json.dumps({"spec": {}, "base": {"data": {"dataset": "fashion-mnist"}}}))
    err = one_line_exit_2(capsys, ["search", "--min-accuracy", "50", "--seeds", "0", "1", "2", *DIGITS[:4],
                                   "--out", str(search)])
    assert "already holds another search" in err and _tree(search) == {"search.json": (search / "search.json")
                                                                      .read_bytes()}


def test_report_never_replaces_a_users_own_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", *DIGITS, "--quick", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "report.md").write_text("my notes\n")
    assert "report.md exists and was not written by mixprune" in one_line_exit_2(capsys, ["report", str(out)])
    assert (out / "report.md").read_text() == "my notes\n"
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text().startswith("# mixprune")


def test_inputs_are_checked_before_anything_is_created(tmp_path, capsys):
    """An unreachable Ray address, a --cache-dir the file system refuses, a missing GPU, a teacher for other inputs:
    each used to leave an output directory (with its lock, or runs/) behind."""
    import socket

    from mixprune.deploy.files import save_safetensors
    from mixprune.models import build_model

    out = tmp_path / "o"
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "nothing answers" in one_line_exit_2(capsys, ["reproduce", *DIGITS, "--backend", "ray", "--address",
                                                         f"127.0.0.1:{port}", "--out", str(out)])
    assert "File name too long" in one_line_exit_2(capsys, ["reproduce", *DIGITS, "--cache-dir",
                                                            str(tmp_path / ("x" * 300)), "--out", str(out)])
    if not __import__("torch").cuda.is_available():
        assert "no CUDA device" in one_line_exit_2(capsys, ["sweep", "--grid", "mixup.alpha=0.5", *DIGITS,
                                                            "--device", "cuda", "--out", str(out)])
    teacher = tmp_path / "teacher.safetensors"
    save_safetensors(build_model("lenet5", (3, 32, 32), 10), teacher)
    assert "it takes inputs of shape [3, 32, 32]" in one_line_exit_2(
        capsys, ["reproduce", *DIGITS, "--distill", "--teacher", str(teacher), "--out", str(out)])
    assert not out.exists()


def test_sensitivity_checks_its_model_and_its_output_first(tmp_path, capsys):
    """sensitivity used to accept an 11-class --model for 10-class data and a --keep of every layer, and two runs
    into one --out both wrote their files."""
    from mixprune.core.outputs import exclusive_dir
    from mixprune.deploy.files import save_safetensors
    from mixprune.models import build_model

    eleven = tmp_path / "eleven.safetensors"
    save_safetensors(build_model("lenet5", (1, 28, 28), 11), eleven)
    out = tmp_path / "s"
    base = ["sensitivity", *DIGITS, "--out", str(out)]
    assert "gives 11 classes, the dataset has 10" in one_line_exit_2(capsys, [*base, "--model", str(eleven)])
    assert "no channel group to prune" in one_line_exit_2(capsys, [*base, "--prune-method", "structured", "--keep",
                                                                   "conv1,conv2,fc1,fc2"])
    assert not out.exists()
    with exclusive_dir(out):  # as if another sensitivity were writing there
        assert "another mixprune process is writing to" in one_line_exit_2(capsys, base)
