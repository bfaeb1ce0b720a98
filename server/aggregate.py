"""Aggregation: check every site update before it counts, then average.

An update is dropped (and logged) if it is not finite, has the wrong number, shapes or dtypes of
arrays, or moves the global model further than ``max_norm`` in L2: one broken or hostile site
cannot poison the global model.
"""

from __future__ import annotations

import numpy as np


def update_problem(update: list[np.ndarray], reference: list[np.ndarray], max_norm: float) -> str | None:
    """Why ``update`` must be dropped, or None if it is acceptable."""
    if len(update) != len(reference):
        return f"has {len(update)} arrays, the global model {len(reference)}"
    squared = 0.0
    for i, (new, old) in enumerate(zip(update, reference, strict=True)):
        if new.shape != old.shape:
            return f"array {i} has shape {new.shape}, expected {old.shape}"
        if new.dtype != old.dtype:
            return f"array {i} has dtype {new.dtype}, expected {old.dtype}"
        if not np.isfinite(new).all():
            return f"array {i} holds NaN or infinite values"
        squared += float(np.sum((new.astype(np.float64) - old.astype(np.float64)) ** 2))
    norm = squared ** 0.5
    if norm > max_norm:
        return f"moves the model by {norm:.3g} in L2, above the bound {max_norm:g}"
    return None


def weighted_average(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    """FedAvg: the weighted mean of each array (weights are normalised; none may be negative)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(updates) == 0 or len(w) != len(updates) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weighted_average needs one non-negative weight per update, not all zero")
    w = w / w.sum()
    averaged = []
    for i, first in enumerate(updates[0]):
        total = sum(wi * u[i].astype(np.float64) for wi, u in zip(w, updates, strict=True))
        averaged.append(np.asarray(total).astype(first.dtype))
    return averaged
