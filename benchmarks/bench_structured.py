"""Benchmark: structured pruning recipes, each as a whole `mixprune reproduce` run, against its own dense model.

    .venv/bin/python benchmarks/bench_structured.py --seeds 0 1 2 -- --conv-amount 0.5 --fc-amount 0.5
    .venv/bin/python benchmarks/bench_structured.py --seeds 0 --arch torchvision:resnet18 -- --train-subset 6000

Runs `mixprune reproduce --prune-method structured --alpha 0` (alpha 0: Mixup off, so the study trains
the Baseline and the Pruned model once each; --alpha after `--` overrides it) with the extra arguments,
then reads results.json and benches the seed's Baseline and Pruned files (`mixprune bench` code:
eager and ONNX Runtime, batch 256, one thread). Prints per seed and on average: MACs dense/slimmed, the
accuracy change against the dense model of the same recipe, parameter counts, ONNX file sizes and the
measured speed-ups. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per latency measurement")
    ap.add_argument("extra", nargs="*", help="more `mixprune reproduce` arguments (after --)")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-structured-")) / "run"
    cmd = [sys.executable, "-m", "mixprune", "reproduce", "--arch", args.arch, "--prune-method", "structured",
           "--alpha", "0", "--no-latency", "--seeds", *args.seeds, "--out", str(out), *args.extra]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    from mixprune.commands.bench import bench_model
    from mixprune.deploy.files import load_model
    from mixprune.study.results import Results

    results = Results.load(out / "results.json")

    arch = args.arch if args.arch.endswith(".py") or ".py:" in args.arch else None
    drops, macs, eager, ort = [], [], [], []
    for seed in args.seeds:
        base, pruned = (results.metrics(n, int(seed)) for n in ("baseline", "pruned"))
        model = load_model(out / "models" / f"pruned-seed{seed}.safetensors", arch)
        rows, lines, counts = bench_model(model, batches=(256,), threads=(1,), min_run_time=args.seconds)
        ms = {r["variant"]: r["median_ms"] for r in rows}
        drops.append(pruned["test_accuracy"] - base["test_accuracy"])
        macs.append(counts["dense"] / counts["slimmed"])
        eager.append(ms["eager dense"] / ms["eager slimmed"])
        ort.append(ms["ORT fp32"] / ms["ORT slimmed"])
        print(f"seed {seed}: dense {base['test_accuracy']:.2f}% -> pruned {pruned['test_accuracy']:.2f}% "
              f"({drops[-1]:+.2f} points); params {base['params_total']:,} -> {pruned['params_present']:,}; "
              f"MACs {counts['dense']:,} -> {counts['slimmed']:,} ({macs[-1]:.2f}x fewer); ONNX "
              f"{base['size_bytes_onnx']:,} -> {pruned['size_bytes_onnx']:,} bytes ({pruned['onnx_network']}, "
              f"verified {pruned['onnx_verified']}); batch 256, 1 thread: eager {eager[-1]:.2f}x, "
              f"ONNX Runtime {ort[-1]:.2f}x; ratios {pruned.get('prune_ratios')}", flush=True)

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):+.2f} ± {sd:.2f}"

    print(f"mean over {len(args.seeds)} seed(s): accuracy change {mean_sd(drops)} points, "
          f"{statistics.mean(macs):.2f}x fewer MACs, speed-up eager {statistics.mean(eager):.2f}x, "
          f"ONNX Runtime {statistics.mean(ort):.2f}x (batch 256, 1 thread)")
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
