"""Sweeps: the study over a grid of config values, one run directory per cell, resumable.

    grid = parse_grid(["mixup.alpha=0.2,1.0", "prune.fc_amount=0.5,0.9"])   # typed from the dataclasses
    summary = run_sweep(base_cfg, grid, Path("runs/alpha-x-sparsity"))

Each cell is a complete study (all seeds, all variants, with its report) written to
`OUT/runs/<cell-name>-<hash of its resolved config>/` by the cell runner (cells.py). Models that several cells
share (the Baseline of every cell; the Pruned model of every alpha) are trained and measured once and reused
from `OUT/cache` (study/cache.py); each cell's results.json lists what it reused. A cell whose results.json
says `"complete": true` is skipped when the sweep runs again; a cell that was interrupted resumes with the
models it finished. A cell whose training diverges (NaN/inf loss) is recorded as failed with the reason, and
the other cells still run. `OUT/sweep.json` and `OUT/sweep.md` list every cell with the mean and 95% CI of
each model's accuracy, and OUT/report.md compares the cells (reporting/compare.py).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import typing
from pathlib import Path
from typing import Any

from ..core.atomic import ensure_dir, read_text_capped, write_text_atomic
from ..core.config import (
    PLACEMENT_FIELDS,
    SECTIONS,
    StudyConfig,
    check_names,
    identity,
    read_toml,
    to_dict,
    what_it_computes,
    with_overrides,
)
from ..core.errors import ConfigError
from ..core.outputs import check_location, claimed
from ..data.dataset import Dataset
from ..data.registry import load_dataset
from ..reporting.compare import find_runs, write_collection_report
from ..reporting.stats import format_ci, mean_ci
from ..study.backends import backend_session
from ..study.plan import preflight
from .cells import run_cell


def _field_type(key: str) -> Any:
    section, _, name = key.rpartition(".")
    if section and section not in SECTIONS:
        raise ConfigError(f"--grid {key}: unknown section {section!r}; known: {', '.join(SECTIONS)}")
    hints = typing.get_type_hints(StudyConfig)
    cls_hints = typing.get_type_hints(hints[section]) if section else hints
    if name not in cls_hints or name in SECTIONS or name in ("seeds", *PLACEMENT_FIELDS):
        raise ConfigError(f"--grid {key}: not a field that can be swept")
    hint = cls_hints[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _convert(key: str, text: str, kind: Any) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return kind(text)
    except ValueError:
        raise ConfigError(f"--grid {key}: {text!r} is not a valid {kind.__name__}") from None


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['train.epochs=5,10', ...] -> {'train.epochs': [5, 10]}; values typed from the config (never evaluated)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected FIELD=V1,V2,... such as mixup.alpha=0.2,1.0")
        kind = _field_type(key.strip())
        grid[key.strip()] = [_convert(key, v.strip(), kind) for v in values.split(",")]
    return grid


MAX_LABEL = 120  # characters of a cell directory's readable part
STUDIES = Path(__file__).parent.parent / "studies"  # bundled study files: `--study NAME`


def bundled_studies() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.toml"))


def load_study(name_or_path: str) -> tuple[tuple[str, dict[str, Any]], dict[str, list[Any]]]:
    """A study file: TOML with the config's fields and a [grid] table of "section.field" = [values]; returns its
    settings as a config layer (where, settings: core.config.layered checks them with the layers above) and the
    grid. A bundled study is named without a path (see bundled_studies()). Parsed, never evaluated."""
    path = STUDIES / f"{name_or_path}.toml" if name_or_path in bundled_studies() else Path(name_or_path)
    raw = read_toml(path, "study file", f"; bundled studies: {', '.join(bundled_studies())}")
    grid_raw = raw.pop("grid", {})
    if not isinstance(grid_raw, dict):
        raise ConfigError(f"--study {name_or_path}: [grid] must be a table of \"section.field\" = [values]")
    grid = {}
    for key, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--study {name_or_path}: grid {key} must be a non-empty list, got {values!r}")
        kind = _field_type(key)
        grid[key] = [_convert(key, str(v), kind) for v in values]
    check_names(raw, f"study file {path}")
    return (f"study file {path}", raw), grid


def cells(base: StudyConfig, grid: dict[str, list[Any]]) -> list[tuple[str, StudyConfig]]:
    """(directory name, config) per grid point; every config is validated before anything runs."""
    out = []
    for combo in itertools.product(*grid.values()):
        overrides = dict(zip(grid, combo))
        cfg = with_overrides(base, {**overrides, "out": None})
        # the label says what the cell is; the digest is its identity, so a long label is cut (directory names
        # have at most 255 bytes on common file systems)
        label = ("_".join(f"{k.rpartition('.')[2]}={v}" for k, v in overrides.items()) or "base")[:MAX_LABEL]
        ident = what_it_computes(identity(cfg))
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
        out.append((f"{label}-{digest}".replace("/", "-"), cfg))
    return out


def run_sweep(base: StudyConfig, grid: dict[str, list[Any]], out: Path, dataset: Dataset | None = None,
              observer: Any = None) -> dict[str, Any]:
    """Run every cell not yet complete under out/runs/; write out/sweep.json and out/sweep.md; return the former.
    Every cell is checked before OUT is created; OUT is claimed by the output rule (core.outputs): a sweep of
    the same grid and base config goes on where it stopped, anything else is refused (or replaced whole with
    --overwrite), and a second sweep into it is refused while this one runs."""
    todo = cells(base, grid)
    if dataset is None and not any(k.startswith("data.") for k in grid):
        dataset = load_dataset(base.data)  # once for every cell
    checked = set()
    for _, cfg in todo:  # bad data or a network that cannot run fails here, before OUT is created
        what = json.dumps([to_dict(cfg.data), to_dict(cfg.model), to_dict(cfg.prune)], sort_keys=True)
        if what not in checked:
            preflight(cfg, dataset)
            checked.add(what)
    check_location(out, "--out")
    summary: dict[str, Any] = {"grid": grid, "base": to_dict(base), "cells": []}
    with backend_session(base), claimed(out, "sweep", functools.partial(_same, summary=summary),
                                        base.overwrite) as where:
        return _run_cells(base, grid, todo, where, dataset, observer, summary)


def _identity(summary: dict[str, Any]) -> str:
    """What a sweep computes: its grid and base config, where outputs go aside."""
    base = what_it_computes(summary["base"])
    return json.dumps([summary["grid"], base], sort_keys=True)


def _same(root: Path, summary: dict[str, Any]) -> bool | None:
    """Whether root holds a sweep of the same grid and base (it goes on), another sweep, or no sweep (None)."""
    try:
        earlier = json.loads(read_text_capped(root / "sweep.json", 1 << 26))
        return _identity(earlier) == _identity(summary)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return False


def _run_cells(base: StudyConfig, grid: dict[str, list[Any]], todo: list[tuple[str, StudyConfig]], out: Path,
               dataset: Dataset | None, observer: Any, summary: dict[str, Any]) -> dict[str, Any]:
    ensure_dir(out / "runs")
    write_text_atomic(out / "sweep.json", json.dumps(summary, indent=1))  # says whose OUT this is from the start
    for name, cfg in todo:
        done = run_cell(cfg, out / "runs" / name, base.cache_dir or str(out / "cache"), dataset, observer, report=True)
        cell: dict[str, Any] = {"name": name, "values": {k: _get(cfg, k) for k in grid}, "skipped": done.earlier}
        if done.failed is not None:
            cell["failed"] = done.failed
        cell["seconds"] = done.seconds
        if done.results is not None:
            cell["accuracy"] = {m: mean_ci([float(v) for v in done.results.values(m, "test_accuracy")])
                                for m in done.results.names}
        summary["cells"].append(cell)
        write_text_atomic(out / "sweep.json", json.dumps(summary, indent=1))
    write_text_atomic(out / "sweep.md", render_sweep(summary))
    runs = find_runs(out)
    if runs:
        write_collection_report(out, runs)  # report.md / report.html / plots over the cells
    return summary


def _get(cfg: StudyConfig, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def render_sweep(summary: dict[str, Any]) -> str:
    keys = list(summary["grid"])
    models = next((list(c["accuracy"]) for c in summary["cells"] if "accuracy" in c), [])
    lines = ["# mixprune sweep", "", "Test accuracy (%), mean [95% CI] over seeds, per cell.", "",
             "| " + " | ".join(keys + list(models)) + " |", "|" + "---|" * (len(keys) + len(models))]
    for c in summary["cells"]:
        if "failed" in c:
            lines.append("| " + " | ".join([str(c["values"][k]) for k in keys] + [f"failed: {c['failed']}"] +
                                           [""] * (len(models) - 1)) + " |")
            continue
        accs = [format_ci(c["accuracy"][m]) for m in models]
        lines.append("| " + " | ".join([str(c["values"][k]) for k in keys] + accs) + " |")
    return "\n".join(lines) + "\n"
