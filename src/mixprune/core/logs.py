"""Quieting the libraries' chatter for one block (exporters and quantizers log hints at INFO/WARNING)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Raise one logger to ERROR for the block, then restore it."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
