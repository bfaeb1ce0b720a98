"""The run's state after every round, so a restarted coordinator continues without repeating one.

One state file for the run, one weights file per part (the tabular generator, the narrative
adapters), each written before the state that counts its rounds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.fileio import atomic_write_text

STATE = "checkpoint.json"
WEIGHTS = {"tabular": "checkpoint-weights.npz", "text": "checkpoint-text-weights.npz"}


@dataclass
class RunState:
    rounds_done: int = 0
    label_counts: dict[str, list[float]] = field(default_factory=dict)  # DP, per site name
    site_epsilon: dict[str, float] = field(default_factory=dict)
    label_tables: dict[str, list[float]] = field(default_factory=dict)  # DP, per site name
    dropped: list[str] = field(default_factory=list)  # "round r: site: reason"
    round_seconds: list[float] = field(default_factory=list)  # wall time of each round, retries included
    text_rounds_done: int = 0
    text_epsilon: dict[str, float] = field(default_factory=dict)  # each site's narrative spend


def save_checkpoint(folder: Path, state: RunState, weights: list[np.ndarray],
                    part: str = "tabular") -> None:
    """Weights first, then the state that points at them: a crash in between repeats no round."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS[part]}.tmp.npz"
    np.savez(tmp, *weights)
    tmp.replace(folder / WEIGHTS[part])
    atomic_write_text(folder / STATE, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")


def load_checkpoint(folder: Path) -> tuple[RunState, list[np.ndarray]] | None:
    """The run's state and the tabular weights, or None before the first checkpoint."""
    if not (folder / STATE).exists():
        return None
    return RunState(**json.loads((folder / STATE).read_text(encoding="utf-8"))), \
        load_weights(folder, "tabular")


def load_weights(folder: Path, part: str) -> list[np.ndarray]:
    saved = np.load(folder / WEIGHTS[part])
    return [saved[f"arr_{i}"] for i in range(len(saved.files))]
