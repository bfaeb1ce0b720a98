"""A site's saved state: a model's state between rounds, and each round's update, written whole.

A round the site already trained is answered from its saved update, so a coordinator that resends
a round after a crash never makes the site spend budget twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def save_state(state: dict[str, Any], folder: Path) -> None:
    """``state`` (a model's ``state_dict()``) as ``folder/state.pt``, renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / STATE_FILE)


def load_state(folder: Path) -> dict[str, Any] | None:
    path = folder / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


Update = tuple[list[np.ndarray], float | None]  # (weights, epsilon spent so far; None without DP)


def cached_round(folder: Path, round_: int, train: Callable[[], Update]) -> tuple[list[np.ndarray], float]:
    """The update of ``round_``: the saved one if the site trained it already, else ``train()``'s,
    saved before it is returned. Returns (weights, epsilon spent so far; -1 without DP)."""
    cached = folder / f"round-{round_:04d}.npz"
    if cached.exists():
        saved = np.load(cached)
        return [saved[f"w{i}"] for i in range(len(saved.files) - 1)], float(saved["epsilon"])
    weights, epsilon = train()
    epsilon = -1.0 if epsilon is None else float(epsilon)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".round-{round_:04d}.tmp.npz"
    np.savez(tmp, epsilon=np.float64(epsilon), **{f"w{i}": w for i, w in enumerate(weights)})
    tmp.replace(cached)
    return weights, epsilon
