"""Benchmark: where the wall time of a short `mixprune reproduce` goes, end to end.

    .venv/bin/python benchmarks/profile_short_run.py                      # --epochs 1 --finetune-epochs 1 --seeds 0
    .venv/bin/python benchmarks/profile_short_run.py -- --epochs 10 --finetune-epochs 3   # paper length

Runs the whole command twice in fresh processes: once as a user would (wall clock of the process,
start-up included), once in one process (`--workers 1`) under cProfile, and splits the profiled time
into start-up (imports before the command runs), data, training, each measurement, the files and
their checks, and the report with its figures, by the cumulative time of the functions that do each.
Categories are disjoint: a function inside another category's function is counted once, in the
innermost category listed first below. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Function = tuple[str, str]  # (file suffix, function name)
MEASURE, RECORD, ONNX = ("measure.py", "measure"), ("measure.py", "record"), ("measure.py", "onnx_artifacts")
MEASUREMENT = [  # inside measure.measure: (function, the caller whose calls count)
    ("test metrics", [(("engine.py", "predict"), MEASURE), (("evaluation.py", "classification_metrics"), MEASURE)]),
    ("robustness (noise, FGSM, ECE)", [(("measure.py", "robustness"), MEASURE)]),
    ("slimming and counting", [(("structured.py", "slim_network"), MEASURE), (("counting.py", "macs_per_image"), MEASURE),
                               (("counting.py", "effective_macs"), MEASURE),
                               (("counting.py", "count_nonzero"), MEASURE)]),
    ("gzip sizes", [(("export.py", "gzip_size"), RECORD)]),
    ("decoded-file accuracies", [(("study.py", "<lambda>"), RECORD),
                                 (("engine.py", "evaluate_loss_accuracy"), RECORD)]),
    ("ONNX export", [(("export.py", "export_onnx"), ONNX)]),
    ("ONNX int8 calibration", [(("export.py", "quantize_onnx_int8"), ONNX)]),
    ("ONNX Runtime verification", [(("export.py", "verify_onnx"), ONNX)]),
]


def cumulative(stats: pstats.Stats, fn: Function, caller: Function | None = None) -> float:
    """Cumulative seconds of fn (defined in a file ending with its suffix), or of its calls from `caller`."""
    total = 0.0
    for (filename, _, name), (_, _, _, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name != fn[1] or not filename.endswith(fn[0]):
            continue
        if caller is None:
            total += ct
        else:
            total += sum(v[3] for (cf, _, cn), v in callers.items() if cn == caller[1] and cf.endswith(caller[0]))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("extra", nargs="*", help="`mixprune reproduce` arguments (after --)")
    args = ap.parse_args()
    extra = args.extra or ["--epochs", "1", "--finetune-epochs", "1"]
    tmp = Path(tempfile.mkdtemp(prefix="profile-short-"))
    base = [sys.executable, "-m", "mixprune", "reproduce", "--seeds", "0", *extra]
    start = time.perf_counter()
    subprocess.run(base + ["--out", str(tmp / "plain")], check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - start
    print(f"$ mixprune reproduce --seeds 0 {' '.join(extra)}: {wall:.1f} s wall clock (as a user runs it)")

    prof = tmp / "run.prof"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "mixprune", "reproduce", "--seeds", "0",
                    "--workers", "1", *extra, "--out", str(tmp / "profiled")], check=True, cwd=ROOT,
                   capture_output=True)
    profiled_wall = time.perf_counter() - start
    stats = pstats.Stats(str(prof))
    total = cumulative(stats, ("cli.py", "main"))
    parts = {"start-up (interpreter, imports)": profiled_wall - total,
             "data": cumulative(stats, ("study.py", "prepare_dataset")) + cumulative(stats, ("jobs.py", "prepare_tensors")),
             "training (incl. per-epoch test evaluation)": cumulative(stats, ("jobs.py", "run_chains"))}
    measured = cumulative(stats, ("measure.py", "measure"))
    inside = {label: sum(cumulative(stats, fn, caller) for fn, caller in calls) for label, calls in MEASUREMENT}
    inside["other (writing files, ...)"] = measured - sum(inside.values())
    parts["latency timing"] = cumulative(stats, ("measure.py", "measure_latency"))
    parts["report and figures"] = cumulative(stats, ("report.py", "write_report"))
    parts["everything else"] = total - sum(v for k, v in parts.items() if not k.startswith("start-up")) - measured
    print(f"profiled in one process (--workers 1, under cProfile, which slows Python-heavy parts): "
          f"{profiled_wall:.1f} s")
    for label, seconds in parts.items():
        print(f"  {label:44s} {seconds:6.1f} s  {seconds / profiled_wall:5.1%}")
        if label.startswith("training"):
            print(f"  {'measurement of each model (measure.measure)':44s} {measured:6.1f} s  "
                  f"{measured / profiled_wall:5.1%}, of which:")
            for sub, sec in inside.items():
                print(f"      {sub:40s} {sec:6.1f} s  {sec / profiled_wall:5.1%}")
    outside = profiled_wall - parts["training (incl. per-epoch test evaluation)"]
    print(f"outside training: {outside:.1f} s of {profiled_wall:.1f} s ({outside / profiled_wall:.0%})")


if __name__ == "__main__":
    main()
