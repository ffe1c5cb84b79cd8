"""Progress events of a study: the CLI's progress display subclasses Observer; worker processes and Ray tasks
forward each call to the driver's observer as it happens."""

from __future__ import annotations

from typing import Any


class Observer:
    """Receives progress events. Methods do nothing here."""

    def phase_start(self, model: str, seed: int, epochs: int) -> None: ...

    def epoch_end(self, model: str, seed: int, record: Any) -> None: ...

    def model_done(self, model: str, seed: int, metrics: dict) -> None: ...
