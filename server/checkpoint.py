"""The run's state after every round, so a restarted coordinator continues without repeating one."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.fileio import atomic_write_text

STATE, WEIGHTS = "checkpoint.json", "checkpoint-weights.npz"


@dataclass
class RunState:
    rounds_done: int = 0
    label_counts: dict[str, list[float]] = field(default_factory=dict)  # DP, per site name
    site_epsilon: dict[str, float] = field(default_factory=dict)
    label_tables: dict[str, list[float]] = field(default_factory=dict)  # DP, per site name
    dropped: list[str] = field(default_factory=list)  # "round r: site: reason"
    round_seconds: list[float] = field(default_factory=list)  # wall time of each round, retries included


def save_checkpoint(folder: Path, state: RunState, weights: list[np.ndarray]) -> None:
    """Weights first, then the state that points at them: a crash in between repeats no round."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS}.tmp.npz"
    np.savez(tmp, *weights)
    tmp.replace(folder / WEIGHTS)
    atomic_write_text(folder / STATE, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")


def load_checkpoint(folder: Path) -> tuple[RunState, list[np.ndarray]] | None:
    if not (folder / STATE).exists():
        return None
    state = RunState(**json.loads((folder / STATE).read_text(encoding="utf-8")))
    saved = np.load(folder / WEIGHTS)
    return state, [saved[f"arr_{i}"] for i in range(len(saved.files))]
