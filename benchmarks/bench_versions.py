"""Benchmark: this checkout's `mixprune reproduce` against another revision's, timed in the same run.

    .venv/bin/python benchmarks/bench_versions.py --base b6ada53            # 1 seed, paper length, 2 repeats
    .venv/bin/python benchmarks/bench_versions.py --base HEAD~3 --repeats 3 -- --train-subset 20000

The other revision is checked out into a temporary git worktree and run with the same Python and
packages (PYTHONPATH points at its src/); the two sides alternate, so drifts of the machine hit both.
Each run is the whole command (`python -m mixprune reproduce --seeds 0 --no-latency` plus any extra
arguments): start-up, training, every measurement but latency timing, report and figures. Prints the
wall time of every run, the medians, their ratio, the training wall time recorded in results.json,
and whether the two sides' metrics agree (timings and gzip sizes of files whose metadata order varies
aside). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = ("seconds", "latency", "gzip_bytes")


def run(src: Path, out: Path, extra: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mixprune", "reproduce", "--seeds", "0", "--no-latency", "--out", str(out),
                    *extra], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def metrics(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {(n, k): v for n, e in results["models"].items() for k, v in e["seeds"]["0"].items()
            if not any(s in k for s in SKIP)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the revision to compare against (e.g. a commit or tag)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("extra", nargs="*", help="more arguments for both sides' `mixprune reproduce`")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.base], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sides = {"this checkout": ROOT / "src", f"base {args.base}": tree / "src"}
            times: dict[str, list[float]] = {k: [] for k in sides}
            train: dict[str, list[float]] = {k: [] for k in sides}
            for r in range(args.repeats):
                for label, src in sides.items():
                    out = Path(tmp) / f"{label.split()[0]}-{r}"
                    times[label].append(run(src, out, args.extra))
                    train[label].append(json.loads((out / "results.json").read_text())["execution"]["train_wall_seconds"])
                    print(f"repeat {r + 1}: {label}: {times[label][-1]:.1f} s (training {train[label][-1]:.1f} s)",
                          flush=True)
            new, old = (statistics.median(times[k]) for k in sides)
            print(f"\nwhole command, median of {args.repeats}: this checkout {new:.1f} s, base {old:.1f} s: "
                  f"ratio base/this = {old / new:.3f} (> 1: this checkout is faster)")
            a, b = (metrics(Path(tmp) / f"{label.split()[0]}-0") for label in sides)
            same = [k for k in a if k in b and a[k] == b[k]]
            differ = sorted(f"{n}.{k}" for (n, k) in a if (n, k) in b and a[(n, k)] != b[(n, k)])
            print(f"metrics compared (timings and gzip sizes aside): {len(same)} equal, {len(differ)} differ"
                  + (f": {', '.join(differ)}" if differ else ""))
            for n in ("baseline", "mixup", "pruned", "mixup_pruned"):
                print(f"  test accuracy {n:<13} this {a[(n, 'test_accuracy')]:.2f}%  base {b[(n, 'test_accuracy')]:.2f}%")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
