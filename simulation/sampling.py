"""Vectorised random draws shared by the simulator's steps.

Each record has its own probabilities (they depend on age, mechanism, severity, ...), so draws are
made row-wise from weight matrices rather than with ``rng.choice`` in a Python loop: 10,000
records take milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def table(rows: Mapping[str, Sequence[float]], row_names: Sequence[str],
          col_names: Sequence[str]) -> np.ndarray:
    """A (rows x columns) weight matrix from a readable mapping, checked for shape.

    Written as ``{row category: weights in column order}`` so the tables read like the clinical
    assumptions they encode; the check catches a missing row or a miscounted list at import.
    """
    if set(rows) != set(row_names):
        raise ValueError(f"table rows {sorted(rows)} do not match {sorted(row_names)}")
    bad = [name for name in row_names if len(rows[name]) != len(col_names)]
    if bad:
        raise ValueError(f"table rows {bad} need {len(col_names)} weights ({list(col_names)})")
    return np.array([rows[name] for name in row_names], dtype=float)


def by_name(values: Mapping[str, float], index: Mapping[str, int], default: float) -> np.ndarray:
    """A vector over a category list from ``{category: value}``, ``default`` elsewhere."""
    out = np.full(len(index), float(default))
    for name, value in values.items():
        out[index[name]] = value
    return out


def choose(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category index per row of a (n, k) matrix of non-negative, unnormalised weights."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    if not np.all(total > 0):
        raise ValueError("every row needs at least one positive weight")
    u = rng.random(len(weights)) * total
    return np.minimum((cum <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def choose_softmax(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Like ``choose`` but from log-weights (``-inf`` rules a category out)."""
    return choose(rng, np.exp(logits - logits.max(axis=1, keepdims=True)))


def bernoulli(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    """One boolean per element, true with probability sigmoid(logit)."""
    return rng.random(np.shape(logit)) < 1.0 / (1.0 + np.exp(-logit))


def lognormal(rng: np.random.Generator, median: np.ndarray, sigma: float) -> np.ndarray:
    """Right-skewed durations around a per-record median (lengths of stay)."""
    return median * np.exp(sigma * rng.standard_normal(np.shape(median)))
