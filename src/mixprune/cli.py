"""Command line: argument parsing, progress display and exit codes; all work is done by the Python API.

    mixprune reproduce [--seeds 0 1 2] [--epochs 10] ... [--config study.toml]
    mixprune sweep --grid mixup.alpha=0.2,1.0 [--grid ...] [study flags]   # one run per grid cell
    mixprune search --min-accuracy 90 [--objective bytes] [--config strong]  # smallest model meeting a target
    mixprune bench PATH                # latency of every form of a model, with verdicts
    mixprune sensitivity [study flags] [--model FILE]   # per-group drop on held-out images -> --prune-ratios
    mixprune compress --weights FILE --target-macs 0.5x [--target-bytes N --format F] [study flags]
    mixprune report RUN_DIR            # re-render report.md from RUN_DIR/results.json
    mixprune report SWEEP_DIR          # one report over every run below SWEEP_DIR (plots, Pareto fronts, C11)
    mixprune data download [DIR] [--dataset NAME]   # fetch a dataset through torchvision (needs internet)
    mixprune data check [--dataset NAME] [--data-dir D]  # locate and verify a dataset

Exit codes: 0 success, 1 a sweep cell failed (recorded in sweep.md), 2 bad input (one-line message, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .core.config import StudyConfig, config_path, flag_fields, layered, read_toml
from .core.errors import ConfigError, MixpruneError
from .core.runtime import available_cores
from .study.results import Results

err = Console(stderr=True)
MAX_BENCH_BATCH, MAX_BENCH_SECONDS = 65_536, 60.0  # a bench measurement's largest batch and time budget
out = Console()


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field that declares one; help text and type come from the dataclasses."""
    for key, f, hint in flag_fields():
        kw: dict = {"dest": key, "default": argparse.SUPPRESS, "help": f.metadata["help"]}
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if typing.get_origin(hint) is tuple:
            kw.update(nargs="+", type=int, metavar="N")
        elif base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        else:
            kw["type"] = base
            kw["metavar"] = {int: "N", float: "X", str: "DIR" if "dir" in key or key == "out" else "S"}.get(base, "V")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if default is not None:
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            kw["help"] += f" [default: {shown}]"
        parser.add_argument(f.metadata["flag"], **kw)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to read more) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="mixprune", description="Lightweight CNNs from Mixup and pruning, "
                                "measured honestly: the paper's study on FashionMNIST, or your network on your data.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    rep = sub.add_parser("reproduce", help="run the paper's four-model study (Baseline, Mixup, Pruned, "
                         "Mixup+Pruned) and write results.json, report.md, history.csv and model files",
                         description="Run the paper's study; defaults are the paper's settings.")
    rep.add_argument("--config", metavar="FILE", help="TOML file with the same fields (sections data, model, "
                     "train, mixup, prune, bench); flags given on the command line win")
    _add_config_flags(rep)
    sw = sub.add_parser("sweep", help="run the study over a grid of config values, one resumable run directory "
                        "per cell", description="Run the study for every combination of --grid values; other "
                        "flags set the base config. Re-running skips finished cells.")
    sw.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                    help="a config field and its values, e.g. mixup.alpha=0.2,1.0 or prune.fc_amount=0.5,0.9; repeat "
                    "for more dimensions; adds to (and wins over) the study file's grid")
    sw.add_argument("--study", metavar="NAME|FILE", help="a study file (TOML: config fields and a [grid] table) or "
                    "a bundled one: paper, alpha-x-sparsity, structured-vs-unstructured, dropout, cv5")
    sw.add_argument("--config", metavar="FILE", help="TOML file for the base config")
    _add_config_flags(sw)
    b = sub.add_parser("bench", help="latency of every form of a model (eager dense/slimmed/CSR, ONNX Runtime "
                       "fp32/int8) at several batch sizes and thread counts, with a verdict per model")
    b.add_argument("path", metavar="PATH", help="a model file (.safetensors) or a run directory of `mixprune reproduce`")
    b.add_argument("--seed", type=int, default=None, help="run directory: which seed's models [default: the first]")
    b.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256], metavar="N", help="batch sizes [default: 1 32 256]")
    b.add_argument("--threads", type=int, nargs="+", default=None, metavar="N",
                   help="thread counts [default: 1 and all cores]")
    b.add_argument("--seconds", type=float, default=0.3, metavar="X", help="timed seconds per measurement [default: 0.3]")
    b.add_argument("--arch", metavar="PATH.py:FUNCTION", help="the factory that built the models, for files of "
                   "your own network (mixprune imports user code only when you name it)")
    se_ = sub.add_parser("search", help="find the smallest model that meets --min-accuracy (or the most accurate "
                         "within --max-bytes): candidates chosen on a validation split, the chosen design tested once "
                         "over --seeds with a 95%% CI; writes search.md, pareto.csv/.png and chosen/ (files, config)")
    goal = se_.add_mutually_exclusive_group(required=True)
    goal.add_argument("--min-accuracy", type=float, metavar="PERCENT", help="accuracy target of the decoded file (%%)")
    goal.add_argument("--max-bytes", type=int, metavar="N",
                      help="the most accurate model whose file has at most N bytes")
    se_.add_argument("--objective", choices=("bytes", "macs", "latency"), default="bytes",
                     help="--min-accuracy: what 'smallest' means [default: bytes]")
    se_.add_argument("--budget-minutes", type=float, default=60.0, metavar="M",
                     help="no new candidate starts after M minutes; the chosen design's test study still runs "
                     "[default: 60]")
    se_.add_argument("--sparsities", type=float, nargs="+", default=None, metavar="S",
                     help="pruning fractions tried [default: 0.5 0.7 0.8 0.85 0.9 0.93 0.95]")
    se_.add_argument("--methods", nargs="+", choices=("unstructured", "structured"), default=None,
                     help="pruning methods tried [default: both]")
    se_.add_argument("--alphas", type=float, nargs="+", default=None, metavar="A",
                     help="Mixup alphas tried (0: Mixup off) [default: --alpha's]")
    se_.add_argument("--max-drops", type=float, nargs="*", default=None, metavar="D",
                     help="structured: per-group ratios from sensitivity within these drops (points) [default: 0.5 2]")
    se_.add_argument("--no-distill-search", dest="distill_search", action="store_false",
                     help="leave out the distilled variants (Pruned+KD, Mixup+Pruned+KD)")
    se_.add_argument("--search-val-fraction", type=float, default=0.1, metavar="F",
                     help="share of the training images held out to choose on [default: 0.1]")
    se_.add_argument("--search-seeds", type=int, nargs="+", default=[0], metavar="N",
                     help="seeds each candidate trains [default: 0]; the chosen design is tested over --seeds")
    se_.add_argument("--config", metavar="FILE|NAME", help="TOML file, or a bundled recipe (strong), for the base "
                     "training settings")
    _add_config_flags(se_)
    se = sub.add_parser("sensitivity", help="prune each channel group alone at a ladder of ratios, measure the "
                        "accuracy drop on a validation split held out from the training images, and choose per-group "
                        "ratios within --max-drop", description="Per-group sensitivity to structured pruning; writes "
                        "sensitivity.json/.csv/.png to --out and prints the --prune-ratios value to use.")
    se.add_argument("--config", metavar="FILE", help="TOML file with the study's fields")
    se.add_argument("--model", dest="model_file", metavar="FILE", help="a trained model file (default: train the "
                    "Baseline here, on the training images minus the validation split)")
    se.add_argument("--ladder", type=float, nargs="+", default=None, metavar="R",
                    help="ratios tried per group [default: 0.1 0.2 ... 0.9]")
    _add_config_flags(se)
    c = sub.add_parser("compress", help="compress a trained network to budgets (MACs, parameters, file bytes, latency, "
                       "accuracy drop): channels chosen on a validation split, removed in steps while fine-tuning "
                       "against the original, files verified in ONNX Runtime; writes compress.md, report.html, "
                       "results.json and the files to --out", description="Compress the network of --arch with "
                       "the trained --weights (required) to each --target-*; one value per target gives the budget curve.")
    c.add_argument("--config", metavar="FILE|NAME", help="TOML file (or a bundled recipe: strong) with the study's "
                   "fields and a [compress] table of this command's (weights, target_macs, ...); flags win")
    for metric, what in (("macs", "multiply-accumulates per image"), ("params", "parameters"),
                         ("bytes", "bytes of the --format file"), ("latency", "milliseconds per --bench-batch")):
        c.add_argument(f"--target-{metric}", nargs="+", metavar="V", help=f"at most V {what}: a share of the "
                       "original's (0.5x) or an amount; several values give the budget curve")
    c.add_argument("--format", choices=("fp32", "fp16", "sparse", "sparse_int8", "onnx", "onnx_int8"),
                   help="the file --target-bytes counts [default: fp32]")
    c.add_argument("--bench-batch", type=int, metavar="N", help="latency: batch size [default: 1]")
    c.add_argument("--bench-threads", type=int, metavar="N", help="latency: threads [default: 1]")
    c.add_argument("--mixup-alpha", type=float, metavar="A", help="Mixup while fine-tuning (0: off) [default: 0]")
    _add_config_flags(c)
    r = sub.add_parser("report", help="re-render report.md from a run directory's results.json, or write one report "
                       "over every run below a directory (a sweep)")
    r.add_argument("run_dir", metavar="RUN_DIR")
    from .data.registry import describe

    known = "; ".join(f"{n}: {s}" for n, s in describe().items())
    data = sub.add_parser("data", help="get or check a dataset's files")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=OneLineParser)
    dl = dsub.add_parser("download", help="download through torchvision (needs internet) and verify")
    dl.add_argument("directory", nargs="?", metavar="DIR", help="target directory [default: the user cache, "
                    "~/.cache/mixprune/NAME]")
    chk = dsub.add_parser("check", help="locate and verify the dataset, print where it is")
    chk.add_argument("--data-dir", metavar="DIR")
    for action in (dl, chk):
        action.add_argument("--dataset", default="fashion-mnist", metavar="NAME", help=f"{known} [default: "
                            "fashion-mnist]")
    return p


class RichObserver:
    """Progress bars on stderr: one per model phase, epoch by epoch, with the test accuracy. The display starts
    with the first phase, so an error found before training (bad data, a model that cannot take the input)
    is printed alone, without an empty progress display before it."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[tuple[str, int], TaskID] = {}  # (model, seed) -> bar; chains run side by side

    @contextlib.contextmanager
    def shown(self) -> Iterator[RichObserver]:
        """The observer, its display stopped at the end of the block if a phase started it."""
        try:
            yield self
        finally:
            if self.progress.live.is_started:
                self.progress.stop()

    def phase_start(self, model: str, seed: int, epochs: int) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        if (model, seed) in self.tasks:  # the same model of the next sweep cell: replace its bar
            self.progress.remove_task(self.tasks[(model, seed)])
        task = self.progress.add_task(f"seed {seed} {model}", total=max(epochs, 1), acc="")
        self.tasks[(model, seed)] = task
        if epochs == 0:
            self.progress.update(task, completed=1)

    def epoch_end(self, model: str, seed: int, record) -> None:
        self.progress.update(self.tasks[(model, seed)], advance=1,
                             acc=f"loss {record.train_loss:.3f} acc {record.test_accuracy:.2f}%")

    def model_done(self, model: str, seed: int, metrics: dict) -> None:
        self.progress.console.print(f"seed {seed} {model}: test accuracy {metrics['test_accuracy']:.2f}%, "
                                    f"{metrics['params_nonzero']} nonzero params")


def summary_table(results: Results) -> Table:
    """The study at a glance; report.md has the paper's full Tables 2-4 beside ours."""
    from .reporting.audit import paper_setting
    from .reporting.paper_report import paper_figure
    from .reporting.report import fmt

    n = len(results.seeds_run)
    quote = paper_setting(results)
    t = Table(title=f"mixprune reproduce: mean ± std over {n} seed(s)" + ("; the paper's figure in brackets" if quote
                                                                           else ""))
    for col in ("Model", "Test acc (%)", "Test loss", "Nonzero params", "b=256 latency (ms)", "fp16 KiB",
                "sparse KiB"):
        t.add_column(col, justify="left" if col == "Model" else "right")
    design = results.design
    for name in results.names:
        s = results.summary(name)
        f = lambda key, digits=2, scale=1.0: fmt(s.get(key), digits, scale, show_n=False)  # noqa: E731
        acc, loss = f("test_accuracy"), f("test_loss", 3)
        if quote and paper_figure(name, "test_accuracy") is not None:
            acc += f" [{paper_figure(name, 'test_accuracy')}]"
            loss += f" [{paper_figure(name, 'test_loss')}]" if paper_figure(name, "test_loss") else ""
        t.add_row(design.label(name), acc, loss, f("params_nonzero", 0), f("latency_ms_batch256", 3),
                  f("size_bytes_fp16", 1, 1 / 1024), f("size_bytes_sparse", 1, 1 / 1024))
    return t


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .api import reproduce
    from .reporting.publish import observations

    cfg = _base_config(args, ())
    with RichObserver(_progress(transient=False)).shown() as observer:
        results = reproduce(cfg, observer=observer)  # type: ignore[arg-type]
    out.print(summary_table(results))
    for line in observations(results):
        out.print(f"- {line}", markup=False, highlight=False)
    err.print(f"[bold]Done.[/bold] Results in {results.output_dir} (results.json, report.md, history.csv, models/)")
    return 0


SEARCH_FLAGS = ("min_accuracy", "max_bytes", "objective", "budget_minutes", "sparsities", "methods", "alphas",
                "max_drops", "distill_search", "search_val_fraction", "search_seeds")


def cmd_search(args: argparse.Namespace) -> int:
    from .core.paths import default_out_dir
    from .explore.search import SearchSpec, run_search

    base = _base_config(args, SEARCH_FLAGS)
    given = {k: getattr(args, k) for k in ("sparsities", "methods", "alphas", "max_drops")
             if getattr(args, k) is not None}
    spec = SearchSpec(min_accuracy=args.min_accuracy, max_bytes=args.max_bytes, objective=args.objective,
                      budget_minutes=args.budget_minutes, distill=args.distill_search,
                      val_fraction=args.search_val_fraction, search_seeds=tuple(args.search_seeds),
                      **{k: tuple(v) for k, v in given.items()})
    out_dir = Path(base.out) if base.out else default_out_dir("search")
    with RichObserver(_progress(transient=True)).shown() as observer:
        summary = run_search(base, spec, out_dir, observer=observer)  # type: ignore[arg-type]
    out.print((out_dir / "search.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    return 0 if summary["chosen"] is not None else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .core.errors import OutputError
    from .core.paths import RunPaths
    from .reporting.compare import runs_below, write_collection_report
    from .reporting.publish import report_dir, write_report

    paths = RunPaths(Path(args.run_dir))
    if not paths.root.is_dir():
        raise OutputError(f"{paths.root} is not a directory; pass a run directory or a directory of runs (a sweep)")
    if not paths.results_json.exists():  # a sweep, or any directory of runs: one report over all of them
        runs = runs_below(paths.root)
        with report_dir(paths.root):
            write_collection_report(paths.root, runs)
        out.print(f"wrote {paths.root / 'report.md'} and report.html")
        return 0
    results = Results.load(paths.results_json)
    with report_dir(paths.root):
        try:
            write_report(results, paths)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise OutputError(f"{paths.results_json} lacks expected content ({exc!r}); was it written by "
                              "mixprune?") from None
    out.print(f"wrote {paths.report_md}")
    return 0


def _progress(transient: bool) -> Progress:
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[acc]}"), console=err,
                    transient=transient)


def _base_config(args: argparse.Namespace, skip: tuple[str, ...],
                 study: tuple[str, dict] | None = None) -> StudyConfig:
    """The paper's settings, then `study` (a study file's settings), then --config FILE, then the flags given,
    checked together once merged."""
    layers = [study] if study else []
    if args.config:
        path = config_path(args.config)
        layers.append((f"config file {path}", read_toml(path, "config file")))
    cfg = layered(layers, {k: v for k, v in vars(args).items() if k not in ("command", "config") + skip})
    if cfg.backend == "local" and cfg.threads > available_cores():
        err.print(f"mixprune: warning: --threads {cfg.threads} is more than this machine's {available_cores()} cores; "
                  "training will be slower (results depend on the thread count, which is recorded)",
                  markup=False, highlight=False, soft_wrap=True)
    return cfg


def cmd_sweep(args: argparse.Namespace) -> int:
    from .core.paths import default_out_dir
    from .explore.sweep import load_study, parse_grid, run_sweep

    study, grid = load_study(args.study) if args.study else (None, {})
    grid.update(parse_grid(args.grid))
    if not grid and not args.study:
        raise ConfigError("mixprune sweep needs --grid FIELD=V1,V2 or --study NAME|FILE")
    base = _base_config(args, ("grid", "study"), study)
    out_dir = Path(base.out) if base.out else default_out_dir("sweep")
    with RichObserver(_progress(transient=True)).shown() as observer:
        summary = run_sweep(base, grid, out_dir, observer=observer)  # type: ignore[arg-type]
    out.print((out_dir / "sweep.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    done = sum(c["skipped"] for c in summary["cells"])
    failed = [c["name"] for c in summary["cells"] if "failed" in c]
    err.print(f"[bold]Done.[/bold] {len(summary['cells'])} cells ({done} already complete) in {out_dir}"
              + (f"; failed: {', '.join(failed)} (see sweep.md)" if failed else ""))
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .commands.bench import bench_models, bench_targets, run_calibration

    for label, values, hi in (("--batches", args.batches, MAX_BENCH_BATCH), ("--threads", args.threads or [1],
                                                                             available_cores())):
        if any(not 1 <= v <= hi for v in values):
            raise ConfigError(f"invalid {label}: every value must be in 1..{hi}, got {values}")
    if not 0 < args.seconds <= MAX_BENCH_SECONDS:  # also refuses inf and nan
        raise ConfigError(f"invalid --seconds: must be > 0 and <= {MAX_BENCH_SECONDS:g}, got {args.seconds}")
    targets = bench_targets(Path(args.path), args.seed)
    out_json = Path(args.path) / "bench.json" if Path(args.path).is_dir() else None
    if out_json is not None and not os.access(out_json.parent, os.W_OK):
        err.print(f"mixprune: note: {out_json.parent} is read-only; results are printed, not saved to bench.json",
                  markup=False, highlight=False)
        out_json = None
    calibration = run_calibration(Path(args.path)) if Path(args.path).is_dir() else None
    result = bench_models(targets, tuple(args.batches), tuple(args.threads) if args.threads else None, args.seconds,
                          arch=args.arch, calibration_x=calibration)
    for label, entry in result["models"].items():
        t = Table(title=f"{label}: median ms (IQR) per forward pass")
        cols = sorted({(r["threads"], r["batch"]) for r in entry["rows"]})
        t.add_column("variant")
        for th, bt in cols:
            t.add_column(f"b={bt} t={th}", justify="right")
        for variant in dict.fromkeys(r["variant"] for r in entry["rows"]):
            cells = {(r["threads"], r["batch"]): f"{r['median_ms']:.3f} ({r['iqr_ms']:.3f})" for r in entry["rows"]
                     if r["variant"] == variant}
            t.add_row(variant, *[cells.get(c, "-") for c in cols])
        out.print(t)
        out.print(f"MACs per image: dense {entry['macs']['dense']:,}, on nonzero weights {entry['macs']['effective']:,}, "
                  f"slimmed {entry['macs']['slimmed']:,}", highlight=False)
        for line in entry["verdicts"]:
            out.print(f"- {line}", markup=False, highlight=False)
    if out_json is not None:  # after printing: what was measured is shown even where it cannot be saved
        from .core.atomic import write_text_atomic

        write_text_atomic(out_json, json.dumps(result, indent=1))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from .commands.sensitivity import LADDER, run_sensitivity
    from .core.paths import default_out_dir

    cfg = _base_config(args, ("model_file", "ladder"))
    out_dir = Path(cfg.out) if cfg.out else default_out_dir("sensitivity")
    with RichObserver(_progress(transient=True)).shown() as observer:
        result = run_sensitivity(cfg, args.model_file, tuple(args.ladder or LADDER), observer, out_dir)
    ladder = result["ladder"]
    t = Table(title=f"Validation accuracy drop (points) with one group pruned; base {result['base_accuracy']:.2f}% "
                    f"on {result['validation_examples']} held-out images")
    for col in ("group", "channels", *(f"{r:g}" for r in ladder), "chosen"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for g in result["groups"]:
        drops = {r["ratio"]: f"{r['drop']:.2f}" for r in result["rows"] if r["group"] == g["group"]}
        t.add_row(g["group"], str(g["channels"]), *(drops.get(r, "-") for r in ladder),
                  f"{result['chosen'][g['group']]:g}")
    out.print(t)
    out.print(f"--prune-ratios {result['prune_ratios_flag']}  (each group's largest ratio within --max-drop "
              f"{result['max_drop']:g} points, pruned alone)", markup=False, highlight=False)
    err.print(f"[bold]Done.[/bold] Results in {out_dir} (sensitivity.json, sensitivity.csv, sensitivity.png)")
    return 0


# study settings that compress has no use for (it trains nothing from scratch and prunes by budget): given as flags,
# they are refused rather than silently ignored (a config file such as the strong recipe may still hold them)
NOT_COMPRESS = ("train.epochs", "train.lr", "train.lr_decay_epoch", "train.lr_decay_factor", "train.warmup_epochs",
                "train.stack_models", "mixup.alpha", "prune.conv_amount", "prune.fc_amount", "prune.sparsity",
                "prune.scope", "prune.method", "prune.ratios", "prune.schedule", "prune.finetune_mixup",
                "distill.teacher", "bench.onnx", "bench.min_run_time", "data.cv_fold", "data.cv_folds")
COMPRESS_FLAGS = ("target_macs", "target_params", "target_bytes", "target_latency", "format", "bench_batch",
                  "bench_threads", "mixup_alpha", "distill.enabled")


def cmd_compress(args: argparse.Namespace) -> int:
    from .core.paths import default_out_dir
    from .explore.compress import compress_spec, run_compress

    table: dict = {}
    if args.config:  # the [compress] table of a config file (config.toml of an earlier run) holds this command's
        path = config_path(args.config)
        raw = read_toml(path, "config file")
        table = raw.pop("compress", {})
        layers = [(f"config file {path}", raw)]
    else:
        layers = []
    given = {k: getattr(args, k) for k in COMPRESS_FLAGS if getattr(args, k, None) is not None}
    spec = compress_spec({**table, **{k.replace("distill.enabled", "distill"): v for k, v in given.items()}},
                         f"config file {args.config} [compress]" if args.config else "flags")
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config") + COMPRESS_FLAGS}
    unused = [f.metadata["flag"] for key, f, _ in flag_fields() if key in flags and key in NOT_COMPRESS]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: not used by mixprune compress (it prunes to the --target-* budgets "
                          "and recovers with --finetune-epochs, --finetune-lr, --mixup-alpha); drop them")
    cfg = layered(layers, flags)
    out_dir = Path(cfg.out) if cfg.out else default_out_dir("compress")
    progress = _progress(transient=True)
    with RichObserver(progress).shown() as observer:
        result = run_compress(cfg, spec, out_dir, observer=observer)
    out.print((out_dir / "compress.md").read_text(encoding="utf-8").split("## Channels removed")[0], markup=False,
              highlight=False, soft_wrap=True)
    err.print(f"[bold]Done.[/bold] Results in {out_dir} (compress.md, report.html, results.json, one folder of files "
              "per target and seed)")
    missed = [t["label"] for t in result["targets"] if t.get("budget_met") is False]
    return 1 if missed else 0


def cmd_data(args: argparse.Namespace) -> int:
    from .core.config import DataConfig
    from .data.registry import download, load_dataset

    if args.data_command == "download":
        where = download(args.dataset, args.directory)
        out.print(f"{args.dataset} downloaded and verified in {where}")
    else:
        ds = load_dataset(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
        shape = "x".join(map(str, ds.shape))
        out.print(f"{args.dataset} verified in {ds.source}: {len(ds.train_y)} train, {len(ds.test_y)} test images, "
                  f"{shape}, {ds.num_classes} classes", markup=False, highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a C or ASCII locale cannot print "±": replace, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = build_parser().parse_args(argv)
    handlers = {"reproduce": cmd_reproduce, "sweep": cmd_sweep, "search": cmd_search, "bench": cmd_bench,
                "report": cmd_report, "sensitivity": cmd_sensitivity, "compress": cmd_compress, "data": cmd_data}
    try:
        return handlers[args.command](args)
    except MixpruneError as exc:
        err.print(f"mixprune: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # a path the system refuses (name too long, no permission, ...): one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"mixprune: error: {where}{exc.strerror or exc}; check the paths given on the command line",
                  markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("mixprune: interrupted; every model finished so far is saved in the output directory",
                  markup=False, highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
