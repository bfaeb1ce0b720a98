"""DP label counts by the Gaussian mechanism, for unconditional sampling of the label.

Adding or removing one record changes one count by 1: L2 sensitivity 1, so the counts are one
sampled-Gaussian release with ``sample_rate=1, steps=1`` charged to the same budget as training.
Its noise is calibrated to a fixed fraction of the budget taken from configuration.
"""

from __future__ import annotations

import numpy as np

from common.privacy.accountant import Entry, calibrate_noise
from common.privacy.budget import PrivacyBudget


def counts_release(epsilon_share: float, delta: float) -> Entry:
    """The release the counts will make: noise for ``epsilon_share`` on its own."""
    return calibrate_noise(epsilon_share, delta, 1.0, 1), 1.0, 1


def release_label_counts(y: np.ndarray, n_classes: int, budget: PrivacyBudget,
                         noise_multiplier: float, rng: np.random.Generator,
                         round: int | None = None) -> np.ndarray:
    """Charge the budget, then return the noisy class counts (clipped at 0, float)."""
    exact = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return np.clip(release_counts(exact, budget, noise_multiplier, rng, round=round), 0.0, None)


def release_counts(exact: np.ndarray, budget: PrivacyBudget, noise_multiplier: float,
                   rng: np.random.Generator, sensitivity: float = 1.0, round: int | None = None,
                   note: str = "label counts") -> np.ndarray:
    """Gaussian mechanism on a vector of counts with L2 ``sensitivity``: noise of standard
    deviation ``noise_multiplier * sensitivity``, charged (before release) as one release of
    ``noise_multiplier``, which is its privacy cost. Returns the raw noisy counts."""
    budget.charge(noise_multiplier, 1.0, 1, round=round, note=note)
    exact = np.asarray(exact, dtype=np.float64)
    return exact + rng.normal(0.0, noise_multiplier * sensitivity, exact.shape)


def label_distribution(counts: np.ndarray) -> np.ndarray:
    """Class probabilities from (noisy) counts; uniform when the noise left nothing."""
    counts = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))
