"""A site's lifetime privacy account for one data file: the ledger of every release ever made from
it, the cap the site set, and an audit trail of what the site refused and what it scored.

The account is keyed by the file's content hash, under ``STATE_DIR/accounts/HASH/``: a renamed
copy of the same extract shares its account, and a new extract starts its own (an extract that
repeats patients of an earlier one is the data steward's to budget for; docs/threat-model.md).
Every run's own state (model states, saved replies) lives inside the account, in ``runs/RUN/``,
so nothing a run does escapes the account's ledger.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.errors import BudgetExceededError, InputError
from common.fileio import atomic_write_text
from common.privacy.accountant import Entry, PrivacyAccountant
from common.privacy.budget import accountant_of
from common.privacy.ledger import Ledger, LedgerEntry

ACCOUNTS = "accounts"
LEDGER, EVENTS, ABOUT = "ledger.jsonl", "events.jsonl", "account.json"


def file_sha256(path: Path) -> str:
    """The content hash of a data file (cached by path, size and modification time)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the site's data file ({exc.strerror}); fix "
                         f"data-path in the node config.") from None
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Event:
    """Something the site did that spent nothing but belongs in the audit: a refusal, an
    announced release, a scored release."""

    time: float
    kind: str
    run: str
    detail: str


class SiteAccount:
    """The account of the data file at ``data_path`` in the site's ``state_dir``, capped at
    ``epsilon_cap`` (lifetime epsilon at the site's ``delta``)."""

    def __init__(self, state_dir: Path, data_path: Path, epsilon_cap: float, delta: float) -> None:
        self.data_sha256 = file_sha256(data_path)
        self.folder = Path(state_dir) / ACCOUNTS / self.data_sha256[:16]
        self.epsilon_cap, self.delta = float(epsilon_cap), float(delta)
        about = {"data_sha256": self.data_sha256, "data_file": str(data_path),
                 "epsilon_cap": self.epsilon_cap, "delta": self.delta}
        if read_about(self.folder) != about:  # the cap the steward set now, for ledger show
            atomic_write_text(self.folder / ABOUT, json.dumps(about, indent=2) + "\n")

    def ledger(self, run: str) -> Ledger:
        """The account's ledger as ``run`` charges it: entries stamped with the run, and every
        charge checked against the lifetime cap."""
        return Ledger(self.folder / LEDGER, run=run, epsilon_cap=self.epsilon_cap)

    def entries(self) -> list[LedgerEntry]:
        return Ledger(self.folder / LEDGER).read()

    def spent(self) -> float:
        """Lifetime epsilon of every release at the site's delta."""
        return accountant_of(self.entries()).epsilon(self.delta)

    def check_run(self, run: str, planned: Sequence[Entry]) -> None:
        """Refuse a run whose planned releases, composed with every release of the other runs,
        would pass the cap: before anything of it is computed (its own earlier releases, after
        a restart, are part of ``planned``). The refusal is in the audit trail."""
        others = accountant_of(e for e in self.entries() if e.run != run)
        after = PrivacyAccountant([*others.history, *planned]).epsilon(self.delta)
        if after > self.epsilon_cap * (1 + 1e-9):
            detail = (f"the run would bring the lifetime spend to epsilon {after:.4g}, over the cap "
                      f"{self.epsilon_cap:g} (spent by other runs: {others.epsilon(self.delta):.4g})")
            self.record("refused", run, detail)
            raise BudgetExceededError(f"{detail}; the site refuses it. Fix: the data steward may "
                                      f"raise epsilon-total knowing what was released (fedsynth "
                                      f"ledger show), or plan a smaller run.")

    def run_folder(self, run: str) -> Path:
        return self.folder / "runs" / run

    def record(self, kind: str, run: str, detail: str) -> None:
        """Append an event to the audit trail (atomically, like the ledger)."""
        path = self.folder / EVENTS
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        event = {"time": time.time(), "kind": kind, "run": run, "detail": detail}
        atomic_write_text(path, old + json.dumps(event, sort_keys=True) + "\n")


def read_about(folder: Path) -> dict[str, Any] | None:
    path = folder / ABOUT
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_events(folder: Path) -> list[Event]:
    path = folder / EVENTS
    if not path.exists():
        return []
    return [Event(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def account_folders(state_dir: Path) -> list[Path]:
    """Every account in a site's state folder (one per data file it ever trained on)."""
    root = Path(state_dir) / ACCOUNTS
    return sorted(p for p in root.iterdir() if (p / ABOUT).exists()) if root.is_dir() else []


def describe(state_dir: Path) -> list[str]:
    """``fedsynth ledger show``: per account, every model's spend in every run (when, how many
    releases, its epsilon), the refusals and scored releases, the lifetime total and what is
    left under the cap."""
    folders = account_folders(state_dir)
    if not folders:
        raise InputError(f"{state_dir}: no privacy account here (a site's state-dir holds "
                         f"accounts/HASH/ once it has trained); pass the SuperNode's state-dir.")
    lines: list[str] = []
    for folder in folders:
        about = read_about(folder)
        entries = Ledger(folder / LEDGER).read()
        spent = accountant_of(entries).epsilon(about["delta"])
        lines += [f"data file {about['data_file']} (sha256 {about['data_sha256'][:16]}): "
                  f"cap epsilon-total {about['epsilon_cap']:g}, delta {about['delta']:g}",
                  f"  {'first release':19}  {'run':16} {'model':20} {'releases':>8} {'epsilon':>8}"]
        groups: dict[tuple[str, str], list[LedgerEntry]] = {}
        for entry in entries:
            groups.setdefault((entry.run, entry.model), []).append(entry)
        for (run, model), group in groups.items():
            lines.append(f"  {_when(group[0].time):19}  {run or '-':16} {model:20} {len(group):>8} "
                         f"{group[-1].epsilon_after:>8.3f}")
        lines += [f"  {_when(e.time):19}  {e.run or '-':16} {e.kind}: {e.detail}"
                  for e in read_events(folder) if e.kind in ("refused", "scored")]
        lines.append(f"  lifetime: epsilon {spent:.3f} spent of {about['epsilon_cap']:g}, "
                     f"{max(about['epsilon_cap'] - spent, 0.0):.3f} left")
    return lines


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
