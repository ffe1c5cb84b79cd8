"""The command line: one-line errors with exit code 2 and no traceback; an end-to-end run on real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mixprune.cli import main
from mixprune.data import FASHION_MNIST

from .helpers import (
    TINY,
    assert_one_line_error,
    cli,
    held_model,
    recorded,
    wait_for,
    write_idx_set,
)


@pytest.mark.parametrize("args, fragments", [
    (["--epochs", "-1"], ["--epochs", ">= 0", "-1"]),
    (["--alpha", "-0.5"], ["--alpha", ">= 0", "-0.5"]),
    (["--conv-amount", "1.0"], ["--conv-amount", "< 1"]),
    (["--fc-amount", "-0.5"], ["--fc-amount"]),
    (["--finetune-epochs", "-2"], ["--finetune-epochs"]),
    (["--seeds", "1", "1"], ["--seeds", "distinct"]),
])
def test_bad_values_name_the_flag(args, fragments, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mixprune: error:")
    assert all(f in err for f in fragments), err
    assert not out.exists()


def test_missing_data_is_one_line_exit_2(tmp_path):
    res = cli("reproduce", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(res, "lacks", "apt-get install dataset-fashion-mnist", "mixprune data download")
    assert not (tmp_path / "out").exists()


def test_corrupt_data_names_the_file(tmp_path):
    d = write_idx_set(tmp_path / "d")
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    res = cli("data", "check", "--data-dir", str(d))
    assert_one_line_error(res, "train-images-idx3-ubyte.gz", "corrupt")


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 'ten'\n")
    assert_one_line_error(cli("reproduce", "--config", str(cfg)), "train.epochs", "expected an integer")


def test_report_of_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no complete run" in capsys.readouterr().err  # neither a run nor a directory of runs


def test_unwritable_output(tmp_path, real_data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli("reproduce", "--data-dir", str(real_data_dir), "--out", str(blocker / "sub"), "--epochs", "0",
              "--finetune-epochs", "0", "--train-subset", "10", "--test-subset", "10", "--no-latency")
    assert_one_line_error(res, "--out", "Not a directory")
    assert not (blocker.parent / "sub").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_reproduce_end_to_end_on_real_subset(tmp_path, real_data_dir):
    out = tmp_path / "run"
    res = cli("reproduce", "--data-dir", str(real_data_dir), "--train-subset", "4000", "--test-subset", "500",
              "--epochs", "2", "--lr", "0.05", "--finetune-epochs", "1", "--seeds", "0", "--bench-seconds", "0.05",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Mixup+Pruned (D)" in res.stdout and "31424" in res.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == {"dataset": "fashion-mnist", "source": str(real_data_dir), "train_examples": 4000,
                               "test_examples": 500, "input_shape": [1, 28, 28], "classes": list(FASHION_MNIST.classes),
                               "normalization": {"mean": [0.5], "std": [0.5], "from": "the dataset's published values"},
                               "storage": "uint8 images resident on cpu, normalized per batch",
                               "evaluation": "test split", "evaluated_on": "test"}
    for name in ("baseline", "mixup", "pruned", "mixup_pruned"):
        m = results["models"][name]["seeds"]["0"]
        assert m["test_accuracy"] > 50  # 2 epochs on 4,000 real images learn far above chance (10%)
        assert m["params_nonzero"] == (31_424 if "pruned" in name else 44_426)
        assert (out / "models" / f"{name}-seed0.safetensors").is_file()
    assert (out / "report.md").is_file() and (out / "history.csv").is_file() and (out / "config.toml").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "Table 2" in (out / "report.md").read_text()


def test_second_writer_to_the_same_output_is_refused(tmp_path):
    from mixprune import StudyConfig, load_fashion_mnist, reproduce
    from mixprune.core.config import with_overrides
    from mixprune.core.errors import OutputError
    from mixprune.core.outputs import exclusive_dir

    ds = load_fashion_mnist(write_idx_set(tmp_path / "d"), spec=TINY)
    out = tmp_path / "out"
    cfg = with_overrides(StudyConfig(), {"out": str(out), "seeds": [0], "train.epochs": 0, "workers": 1})
    with exclusive_dir(out):  # as if another mixprune process were running there
        with pytest.raises(OutputError, match="another mixprune process is writing to"):
            reproduce(cfg, dataset=ds)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of the refused run was written


def _held_run(tmp_path: Path, *extra: str) -> tuple[list[str], Path, Path]:
    """A reproduce of two chains (seed 0, two workers) whose fine-tuning waits for the file `go`: the command, its
    output directory and `go`."""
    arch, go = held_model(tmp_path / "model")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "mixprune", "reproduce", "--dataset", "digits", "--image-size", "28", "--arch", arch,
            "--epochs", "1", "--finetune-epochs", "1", "--seeds", "0", "--workers", "2", "--threads", "1",
            "--device", "cpu", "--no-latency", "--no-onnx", "--out", str(out), *extra]
    return args, out, go


def _files(out: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "models").iterdir()) if p.name.split("-seed")[0] in names}


def _interrupted(tmp_path: Path, sig: int) -> tuple[list[str], Path, Path, dict[str, bytes], str]:
    """The held run, sent `sig` while its pruned models fine-tune (they wait for `go`) and its dense models are
    written: (its arguments, output directory, `go`, the dense models' files then, its stderr)."""
    args, out, go = _held_run(tmp_path)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: {("baseline", "0"), ("mixup", "0")} <= recorded(out), "the dense models", proc=proc)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True,
                                 text=True).stdout.split()
        assert recorded(out) == {("baseline", "0"), ("mixup", "0")} and len(workers) == 2
        dense = _files(out, ("baseline", "mixup"))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "zombie" not in
                             Path(f"/proc/{pid}/status").read_text().lower() for pid in workers), "the workers to end",
             seconds=30)  # workers die with their parent, even on kill -9
    assert recorded(out) == {("baseline", "0"), ("mixup", "0")} and _files(out, ("baseline", "mixup")) == dense
    return args, out, go, dense, err if proc.returncode == 130 else ""


@pytest.mark.slow
def test_ctrl_c_mid_chain_exits_130_and_keeps_every_finished_model(tmp_path):
    _, _, _, _, err = _interrupted(tmp_path, signal.SIGINT)
    assert "interrupted; every model finished so far is saved" in err and "Traceback" not in err


@pytest.mark.slow
def test_kill_9_mid_chain_keeps_every_finished_model_and_the_rerun_resumes(tmp_path):
    """kill -9 while the pruned models fine-tune: the finished Baseline and Mixup are on disk, whole, and no worker
    is left. The same command again keeps them as they are, makes the pruned models from them, and gives an
    uninterrupted run's numbers."""
    args, out, go, dense, _ = _interrupted(tmp_path, signal.SIGKILL)
    go.touch()
    assert main(args[3:]) == 0  # the same command, in this process
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["execution"]["resumed_models"] == ["baseline-seed0", "mixup-seed0"]
    assert _files(out, ("baseline", "mixup")) == dense  # kept as they were
    assert main([*args[3:-1], str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    for name in ("pruned", "mixup_pruned"):
        assert resumed["models"][name]["seeds"]["0"]["test_loss"] == whole["models"][name]["seeds"]["0"]["test_loss"]


def test_a_failure_later_in_a_chain_keeps_the_models_finished_before_it(tmp_path, capsys):
    """Fine-tuning that diverges fails the run in one line, after the first chain's Baseline was written."""
    args, out, go = _held_run(tmp_path, "--finetune-lr", "1e30", "--workers", "1")  # the chains one by one
    go.touch()
    assert main(args[3:]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress display of the models that trained
    assert last.startswith("mixprune: error: finetune epoch 1") and "training loss became" in last
    assert recorded(out) == {("baseline", "0")}


@pytest.mark.slow
def test_kill_9_in_a_sweep_loses_nothing_finished(tmp_path):
    """The first cell completes; the second waits in fine-tuning (its network's fine-tuning waits for `go`) when the
    sweep is killed with its process group. The same command again skips the first cell and resumes the second
    with the Baseline it had written."""
    held, go = held_model(tmp_path / "model")
    free = tmp_path / "model" / "free.py"
    free.write_text("from mixprune.models.lenet5 import LeNet5\n\ndef build(in_channels, num_classes):\n"
                    "    return LeNet5(in_channels=in_channels, num_classes=num_classes)\n")
    out = tmp_path / "sweep"
    args = ["sweep", "--grid", f"model.arch={free}:build,{held}", "--dataset", "digits", "--image-size", "28",
            "--epochs", "1", "--finetune-epochs", "1", "--seeds", "0", "--workers", "1", "--threads", "1", "--device",
            "cpu", "--no-latency", "--no-onnx", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "mixprune", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def second() -> Path | None:
            runs = sorted((out / "runs").glob("arch=*held*")) if (out / "runs").is_dir() else []
            return runs[0] if runs else None
        wait_for(lambda: second() is not None and ("baseline", "0") in recorded(second()), "the second cell's Baseline",
                 proc=proc)
        done = json.loads((out / "sweep.json").read_text())["cells"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert [c["values"]["model.arch"] for c in done] == [f"{free}:build"] and "accuracy" in done[0]
    go.touch()
    assert main(args) == 0  # the same command, in this process
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["skipped"] for c in cells] == [True, False] and all("accuracy" in c for c in cells)
    assert json.loads((second() / "results.json").read_text())["execution"]["resumed_models"] == ["baseline-seed0"]


def test_report_refuses_results_of_another_version(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99, "models": {}}))
    assert main(["report", str(tmp_path)]) == 2
    assert "schema_version 99" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_sweep_bad_grid_is_one_line(tmp_path, capsys):
    assert main(["sweep", "--grid", "mixup.alpha=zero", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mixprune: error: --grid mixup.alpha: 'zero' is not a valid float"
    assert not (tmp_path / "s").exists()


def test_every_command_prints_its_help():
    """Every option's help text renders (argparse formats it with %: a stray percent sign broke --help once)."""
    from mixprune.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the subcommands' parsers, by name
    assert "reproduce" in commands and "sweep" in commands
    for name, sub in commands.items():
        text = sub.format_help()
        assert name in text and "--help" in text, name
