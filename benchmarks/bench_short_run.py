"""Benchmark: the whole `mixprune reproduce` command against the stock-PyTorch script of the same study,
each timed as a user runs it (a fresh process: interpreter start, imports, data, training, and for
mixprune every default measurement, the files, the report and the figures).

    .venv/bin/python benchmarks/bench_short_run.py                          # 2 + 1 epochs, 1 seed, 3 repeats
    .venv/bin/python benchmarks/bench_short_run.py --epochs 10 --finetune-epochs 3 --repeats 1   # paper length
    .venv/bin/python benchmarks/bench_short_run.py --extra=--quick           # any other reproduce flags
    .venv/bin/python benchmarks/bench_short_run.py --base 5a08e83            # also another revision, same run

The stock script is benchmarks/bench_study.py's `stock_study` (torchvision FashionMNIST, DataLoader,
ToTensor + Normalize, the same optimizer, schedule, Mixup, L1 pruning, fine-tuning and per-epoch test
evaluation; it measures nothing else and writes nothing). The commands alternate, repeat after repeat;
--base runs another revision's mixprune too (a temporary git worktree, PYTHONPATH at its src/).
"Training" is mixprune's own record (results.json execution.training_seconds: the busiest
worker's time in the training loop, per-epoch test evaluation included); everything else in the
command's wall clock is work outside training. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOCK = """
import sys
from pathlib import Path
sys.path.insert(0, {bench!r})
from bench_study import stock_study
stock_study(Path({root!r}), 0, "cpu", {epochs}, {ft})
"""


def wall(cmd: list[str], src: Path | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def command(args: argparse.Namespace, out: Path) -> list[str]:
    return [sys.executable, "-m", "mixprune", "reproduce", "--seeds", "0", "--epochs", str(args.epochs),
            "--finetune-epochs", str(args.finetune_epochs), "--out", str(out), *args.extra]


def outside(run: Path, seconds: float) -> str:
    """The run's own record of its training time, and what the command spent outside it."""
    execution = json.loads((run / "results.json").read_text())["execution"]
    training = execution.get("training_seconds")
    if training is None:  # revisions before the record: unknown
        return f"{seconds:.1f} s"
    return (f"{seconds:.1f} s (training {training:.1f} s, outside training {seconds - training:.1f} s = "
            f"{100 * (seconds - training) / seconds:.0f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-stock", action="store_true", help="time mixprune only")
    ap.add_argument("--extra", action="append", default=[], help="another `mixprune reproduce` argument")
    ap.add_argument("--base", help="also time this git revision's mixprune")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_study import torchvision_root

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.epochs} + {args.finetune_epochs} epochs, 1 seed, extra flags {args.extra or 'none'}")
    times: dict[str, list[float]] = {"mixprune": [], "base": [], "stock": []}
    outside_t: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        base_src = None
        if args.base:
            tree = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.base], check=True,
                           capture_output=True)
            base_src = tree / "src"
        stock = [sys.executable, "-c", STOCK.format(bench=str(ROOT / "benchmarks"), root=str(root),
                                                     epochs=args.epochs, ft=args.finetune_epochs)]
        try:
            for rep in range(args.repeats):
                out = Path(tmp) / f"run{rep}"
                times["mixprune"].append(wall(command(args, out)))
                training = json.loads((out / "results.json").read_text())["execution"]["training_seconds"]
                outside_t.append(times["mixprune"][-1] - training)
                line = f"repeat {rep + 1}: mixprune {outside(out, times['mixprune'][-1])}"
                if base_src is not None:
                    times["base"].append(wall(command(args, Path(tmp) / f"base{rep}"), base_src))
                    line += f", base {args.base} {times['base'][-1]:.1f} s"
                if not args.no_stock:
                    times["stock"].append(wall(stock))
                    ratio = times["stock"][-1] / times["mixprune"][-1]
                    line += f", stock {times['stock'][-1]:.1f} s, ratio {ratio:.2f}x"
                print(line, flush=True)
        finally:
            if base_src is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_src.parent)],
                               capture_output=True)
    o = statistics.median(times["mixprune"])
    line = (f"median of {args.repeats}: mixprune {o:.1f} s, outside training {statistics.median(outside_t):.1f} s "
            f"({100 * statistics.median(outside_t) / o:.0f}% of the wall clock)")
    if times["base"]:
        b = statistics.median(times["base"])
        line += f"; base {args.base} {b:.1f} s ({b / o:.2f}x this checkout's time)"
    if times["stock"]:
        s = statistics.median(times["stock"])
        line += f"; stock {s:.1f} s: mixprune is {s / o:.2f}x faster"
    print(line)


if __name__ == "__main__":
    main()
