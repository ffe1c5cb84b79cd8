"""One cell of a sweep or one candidate of a search: a study into its own run directory, skipped where an
earlier run completed it, recorded as failed (the others still run) where it fails in a way that is the cell's
own (its training diverged, say).

    cell = run_cell(cfg, out / "runs" / name, cache_dir, dataset, observer, report=True)
    cell.results, cell.earlier, cell.failed, cell.seconds
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import StudyConfig, with_overrides
from ..core.paths import RunPaths
from ..data.dataset import Dataset
from ..reporting.audit import add_claims
from ..reporting.publish import write_report
from ..study.results import Results
from ..study.run import run_study
from ..train.engine import TrainingDiverged


@dataclass(frozen=True)
class Cell:
    """What became of one cell: its results (None where it failed or did not start), whether an earlier run had
    completed it, why it failed, and the seconds it took here."""
    results: Results | None
    earlier: bool = False
    failed: str | None = None
    seconds: float = 0.0


def run_cell(cfg: StudyConfig, run_dir: Path, cache_dir: str, dataset: Dataset | None, observer: Any,
             report: bool, tolerate: tuple[type[Exception], ...] = (TrainingDiverged,), start: bool = True) -> Cell:
    """The study of `cfg` in run_dir with the shared cache (study.run_study directly, the paper's claims audit as its
    finish step; with `report`, its report.md, report.html and figures too), unless an earlier run completed it
    there; not started at all where `start` is false. An error of a kind in `tolerate` fails this cell only."""
    started = time.perf_counter()
    results = Results.load_complete(run_dir / "results.json")
    if results is not None or not start:
        return Cell(results, earlier=results is not None, seconds=round(time.perf_counter() - started, 1))
    try:
        results = run_study(with_overrides(cfg, {"out": str(run_dir), "cache_dir": cache_dir}), dataset=dataset,
                            observer=observer, finish=add_claims)
        if report:
            write_report(results, RunPaths(run_dir))
    except tolerate as exc:  # this cell failed; the others still run (and a re-run retries it)
        return Cell(None, failed=str(exc), seconds=round(time.perf_counter() - started, 1))
    return Cell(results, seconds=round(time.perf_counter() - started, 1))
