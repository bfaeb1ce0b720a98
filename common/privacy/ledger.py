"""The durable record of every privacy spend from one data file, for the data steward to audit.

A JSON-lines file; each spend is written (atomically, fsynced) before the release it pays for
exists, so a crash can only over-count, never under-count. One file holds every release ever made
from the data: all runs, models and baselines (``common.privacy.account`` keeps it per data file).
A ``Ledger`` object is that file as one run writes to it: its entries are stamped with ``run``,
and with ``epsilon_cap`` set every charge must keep the composition of all entries, of every run,
within the cap. ``epsilon_from_ledger`` recomputes epsilon from the entries alone with Opacus'
RDP analysis, independently of any accountant object, so the two can be cross-checked.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from opacus.accountants.analysis import rdp as rdp_analysis

from common.errors import InputError
from common.fileio import atomic_write_text
from common.privacy.accountant import ORDERS


@dataclass(frozen=True)
class LedgerEntry:
    """One spend: ``steps`` sampled-Gaussian releases of ``model``."""

    time: float
    model: str
    steps: int
    sample_rate: float
    noise_multiplier: float
    epsilon_after: float
    delta: float
    round: int | None = None
    note: str = ""
    run: str = ""  # the run that made the release ("" outside a federation)


class Ledger:
    """Append-only spends from one data file; ``path=None`` keeps them in memory (tests,
    benchmarks). ``run`` names the run this object charges for; ``epsilon_cap`` is the data
    holder's lifetime cap over every entry (None: no cap beyond each model's own budget)."""

    def __init__(self, path: str | Path | None = None, *, run: str = "",
                 epsilon_cap: float | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.run = run
        self.epsilon_cap = epsilon_cap
        self._memory: list[LedgerEntry] = []

    def append(self, entry: LedgerEntry) -> None:
        if self.path is None:
            self._memory.append(entry)
            return
        old = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        atomic_write_text(self.path, old + json.dumps(asdict(entry), sort_keys=True) + "\n")
        _fsync_dir(self.path.parent)

    def read(self, model: str | None = None, run: str | None = None) -> list[LedgerEntry]:
        """All entries, or those of one model and/or one run, oldest first."""
        entries = self._memory if self.path is None else self._read_file()
        return [e for e in entries if (model is None or e.model == model)
                and (run is None or e.run == run)]

    def _read_file(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entries.append(LedgerEntry(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(f"{self.path}: line {number} is not a ledger entry ({exc}). The "
                                 f"ledger is an audit record: restore it from a backup, never "
                                 f"edit it.") from None
        return entries


def new_entry(model: str, noise_multiplier: float, sample_rate: float, steps: int,
              epsilon_after: float, delta: float, round: int | None = None,
              note: str = "", run: str = "") -> LedgerEntry:
    return LedgerEntry(time=time.time(), model=model, steps=int(steps),
                       sample_rate=float(sample_rate), noise_multiplier=float(noise_multiplier),
                       epsilon_after=float(epsilon_after), delta=float(delta), round=round,
                       note=note, run=run)


def epsilon_from_ledger(entries: list[LedgerEntry], delta: float) -> float:
    """Epsilon of all ``entries`` composed, straight from Opacus' RDP analysis functions."""
    rdp = np.zeros(len(ORDERS))
    for e in entries:
        rdp = rdp + rdp_analysis.compute_rdp(q=e.sample_rate, noise_multiplier=e.noise_multiplier,
                                             steps=e.steps, orders=ORDERS)
    if not rdp.any():
        return 0.0
    eps, _ = rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


def _fsync_dir(folder: Path) -> None:
    """Make the rename that replaced the ledger durable too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
