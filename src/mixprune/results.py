"""The results store: one run's results.json (and history.csv, config.toml), written and read here only.

    results = new_results(...)                    # the dict that results.json holds
    record(results, "pruned", 0, metrics)         # per-seed metrics and the summary over seeds
    write_results(results, rows, paths)           # atomic writes of results.json and history.csv
    results = read_results(path)                  # OutputError (one line) unless a mixprune results.json
    complete_results(path)                        # a finished run's results, or None

Fields are only ever added within a schema version, and readers treat added fields as optional
(e.g. layer_sparsity, reused_models, variants).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from .atomic import read_text_capped, write_text_atomic
from .config import StudyConfig, to_dict
from .errors import OutputError
from .paths import RunPaths

# results.json's format. Raised when a field is removed or changes meaning.
SCHEMA_VERSION = 1
HISTORY_COLUMNS = ["model", "seed", "phase", "epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds"]


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mean, sample std (None for n = 1) and n of each scalar metric; element-wise for per-class lists."""
    def stats(values: list[float]) -> dict[str, Any]:
        n = len(values)
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else None, "n": n}
    seeds = list(per_seed.values())
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for m in seeds for k in m))
    for key in keys:
        vals = [m[key] for m in seeds if key in m and m[key] is not None]
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = stats([float(v) for v in vals])
        elif key.startswith("per_class_") and vals:
            per_class = [stats([r[i] for r in vals]) for i in range(len(vals[0]))]
            out[key] = {"mean": [s["mean"] for s in per_class], "std": [s["std"] for s in per_class], "n": len(vals)}
    return out


def record(results: dict[str, Any], name: str, seed: int, metrics: dict[str, Any]) -> None:
    """Store one model's metrics for one seed and refresh its summary over seeds."""
    entry = results["models"][name]
    entry["seeds"][str(seed)] = metrics
    entry["seeds"] = dict(sorted(entry["seeds"].items(), key=lambda kv: int(kv[0])))
    entry["summary"] = summarize(entry["seeds"])


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(results: dict[str, Any], rows: list[dict[str, Any]], paths: RunPaths) -> None:
    """results.json and history.csv (one row per model, seed and epoch), each replaced atomically."""
    write_text_atomic(paths.results_json, json.dumps(results, indent=1))
    write_text_atomic(paths.history_csv, history_csv(rows))


def toml_text(cfg: StudyConfig) -> str:
    """The resolved config as TOML (None values are left out: they mean 'default')."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else str(v)
        # ints and strings: JSON's quoting is valid TOML, as long as non-ASCII characters stay themselves (JSON's
        # \\ud83d surrogate escapes for an emoji are not valid TOML)
        return json.dumps(v, ensure_ascii=False)
    raw = to_dict(cfg)
    lines = ["# mixprune resolved config; reuse with: mixprune reproduce --config config.toml"]
    lines += [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict) and v is not None]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {value(v)}" for k, v in body.items() if v is not None]
    return "\n".join(lines) + "\n"


def class_names(results: dict[str, Any]) -> list[str]:
    """The run's class names (FashionMNIST's for results written before datasets were configurable)."""
    from .data.idx import FASHION_MNIST

    return list(results.get("data", {}).get("classes") or FASHION_MNIST.classes)


MAX_RESULTS_BYTES = 1 << 28  # 256 MiB: a results.json of hundreds of seeds holds a few MB


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json written by run_study (plain JSON, never executed, at most MAX_RESULTS_BYTES)."""
    try:
        return json.loads(read_text_capped(Path(path), MAX_RESULTS_BYTES))
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be a results.json") from None


def read_results(path: Path) -> dict[str, Any]:
    """A results.json of this schema version; OutputError saying what is wrong otherwise."""
    try:
        results = load_results(path)
    except FileNotFoundError:
        raise OutputError(f"{path} not found; pass the directory that `mixprune reproduce` wrote") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path} is not valid JSON ({exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # too large (TooLarge), nested too deeply, not UTF-8
        raise OutputError(f"{path} is not a results.json mixprune can read ({exc})") from None
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
        found = results.get("schema_version") if isinstance(results, dict) else None
        raise OutputError(f"{path} has schema_version {found!r}; this mixprune reads {SCHEMA_VERSION}: re-run the "
                          "study with this version, or use the mixprune that wrote it")
    from .variants import from_results

    try:
        names = from_results(results).names
    except (TypeError, ValueError):
        raise OutputError(f"{path}: its 'variants' table is not one mixprune writes; was the file edited?") from None
    models = results.get("models")
    missing = [n for n in names if not isinstance(models, dict) or not isinstance(models.get(n), dict)
               or not isinstance(models[n].get("seeds"), dict)]
    if missing:
        raise OutputError(f"{path} lacks the results of {', '.join(missing)}; run the study again into a new --out")
    return results


def complete_results(path: Path) -> dict[str, Any] | None:
    """results.json at `path` if its run finished under this results format; None when it is absent,
    unreadable, interrupted, or written by a mixprune with another format."""
    try:
        results = read_results(path)
    except OutputError:
        return None
    return results if results.get("complete") else None
