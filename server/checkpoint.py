"""The run's state after every stage step, so a restarted coordinator continues without repeating
one: each stage's coordinator state (its arrays in ``STAGE.npz``, written before the state file
that counts its steps), the sites' FedAvg weights, and the evaluations received so far.

Sites are recorded by name (unique in a run: the handshake refuses clashes), so a site whose
SuperNode came back with a new node id is still recognised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_text

STATE = "checkpoint.json"


@dataclass
class RunState:
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage name -> its values
    weights: dict[str, float] = field(default_factory=dict)  # site -> DP record count (FedAvg weight)
    dropped: list[str] = field(default_factory=list)  # "STAGE step S: site: reason"
    step_seconds: dict[str, list[float]] = field(default_factory=dict)  # stage -> each step's wall time
    release_sha256: str = ""  # the release announced to the sites
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # site -> its figures

    def steps_done(self, stage: str) -> int:
        return int(self.stages.get(stage, {}).get("step", 0))


def save_checkpoint(folder: Path, state: RunState, stage: str | None = None,
                    arrays: dict[str, np.ndarray] | None = None) -> None:
    """``stage``'s arrays first, then the state that points at them: a crash in between repeats
    no step."""
    folder.mkdir(parents=True, exist_ok=True)
    if stage is not None:
        tmp = folder / f".{stage}.tmp.npz"
        np.savez(tmp, **(arrays or {}))
        tmp.replace(folder / f"{stage}.npz")
    atomic_write_text(folder / STATE, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")


def load_checkpoint(folder: Path) -> RunState | None:
    """The run's state, or None before the first checkpoint."""
    if not (folder / STATE).exists():
        return None
    return RunState(**json.loads((folder / STATE).read_text(encoding="utf-8")))


def load_arrays(folder: Path, stage: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{stage}.npz") as saved:
        return {name: saved[name] for name in saved.files}
