"""The public entry point that ties the study and its report together.

    from mixprune import StudyConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2)))   # writes results.json, report.md, history.csv, models/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import StudyConfig
from .data import Dataset
from .paths import RunPaths
from .report import write_report
from .study import Observer, run_study


def reproduce(cfg: StudyConfig | None = None, dataset: Dataset | None = None,
              observer: Observer | None = None) -> dict[str, Any]:
    """Run the paper's four-model study and write its report; returns the content of results.json."""
    results = run_study(cfg or StudyConfig(), dataset=dataset, observer=observer)
    write_report(results, RunPaths(Path(results["output_dir"])))
    return results
