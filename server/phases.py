"""Wall time per phase of a run: one line on the log as each phase ends (what a person watching
reads), and the table in report.json's ``run.phases`` (where a slow run is read from)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Phase:
    name: str
    detail: str = ""  # set inside the block: what the phase did ("5 sites", "1,000 records")


class Phases:
    """Named phases in the order they ran; a name seen twice adds up (a retried phase)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[Phase]:
        phase, began = Phase(name), time.monotonic()
        yield phase
        self.add(name, time.monotonic() - began, phase.detail)

    def add(self, name: str, seconds: float, detail: str = "") -> None:
        """A phase that ended (or one timed elsewhere: the simulation engine's start and stop)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.log.info("%-30s %7.1f s%s", name, seconds, f"  {detail}" if detail else "")

    def table(self) -> dict[str, float]:
        return {name: round(seconds, 1) for name, seconds in self.seconds.items()}
