"""Every output path of a study run, in one place.

    paths = RunPaths(Path("runs/reproduce-20261125-200000"))
    paths.results_json, paths.model_file("mixup_pruned", 0, "safetensors")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


def default_out_dir(prefix: str = "reproduce") -> Path:
    """runs/<prefix>-<local timestamp>, e.g. runs/reproduce-20261125-200000."""
    return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        """report.md as one self-contained page, figures embedded."""
        return self.root / "report.html"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def history_csv(self) -> Path:
        return self.root / "history.csv"

    @property
    def config_toml(self) -> Path:
        """The resolved config of the run, loadable with `mixprune reproduce --config`."""
        return self.root / "config.toml"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def model_file(self, name: str, seed: int, suffix: str) -> Path:
        """models/{name}-seed{seed}.{suffix}; suffix e.g. 'safetensors', 'fp16.safetensors', 'sparse.safetensors'."""
        return self.models_dir / f"{name}-seed{seed}.{suffix}"

    def model_files(self, name: str, seed: int) -> dict[str, Path]:
        """Every file written for one model, by suffix: {"safetensors": Path, "fp16.safetensors": Path, ...}."""
        prefix = f"{name}-seed{seed}."
        return {f.name[len(prefix):]: f for f in self.models_dir.glob(prefix + "*")}
