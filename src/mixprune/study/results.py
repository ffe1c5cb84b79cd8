"""One run's results: the typed Results object behind results.json (and history.csv), written and read here only.

    results = Results.start(cfg, environment, execution, data, design, output_dir)
    results.record("pruned", 0, metrics)          # per-seed metrics and the summary over seeds
    results.values("pruned", "test_accuracy")     # per seed, in seed order
    results.summary("pruned", "test_accuracy")    # {"mean", "std", "n"}
    results.save(paths, history_rows)             # atomic writes of results.json and history.csv
    results = Results.load(path)                  # OutputError (one line) unless a mixprune results.json
    Results.load_complete(path)                   # a finished run's results, or None

Every accuracy of a run is measured on one split, which `evaluated_on` names: "test", or "validation" where a
cross-validation fold of the training images stands in for it (the metric names say test_* either way, as
results.json always has). Fields are only ever added within a schema version, and readers treat added fields
as optional (e.g. layer_sparsity, reused_models, variants, evaluated_on).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.atomic import read_text_capped, write_text_atomic
from ..core.errors import OutputError
from ..core.paths import RunPaths
from ..data.idx import FASHION_MNIST
from .variants import Design, from_records

# results.json's format. Raised when a field is removed or changes meaning.
SCHEMA_VERSION = 1
HISTORY_COLUMNS = ["model", "seed", "phase", "epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds"]
MAX_RESULTS_BYTES = 1 << 28  # 256 MiB: a results.json of hundreds of seeds holds a few MB
FIELDS = ("schema_version", "complete", "output_dir", "config", "environment", "execution", "data", "variants",
          "models", "claims")  # results.json's top level, in its order


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mean, sample std (None for n = 1, or where a value is not finite: a model whose test loss overflowed) and n
    of each scalar metric; element-wise for per-class lists."""
    def stats(values: list[float]) -> dict[str, Any]:
        n = len(values)
        spread = n > 1 and all(math.isfinite(v) for v in values)
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if spread else None, "n": n}
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


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_history(paths: RunPaths) -> list[dict[str, Any]]:
    """history.csv's rows ([] where there is none); ValueError or OSError where it cannot be read."""
    if not paths.history_csv.is_file():
        return []
    return list(csv.DictReader(read_text_capped(paths.history_csv, 1 << 26).splitlines()))


@dataclass
class Results:
    """One run: its config (as results.json holds it), machine, execution, data, variant table, and per variant the
    per-seed metrics and their summary; `claims` is the paper's audit where the run is the paper's study."""
    config: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"seeds": {seed: metrics}, "summary"}
    claims: list[dict[str, Any]] | None = None  # set when the run completes
    output_dir: str = ""
    complete: bool = False
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def start(cls, config: dict[str, Any], environment: dict[str, Any], execution: dict[str, Any],
              data: dict[str, Any], design: Design, output_dir: str) -> Results:
        """An empty record of a run about to train: every variant of the design without seeds yet."""
        return cls(config, environment, execution, data, design.as_records(),
                   {n: {"seeds": {}, "summary": {}} for n in design.names}, output_dir=output_dir)

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def design(self) -> Design:
        """The variant table the run was written with (the paper's where results.json has none)."""
        return from_records(self.variants)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def seeds_run(self) -> list[int]:
        """The seeds the run's config asks for."""
        return list(self.config["seeds"])

    @property
    def evaluated_on(self) -> str:
        """The split every accuracy of the run was measured on: "test" or "validation"."""
        recorded = self.data.get("evaluated_on")
        if recorded:
            return recorded
        return "validation" if self.config.get("data", {}).get("cv_fold", -1) >= 0 else "test"

    @property
    def evaluation_examples(self) -> int:
        """How many images the accuracies were measured on."""
        return int(self.data["test_examples"])

    @property
    def classes(self) -> list[str]:
        """The run's class names (FashionMNIST's for results written before datasets were configurable)."""
        return list(self.data.get("classes") or FASHION_MNIST.classes)

    def seeds(self, name: str) -> dict[int, dict[str, Any]]:
        """Per seed (in seed order), the metrics of variant `name`."""
        return {int(s): m for s, m in self.models[name]["seeds"].items()}

    def metrics(self, name: str, seed: int) -> dict[str, Any]:
        return self.models[name]["seeds"][str(seed)]

    def values(self, name: str, metric: str) -> list[Any]:
        """The metric of variant `name` per seed, in seed order, for the seeds that recorded it."""
        return [m[metric] for _, m in sorted(self.seeds(name).items()) if m.get(metric) is not None]

    def by_seed(self, name: str, metric: str) -> dict[int, Any]:
        """seed -> the metric of variant `name`, for the seeds that recorded it."""
        return {s: m[metric] for s, m in self.seeds(name).items() if m.get(metric) is not None}

    def summary(self, name: str, metric: str | None = None) -> Any:
        """The summary over seeds of one metric ({"mean", "std", "n"}; None where not recorded), or of all."""
        summary = self.models[name]["summary"]
        return summary if metric is None else summary.get(metric)

    # -- writing -------------------------------------------------------------------------------------------
    def record(self, name: str, seed: int, metrics: dict[str, Any]) -> None:
        """Store one model's metrics for one seed and refresh its summary over seeds."""
        entry = self.models[name]
        entry["seeds"][str(seed)] = metrics
        entry["seeds"] = dict(sorted(entry["seeds"].items(), key=lambda kv: int(kv[0])))
        entry["summary"] = summarize(entry["seeds"])

    def as_dict(self) -> dict[str, Any]:
        """What results.json holds, in its order (claims only once the run has them)."""
        out = {k: getattr(self, k) for k in FIELDS}
        if out["claims"] is None:
            del out["claims"]
        return out

    def save(self, paths: RunPaths, rows: list[dict[str, Any]]) -> None:
        """results.json and history.csv (one row per model, seed and epoch), each replaced atomically."""
        write_text_atomic(paths.results_json, json.dumps(self.as_dict(), indent=1))
        write_text_atomic(paths.history_csv, history_csv(rows))

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = "results.json") -> Results:
        """Results from results.json's content; OutputError where it is not of this schema or lacks a variant."""
        if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
            found = raw.get("schema_version") if isinstance(raw, dict) else None
            raise OutputError(f"{where} has schema_version {found!r}; this mixprune reads {SCHEMA_VERSION}: re-run the "
                              "study with this version, or use the mixprune that wrote it")
        if not isinstance(raw.get("config"), dict):
            raise OutputError(f"{where} has no config table; was the file edited?")
        try:
            names = from_records(raw.get("variants") or []).names
        except (TypeError, ValueError):
            raise OutputError(f"{where}: its 'variants' table is not one mixprune writes; was the file edited?") from None
        models = raw.get("models")
        missing = [n for n in names if not isinstance(models, dict) or not isinstance(models.get(n), dict)
                   or not isinstance(models[n].get("seeds"), dict)]
        if missing:
            raise OutputError(f"{where} lacks the results of {', '.join(missing)}; run the study again into a new "
                              "--out")
        known = {k: raw[k] for k in FIELDS if k in raw and k != "variants"}
        return cls(**known, variants=list(raw.get("variants") or []))

    @classmethod
    def load(cls, path: Path) -> Results:
        """A results.json of this schema version (plain JSON, never executed, at most MAX_RESULTS_BYTES);
        OutputError saying what is wrong otherwise."""
        try:
            raw = json.loads(read_text_capped(Path(path), MAX_RESULTS_BYTES))
        except FileNotFoundError:
            raise OutputError(f"{path} not found; pass the directory that `mixprune reproduce` wrote") from None
        except json.JSONDecodeError as exc:
            raise OutputError(f"{path} is not valid JSON ({exc})") from None
        except RecursionError:
            raise OutputError(f"{path} nests too deeply to be a results.json") from None
        except (ValueError, UnicodeDecodeError) as exc:  # too large (TooLarge), not UTF-8
            raise OutputError(f"{path} is not a results.json mixprune can read ({exc})") from None
        except OSError as exc:
            raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_dict(raw, path)

    @classmethod
    def load_complete(cls, path: Path) -> Results | None:
        """results.json at `path` if its run finished under this results format; None when it is absent,
        unreadable, interrupted, or written by a mixprune with another format."""
        try:
            results = cls.load(path)
        except OutputError:
            return None
        return results if results.complete else None
