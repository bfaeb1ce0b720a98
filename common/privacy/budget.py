"""A site's (epsilon, delta) budget for one model: the one place where a spend happens.

Every release (a run of DP-SGD steps, the noisy label counts) goes through ``charge``: it is
checked against the budget, written to the durable ledger, then recorded in the accountant, before
the release itself is computed. The accountant is rebuilt from the ledger, so the two cannot drift
apart and a restarted site continues with exactly what was logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from common.errors import BudgetExceededError, InputError
from common.privacy.accountant import Entry, PrivacyAccountant, calibrate_noise
from common.privacy.ledger import Ledger, LedgerEntry, new_entry

_SLACK = 1e-9  # relative: RDP sums of the same steps split into rounds differ in the last bits


class PrivacyBudget:
    """Target epsilon and delta for ``model`` at one site, with its ledger and accountant."""

    def __init__(self, epsilon: float, delta: float, model: str, ledger: Ledger | None = None) -> None:
        if not epsilon > 0 or not 0 < delta < 1:
            raise InputError(f"the privacy budget needs epsilon > 0 and 0 < delta < 1 (got "
                             f"epsilon={epsilon}, delta={delta}); fix the configuration.")
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.model = model
        self.ledger = ledger if ledger is not None else Ledger()
        self.accountant = _accountant_of(self.ledger.read(model))

    def spent(self) -> float:
        return self.accountant.epsilon(self.delta)

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        after = self.accountant.epsilon_after(noise_multiplier, sample_rate, steps, self.delta)
        return after > self.epsilon * (1 + _SLACK)

    def calibrate(self, sample_rate: float, planned_steps: int,
                  reserved: Iterable[Sequence[float]] = ()) -> float:
        """Noise for ``planned_steps`` on top of what is spent and what is ``reserved`` for later."""
        return calibrate_noise(self.epsilon, self.delta, sample_rate, planned_steps,
                               prior=[*self.accountant.history, *reserved])

    def charge(self, noise_multiplier: float, sample_rate: float, steps: int,
               round: int | None = None, note: str = "") -> float:
        """Log and record a release about to be made; refuse (recording nothing) if over budget."""
        after = self.accountant.epsilon_after(noise_multiplier, sample_rate, steps, self.delta)
        if after > self.epsilon * (1 + _SLACK):
            raise BudgetExceededError(
                f"{self.model}: {steps} more step(s) (noise multiplier {noise_multiplier:.4g}, "
                f"sampling rate {sample_rate:.4g}) would spend epsilon {after:.4g}, over the "
                f"budget epsilon={self.epsilon} (delta={self.delta:g}; spent so far "
                f"{self.spent():.4g}). Nothing was spent or trained. Fix: stop here and release the model, "
                f"or plan the run (all rounds) before training so the noise covers it.")
        self.ledger.append(new_entry(self.model, noise_multiplier, sample_rate, steps, after,
                                     self.delta, round=round, note=note))
        self.accountant.record(noise_multiplier, sample_rate, steps)
        return after

    def check_restored(self, history: Iterable[Sequence[float]]) -> None:
        """Refuse a checkpoint that claims more spend than the ledger holds (a lost ledger)."""
        saved = PrivacyAccountant(history).epsilon(self.delta)
        if saved > self.spent() * (1 + _SLACK):
            where = self.ledger.path or "the in-memory ledger"
            raise InputError(f"the checkpoint of {self.model} records epsilon {saved:.4g} spent, "
                             f"but {where} holds only {self.spent():.4g}. Restore the site's ledger "
                             f"file (the audit record) and pass its path, then resume.")


def _accountant_of(entries: list[LedgerEntry]) -> PrivacyAccountant:
    history: list[Entry] = [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]
    return PrivacyAccountant(history)
