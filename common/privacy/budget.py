"""A site's (epsilon, delta) budget for one model in one run: the one place where a spend happens.

Every release (a run of DP-SGD steps, the noisy label counts) goes through ``charge``: it is
checked against the model's budget and against the data holder's lifetime cap over every release
ever made from the same data (``Ledger.epsilon_cap``), written to the durable ledger, then
recorded in the accountant, before the release itself is computed. The accountant is rebuilt from
the ledger, so the two cannot drift apart and a restarted site continues with exactly what was
logged. ``calibrate`` refuses a plan that would pass the lifetime cap before anything is trained.
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
        self.accountant = accountant_of(self.ledger.read(model, run=self.ledger.run))

    def spent(self) -> float:
        return self.accountant.epsilon(self.delta)

    def lifetime_after(self, releases: Iterable[Sequence[float]] = ()) -> float:
        """Epsilon of every release ever made from this data, every run and model, plus
        ``releases``: what the lifetime cap bounds."""
        return PrivacyAccountant([*accountant_of(self.ledger.read()).history, *releases]).epsilon(self.delta)

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether ``steps`` more releases would pass this model's budget (not the lifetime cap)."""
        after = self.accountant.epsilon_after(noise_multiplier, sample_rate, steps, self.delta)
        return after > self.epsilon * (1 + _SLACK)

    def calibrate(self, sample_rate: float, planned_steps: int,
                  reserved: Iterable[Sequence[float]] = ()) -> float:
        """Noise for ``planned_steps`` on top of what is spent and what is ``reserved`` for later;
        refused (nothing spent) if the plan as a whole would pass the lifetime cap."""
        reserved = list(reserved)
        sigma = calibrate_noise(self.epsilon, self.delta, sample_rate, planned_steps,
                                prior=[*self.accountant.history, *reserved])
        self.check_lifetime([*reserved, (sigma, sample_rate, planned_steps)])
        return sigma

    def check_lifetime(self, releases: Sequence[Sequence[float]]) -> None:
        """Refuse ``releases`` if, with everything already in the ledger, they would pass the cap."""
        cap = self.ledger.epsilon_cap
        if cap is None:
            return
        after = self.lifetime_after(releases)
        if after > cap * (1 + _SLACK):
            raise BudgetExceededError(
                f"{self.model}: this would bring the data file's lifetime spend to epsilon "
                f"{after:.4g}, over the site's cap epsilon-total={cap:g} (delta={self.delta:g}; "
                f"spent so far in every run: {self.lifetime_after():.4g}). Nothing was spent. Fix: "
                f"the data steward may raise epsilon-total (knowing what was already released; "
                f"see fedsynth ledger show), or the site stays out of this run.")

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
        self.check_lifetime([(noise_multiplier, sample_rate, steps)])
        self.ledger.append(new_entry(self.model, noise_multiplier, sample_rate, steps, after,
                                     self.delta, round=round, note=note, run=self.ledger.run))
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


def accountant_of(entries: Iterable[LedgerEntry]) -> PrivacyAccountant:
    history: list[Entry] = [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]
    return PrivacyAccountant(history)
