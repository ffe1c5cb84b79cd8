"""Benchmark: `mixprune compress` on a network trained here, as a user would hand it over (a torch.save checkpoint).

    .venv/bin/python benchmarks/bench_compress.py --arch lenet5 --config strong --targets 0.5x --seeds 0 1 2
    .venv/bin/python benchmarks/bench_compress.py --arch examples/my_model.py:build --targets 0.5x --bench-batch 256

Trains the network with the recipe (--config; seed 0) on the training images minus compress's validation split (the
same stratified 10 percent, so that every choice compress makes is on images the original never saw), saves its
state dict with torch.save, then runs `mixprune compress --target-macs TARGETS` on it with the same recipe and
prints the wall time of each step and compress's table (accuracy change with its 95% CI, achieved MACs, bytes,
latency in PyTorch and ONNX Runtime). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def train(arch: str, config: str | None, out: Path, epochs: int | None) -> float:
    """Train the original on the training split minus the validation split; returns its test accuracy."""
    from mixprune.core.config import config_path, layered, read_toml
    from mixprune.core.runtime import generator
    from mixprune.data.prepare import prepare_dataset, prepare_tensors
    from mixprune.models import evaluate_loss_accuracy
    from mixprune.study.jobs import Problem, fit_spec, training_lr
    from mixprune.train.engine import fit

    layers = [("recipe", read_toml(config_path(config), "config file"))] if config else []
    cfg = layered(layers, {"model.arch": arch, **({"train.epochs": epochs} if epochs is not None else {})})
    ds = prepare_dataset(cfg, None).hold_out(cfg.prune.val_fraction)
    data = prepare_tensors(ds, torch.device("cpu"))
    model = Problem(ds.shape, ds.num_classes).build(cfg, generator(0, "init"))
    fit(model, data, fit_spec(cfg, cfg.train.epochs, training_lr(cfg), False, "ce"), generator(0, "order"))
    torch.save(model.state_dict(), out)
    return evaluate_loss_accuracy(model, data.test_x, data.test_y)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--config", default="strong", help="recipe for training and recovery (a bundled name or a file; "
                    "empty: the paper's settings)")
    ap.add_argument("--train-epochs", type=int, help="training epochs of the original [default: the recipe's]")
    ap.add_argument("--targets", nargs="+", default=["0.5x"], help="--target-macs values")
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    ap.add_argument("--bench-batch", default="1")
    ap.add_argument("--weights", help="skip training: compress this checkpoint")
    ap.add_argument("extra", nargs="*", help="more `mixprune compress` arguments (after --)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    weights = Path(args.weights) if args.weights else work / "original.pt"
    if not args.weights:
        start = time.perf_counter()
        acc = train(args.arch, args.config, weights, args.train_epochs)
        print(f"trained {args.arch} with --config {args.config or '(paper)'} (seed 0): test accuracy {acc:.2f}% in "
              f"{time.perf_counter() - start:.0f} s; {weights}", flush=True)
    recipe = ["--config", args.config] if args.config else []
    cmd = [sys.executable, "-m", "mixprune", "compress", "--arch", args.arch, *recipe, "--weights", str(weights), "--target-macs", *args.targets, "--seeds", *args.seeds, "--bench-batch", args.bench_batch,
           "--out", str(work / "compress"), *args.extra]
    print("$", " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(res.stdout, res.stderr[-2000:] if res.returncode not in (0, 1) else "", sep="\n")
    print(f"mixprune compress: exit {res.returncode}, {time.perf_counter() - start:.0f} s wall (2-core CPU: "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
