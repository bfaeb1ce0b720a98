"""One site's privacy spend for one model, on Opacus' RDP accountant, and noise calibration.

The history is a list of sampled-Gaussian releases ``(noise_multiplier, sample_rate, steps)``: DP-SGD
steps and the noisy label counts (``sample_rate=1, steps=1``) alike, so everything that leaves the
site composes in one accountant. Noise is calibrated once for the whole planned run (all local steps
of all rounds on top of what is already recorded), never per round.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from common.errors import BudgetExceededError

Entry = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)

# Opacus' default orders stop at 63, too low for small budgets: a label-count release at
# epsilon 0.1 (delta 1e-5) needs orders near 200. Larger orders only ever tighten the bound.
ORDERS: list[float] = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 192, 256, 384, 512]
MAX_NOISE_MULTIPLIER = 1e4
_RELATIVE_TOLERANCE = 1e-5


def delta_for_bound(max_records: int) -> float:
    """delta <= 1/(10 N) for a public upper bound N on the record count: a mechanism that leaks
    one whole record with probability delta must not be expected to leak anyone's record. Never
    computed from the count itself: the delta is published, so it would publish the count."""
    if max_records < 1:
        raise ValueError(f"max_records must be positive, got {max_records}")
    return min(1e-5, 1.0 / (10 * max_records))


DEFAULT_MAX_RECORDS = 10_000  # the public bound a site assumes unless it sets its own
DEFAULT_DELTA = delta_for_bound(DEFAULT_MAX_RECORDS)


def _entry(noise_multiplier: float, sample_rate: float, steps: int) -> Entry:
    if not noise_multiplier > 0 or not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"invalid release: noise_multiplier={noise_multiplier}, "
                         f"sample_rate={sample_rate}, steps={steps}")
    return float(noise_multiplier), float(sample_rate), int(steps)


@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """One sampled-Gaussian step's RDP at every order; k steps cost exactly k times it (Opacus'
    ``compute_rdp`` multiplies too). Cached: the fractional orders take ~0.4 s a curve on one
    core, and a site's checks, charges and reports ask for the same few curves every round."""
    with np.errstate(over="ignore", divide="ignore"):
        curve = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                         orders=ORDERS)
    curve.flags.writeable = False
    return curve


def _rdp(history: Iterable[Entry]) -> np.ndarray:
    total = np.zeros(len(ORDERS))
    for sigma, q, steps in history:
        with np.errstate(over="ignore", invalid="ignore"):
            total = total + steps * _rdp_of_one_step(sigma, q)
    return total


def _epsilon_of_rdp(rdp: np.ndarray, delta: float) -> float:
    if not rdp.any():
        return 0.0
    with warnings.catch_warnings():  # a bound at the edge of ORDERS is loose but still valid
        warnings.filterwarnings("ignore", message="Optimal order")
        eps, _ = rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


class PrivacyAccountant:
    """The RDP history of one model at one site; serialisable so it survives restarts."""

    def __init__(self, history: Iterable[Sequence[float]] = ()) -> None:
        self._rdp = RDPAccountant()
        for sigma, q, steps in history:
            self.record(sigma, q, int(steps))

    @property
    def history(self) -> list[Entry]:
        return list(self._rdp.history)

    def record(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Add ``steps`` releases; consecutive entries with the same parameters merge, as in Opacus."""
        entry = _entry(noise_multiplier, sample_rate, steps)
        history = self._rdp.history
        if history and history[-1][:2] == entry[:2]:
            history[-1] = (entry[0], entry[1], history[-1][2] + entry[2])
        else:
            history.append(entry)

    def epsilon(self, delta: float) -> float:
        return _epsilon_of_rdp(_rdp(self.history), delta)

    def epsilon_after(self, noise_multiplier: float, sample_rate: float, steps: int,
                      delta: float) -> float:
        """Epsilon if ``steps`` more releases were recorded (nothing is recorded)."""
        return _epsilon_of_rdp(_rdp([*self.history, _entry(noise_multiplier, sample_rate, steps)]),
                               delta)

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": "rdp", "history": [list(e) for e in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyAccountant:
        if data.get("mechanism") != "rdp":
            raise ValueError(f"unsupported accountant {data.get('mechanism')!r}; expected 'rdp'")
        return cls(data["history"])


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, planned_steps: int,
                    prior: Iterable[Sequence[float]] = ()) -> float:
    """The smallest noise multiplier (within a relative 1e-5) for which ``prior`` plus
    ``planned_steps`` sampled-Gaussian steps stay within ``target_epsilon``.

    Epsilon falls monotonically as the noise grows; the root is bracketed, then narrowed by the
    Illinois method on log scales (each evaluation of the RDP accountant is costly).
    """
    if not target_epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {target_epsilon}, {delta}")
    _entry(1.0, sample_rate, planned_steps)  # validates the plan
    base = _rdp(_entry(*e) for e in prior)
    spent = _epsilon_of_rdp(base, delta)
    if spent >= target_epsilon:
        raise BudgetExceededError(
            f"the privacy budget epsilon={target_epsilon} (delta={delta:g}) is already spent "
            f"(epsilon {spent:.4g} recorded); nothing more can be trained. Fix: a data steward may "
            f"raise the budget in the configuration; otherwise release the model as it is.")

    def excess(log_sigma: float) -> float:
        """log(epsilon / target): positive while the noise is too small."""
        step = _rdp([(math.exp(log_sigma), sample_rate, planned_steps)])
        return math.log(_epsilon_of_rdp(base + step, delta) / target_epsilon)

    try:
        return math.exp(_smallest_root(excess, _RELATIVE_TOLERANCE))
    except OverflowError:
        raise BudgetExceededError(
            f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} fits {planned_steps} steps at "
            f"sampling rate {sample_rate:.4g} into the remaining budget (epsilon "
            f"{target_epsilon} - {spent:.4g} spent). Fix: plan fewer steps or rounds, use a "
            f"smaller batch size, or raise the budget.") from None


def _smallest_root(f: Callable[[float], float], tolerance: float) -> float:
    """For decreasing ``f``: the smallest ``u`` (within ``tolerance``) with ``f(u) <= 0``."""
    lo = hi = 0.0
    f_lo = f_hi = f(0.0)
    while f_hi > 0:  # bracket: f(lo) > 0 >= f(hi), one octave apart
        lo, f_lo, hi = hi, f_hi, hi + math.log(2)
        if hi > math.log(MAX_NOISE_MULTIPLIER):
            raise OverflowError
        f_hi = f(hi)
    while f_lo <= 0:
        hi, f_hi, lo = lo, f_lo, lo - math.log(2)
        f_lo = f(lo)
    side = 0
    while hi - lo > tolerance and f_hi < 0:
        u = (lo * f_hi - hi * f_lo) / (f_hi - f_lo) if math.isfinite(f_lo) else math.nan
        if not lo < u < hi:
            u = 0.5 * (lo + hi)
        f_u = f(u)
        if f_u > 0:
            lo, f_lo = u, f_u
            f_hi, side = (f_hi / 2 if side == -1 else f_hi), -1
        else:
            hi, f_hi = u, f_u
            f_lo, side = (f_lo / 2 if side == 1 else f_lo), 1
    return hi
