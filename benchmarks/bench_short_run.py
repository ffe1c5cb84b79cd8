"""Benchmark: the whole `mixprune reproduce` command against the stock-PyTorch script of the same study,
each timed as a user runs it (a fresh process: interpreter start, imports, data, training, and for
mixprune every default measurement, the files, the report and the figures).

    .venv/bin/python benchmarks/bench_short_run.py                          # 2 + 1 epochs, 1 seed, 3 repeats
    .venv/bin/python benchmarks/bench_short_run.py --epochs 10 --finetune-epochs 3 --repeats 1   # paper length
    .venv/bin/python benchmarks/bench_short_run.py --extra=--quick           # any other reproduce flags

The stock script is benchmarks/bench_study.py's `stock_study` (torchvision FashionMNIST, DataLoader,
ToTensor + Normalize, the same optimizer, schedule, Mixup, L1 pruning, fine-tuning and per-epoch test
evaluation; it measures nothing else and writes nothing). The two commands alternate, repeat after
repeat. "Training" is mixprune's own record (results.json execution.training_seconds: the busiest
worker's time in the training loop, per-epoch test evaluation included); everything else in the
command's wall clock is work outside training. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
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


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-stock", action="store_true", help="time mixprune only")
    ap.add_argument("--extra", action="append", default=[], help="another `mixprune reproduce` argument")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_study import torchvision_root

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.epochs} + {args.finetune_epochs} epochs, 1 seed, extra flags {args.extra or 'none'}")
    stock_t, ours_t, outside = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        stock = [sys.executable, "-c", STOCK.format(bench=str(ROOT / "benchmarks"), root=str(root),
                                                     epochs=args.epochs, ft=args.finetune_epochs)]
        for rep in range(args.repeats):
            out = Path(tmp) / f"run{rep}"
            ours = [sys.executable, "-m", "mixprune", "reproduce", "--seeds", "0", "--epochs",
                    str(args.epochs), "--finetune-epochs", str(args.finetune_epochs), "--out", str(out), *args.extra]
            ours_t.append(wall(ours))
            training = json.loads((out / "results.json").read_text())["execution"]["training_seconds"]
            outside.append(ours_t[-1] - training)
            line = (f"repeat {rep + 1}: mixprune {ours_t[-1]:.1f} s (training {training:.1f} s, outside training "
                    f"{outside[-1]:.1f} s = {100 * outside[-1] / ours_t[-1]:.0f}%)")
            if not args.no_stock:
                stock_t.append(wall(stock))
                line += f", stock {stock_t[-1]:.1f} s, ratio {stock_t[-1] / ours_t[-1]:.2f}x"
            print(line, flush=True)
    o = statistics.median(ours_t)
    line = (f"median of {args.repeats}: mixprune {o:.1f} s, outside training {statistics.median(outside):.1f} s "
            f"({100 * statistics.median(outside) / o:.0f}% of the wall clock)")
    if stock_t:
        s = statistics.median(stock_t)
        line += f"; stock {s:.1f} s: mixprune is {s / o:.2f}x faster"
    print(line)


if __name__ == "__main__":
    main()
