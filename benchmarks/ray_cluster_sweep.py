"""Benchmark: the bundled alpha x sparsity study (30 cells) on a two-node Ray cluster against the local backend.

    unshare -n -p -f --mount-proc .venv/bin/python benchmarks/ray_cluster_sweep.py WORKDIR [reproduce flags...]
    # e.g. short training on a subset, so that both sides finish in minutes:
    unshare -n -p -f --mount-proc .venv/bin/python benchmarks/ray_cluster_sweep.py /tmp/axs \
        --seeds 0 1 --epochs 2 --finetune-epochs 1 --train-subset 4000 --test-subset 1000

Starts the same cluster as tests/study/ray_cluster.py (head and a second node with one CPU each, token
authentication, the second node unable to see the dataset files; root, in namespaces of its own), runs
`mixprune sweep --study alpha-x-sparsity` through `--address` and with the local backend, and prints both
wall times and whether the two sweep tables (every cell's per-model mean and CI) are equal. Not a test:
nothing here asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "study"))
import ray_cluster as rc  # noqa: E402 - the test's cluster helpers

DATA = "/usr/share/datasets/fashion-mnist"


def main() -> None:
    work, extra = Path(sys.argv[1]), sys.argv[2:]
    work.mkdir(parents=True, exist_ok=True)
    env, base = rc.start_cluster(work, Path(DATA))
    mix = [str(rc.BIN / "python"), "-m", "mixprune", "sweep", "--study", "alpha-x-sparsity", "--data-dir", DATA,
           "--threads", "1", *extra]
    try:
        walls = {}
        for side, flags, run_env in (("ray", ["--backend", "ray", "--address", rc.ADDRESS], env),
                                     ("local", [], base)):
            start = time.perf_counter()
            res = subprocess.run([*mix, *flags, "--out", str(work / side)], env=run_env, capture_output=True,
                                 text=True)
            walls[side] = time.perf_counter() - start
            if res.returncode != 0:
                print(f"{side}: exit {res.returncode}: {res.stderr[-2000:]}")
                return
        tables = {side: {json.dumps(c["values"], sort_keys=True): c["accuracy"]
                         for c in json.loads((work / side / "sweep.json").read_text())["cells"]} for side in walls}
        print(f"alpha x sparsity sweep ({len(tables['ray'])} cells, flags {' '.join(extra) or 'none'}): "
              f"two-node Ray cluster {walls['ray']:.1f} s, local backend {walls['local']:.1f} s; tables equal: "
              f"{tables['ray'] == tables['local']}")
    finally:
        rc.stop_cluster(env, work)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
