"""Benchmark: the paper's 4-model study, stock PyTorch vs mixprune, timed in the same run on the same machine.

    .venv/bin/python benchmarks/bench_study.py                 # 3 repeats, plus 1-seed vs 5-seed scaling
    .venv/bin/python benchmarks/bench_study.py --repeats 1 --no-scaling
    python benchmarks/bench_study.py --device cuda --no-stock    # on a GPU: CUDA graphs on and off
    python benchmarks/bench_study.py --no-stock --repeats 1 --stack   # also the other --stack-models setting
    python benchmarks/bench_study.py --device cuda --no-stock --seed-repeats 3 --profile prof.txt

"Stock" is the study written the way the PyTorch tutorials write it: torchvision's FashionMNIST with
ToTensor + Normalize per sample, a DataLoader (batch 128, shuffle), nn.Module LeNet-5, the same
optimizer, schedule, Mixup, torch.nn.utils.prune L1 pruning and fine-tuning, test-set evaluation
after every epoch. Both sides: 1 seed, 10 training epochs per dense model, 3 fine-tuning epochs per
pruned model, no latency measurement. mixprune runs with its defaults for the device (--stack-models on a
GPU, not on the CPU); --stack also times the other setting. With --device cuda both sides run on the GPU
(the stock side moves each batch there, as the tutorials do) and mixprune is also timed with
--no-cuda-graphs. Prints wall times, their ratio, training images per second and the test accuracies of
both sides. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from mixprune import StudyConfig, load_fashion_mnist
from mixprune.core.config import with_overrides
from mixprune.data import locate
from mixprune.study.run import run_study

EPOCHS, FT_EPOCHS, TRAIN_N = 10, 3, 60_000


class TutorialLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def torchvision_root(tmp: Path) -> Path:
    """torchvision expects raw (un-gzipped) files under ROOT/FashionMNIST/raw."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in locate().values():
        data = path.read_bytes()
        (raw / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return tmp


def stock_study(root: Path, seed: int = 0, device: str = "cpu", epochs: int = EPOCHS,
                ft_epochs: int = FT_EPOCHS) -> dict[str, float]:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = datasets.FashionMNIST(str(root), train=True, transform=tf)
    test = datasets.FashionMNIST(str(root), train=False, transform=tf)
    test_loader = DataLoader(test, batch_size=1000)

    def evaluate(model):
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                x, y = x.to(device), y.to(device)
                correct += (model(x).argmax(1) == y).sum().item()
        model.train()
        return 100.0 * correct / len(test)

    def fit_stock(model, epochs, lr_at, mixup, order_seed):
        loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(order_seed))
        opt = torch.optim.SGD(model.parameters(), lr=lr_at(0), momentum=0.9, weight_decay=5e-4)
        beta = torch.distributions.Beta(1.0, 1.0)
        for epoch in range(epochs):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch)
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                if mixup:
                    lam, perm = beta.sample().item(), torch.randperm(len(x), device=device)
                    out = model(lam * x + (1 - lam) * x[perm])
                    loss = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
                else:
                    loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            evaluate(model)
        return model

    torch.manual_seed(seed)
    acc = {}
    for name, mixup in (("baseline", False), ("mixup", True)):
        dense = fit_stock(TutorialLeNet().to(device), epochs, lambda e: 0.01 if e < 8 else 0.001, mixup, seed)
        acc[name] = evaluate(dense)
        for m in (dense.conv1, dense.conv2, dense.fc1, dense.fc2, dense.fc3):
            prune.l1_unstructured(m, "weight", amount=0.2 if isinstance(m, nn.Conv2d) else 0.3)
        pruned = fit_stock(dense, ft_epochs, lambda e: 0.001, mixup, seed + 1)
        for m in (pruned.conv1, pruned.conv2, pruned.fc1, pruned.fc2, pruned.fc3):
            prune.remove(m, "weight")
        acc["pruned" if name == "baseline" else "mixup_pruned"] = evaluate(pruned)
    return acc


def mixprune_study(seeds: list[int], out: Path, device: str = "cpu", graphs: bool = True, workers: int = 0,
                   stack: bool | None = None) -> dict[str, float]:
    ds = load_fashion_mnist()
    # the stock side writes no files and times nothing: switch ONNX export and latency off here too
    cfg = with_overrides(StudyConfig(), {"seeds": seeds, "bench.latency": False, "bench.onnx": False, "out": str(out),
                                         "device": device, "train.cuda_graphs": graphs, "workers": workers,
                                         "train.stack_models": stack})
    res = run_study(cfg, dataset=ds)
    return {n: res.summary(n, "test_accuracy")["mean"] for n in res.names}


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-scaling", action="store_true", help="skip the 5-seed run")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-stock", action="store_true", help="time mixprune only")
    ap.add_argument("--no-eager", action="store_true", help="on a GPU, skip the run without CUDA graphs")
    ap.add_argument("--stack", action="store_true",
                    help="also time the --stack-models setting that is not the device's default (on the CPU: "
                         "stacked; on a GPU: not stacked), 1 seed and 5 seeds")
    ap.add_argument("--seed-repeats", type=int, default=1, help="runs of 5 seeds (their median is reported)")
    ap.add_argument("--profile", metavar="PATH", help="profile one more 5-seed run with cProfile, top 45 to PATH")
    ap.add_argument("--gpu-workers", type=int, nargs="*", default=[],
                    help="on a GPU, also time --workers N (2: 1 seed; others: 5 seeds)")
    args = ap.parse_args()
    dev = args.device
    images = TRAIN_N * (2 * EPOCHS + 2 * FT_EPOCHS)  # training images processed by one 4-model study
    gpu = f", GPU {torch.cuda.get_device_name()}" if dev == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads{gpu}, "
          f"torch {torch.__version__}, python {platform.python_version()}, device {dev}")
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        if dev == "cuda":  # CUDA context creation is paid once per process; keep it out of every repeat
            torch.zeros(1, device="cuda")
        stock_t, ours_t, stock_acc, ours_acc = [], [], [], []
        for rep in range(args.repeats):
            if not args.no_stock:
                t, a = timed(stock_study, root, rep, dev)  # repeat r uses seed r on both sides
                stock_t.append(t)
                stock_acc.append(a)
            t, b = timed(mixprune_study, [rep], Path(tmp) / f"ours{rep}", dev)
            ours_t.append(t)
            ours_acc.append(b)
            line = f"repeat {rep + 1}: mixprune {ours_t[-1]:.1f} s"
            if stock_t:
                line += f", stock {stock_t[-1]:.1f} s, ratio {stock_t[-1] / ours_t[-1]:.2f}x"
            print(line, flush=True)
        o = statistics.median(ours_t)
        line = f"\n4-model study, 1 seed, median of {args.repeats} (seeds 0..{args.repeats - 1}): mixprune {o:.1f} s ({images / o:,.0f} img/s)"
        if stock_t:
            s = statistics.median(stock_t)
            line += f", stock {s:.1f} s ({images / s:,.0f} img/s): mixprune is {s / o:.2f}x faster"
        print(line)
        for name in ours_acc[0]:
            stock = f"  stock {statistics.fmean(a[name] for a in stock_acc):.2f}%" if stock_acc else ""
            print(f"  mean test accuracy {name:13s} mixprune {statistics.fmean(a[name] for a in ours_acc):.2f}%{stock}")
        if dev == "cuda" and not args.no_eager:
            t, acc = timed(mixprune_study, [0], Path(tmp) / "eager", dev, False)
            print(f"\nwithout CUDA graphs (--no-cuda-graphs), seed 0: {t:.1f} s; accuracy "
                  + ", ".join(f"{n} {v:.2f}%" for n, v in acc.items()))
        if not args.no_scaling:
            t5 = statistics.median(timed(mixprune_study, [0, 1, 2, 3, 4], Path(tmp) / f"ours5-{r}", dev)[0]
                                   for r in range(args.seed_repeats))
            print(f"\nscaling: 5 seeds {t5:.1f} s (median of {args.seed_repeats}) vs 1 seed {o:.1f} s = {t5 / o:.2f}x "
                  "the wall time of 1 seed", flush=True)
        if args.stack:  # the setting that is not the device's default; on the CPU one worker per core, so 1 seed
            # stacks only with --workers 1 (A with B, C with D), 5 seeds stack 5 chains per worker
            on = dev == "cpu"
            flag = "--stack-models" if on else "--no-stack-models"
            runs = [(f"1 seed{', --workers 1' if on else ''}", [0], 1), ("5 seeds", [0, 1, 2, 3, 4], 0)]
            for label, seeds, w in runs:
                t, acc = timed(mixprune_study, seeds, Path(tmp) / f"other{len(seeds)}", dev, True, w, on)
                print(f"{flag}, {label}: {t:.1f} s ({t / o:.2f}x the 1-seed time of the default); mean accuracy "
                      + ", ".join(f"{n} {v:.2f}%" for n, v in acc.items()), flush=True)
        if args.profile:  # where the time of a default 5-seed run goes
            prof = cProfile.Profile()
            t, _ = timed(prof.runcall, mixprune_study, [0, 1, 2, 3, 4], Path(tmp) / "profiled", dev)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(45)
            Path(args.profile).write_text(f"5 seeds, defaults, under cProfile: {t:.1f} s\n{text.getvalue()}")
            print(f"profile of a 5-seed run ({t:.1f} s under cProfile) written to {args.profile}")
        for w in args.gpu_workers if dev == "cuda" else ():
            seeds = [0] if w == 2 else [0, 1, 2, 3, 4]
            t, _ = timed(mixprune_study, seeds, Path(tmp) / f"w{w}", dev, True, w)
            print(f"--workers {w}: {len(seeds)} seed(s) {t:.1f} s ({t / o:.2f}x the 1-seed, 1-process time)", flush=True)


if __name__ == "__main__":
    main()
