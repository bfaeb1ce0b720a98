"""What every DP model facade shares about its budget (the tabular synthesizer, the narrative
model): the data holder's privacy settings, a plan before any release, a budget rebuilt from the
ledger, the spend so far, and the same plan computed without a model (``planned_releases``) so a
site can check a whole run against its lifetime cap before anything is trained.

The privacy settings (epsilon, delta, the clipping bound, the noise seed) are the facade's
constructor arguments, never part of its model config: in a federation the config comes from the
coordinator's plan, and the privacy settings from the site alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.privacy.accountant import Entry, PrivacyAccountant, calibrate_noise
from common.privacy.budget import PrivacyBudget
from common.privacy.ledger import Ledger, LedgerEntry
from common.tabular.trainer import TrainSettings, sample_rate


def planned_releases(epsilon: float, delta: float, n_records: int, batch_size: int,
                     planned_steps: int, reserved: Sequence[Entry] = ()) -> list[Entry]:
    """Every release a model's plan makes: the ``reserved`` ones (label counts) and
    ``planned_steps`` DP-SGD steps with the noise that fits them all into ``epsilon``."""
    q = sample_rate(n_records, batch_size)
    return [*reserved, (calibrate_noise(epsilon, delta, q, planned_steps, prior=reserved), q,
                        planned_steps)]


class PlannedBudget:
    """Mixin over the facade's ``config``, ``device``, ``seed``, ``model_name`` and its trainer.
    ``_init_privacy`` sets the rest; ``_reserved_releases`` is the facade's hook for releases it
    makes besides DP-SGD (the tabular label counts)."""

    config: dict[str, Any]
    device: Any
    seed: int
    model_name: str
    _trainer: Any  # the facade's trainer (state_dict/load_state_dict), None before training

    def _init_privacy(self, epsilon: float | None, delta: float, noise_seed: int | None,
                      max_grad_norm: float, ledger: str | Path | Ledger | None) -> None:
        if not max_grad_norm > 0:
            raise InputError(f"the clipping bound max_grad_norm must be > 0 (got {max_grad_norm}).")
        self.epsilon = None if epsilon is None else float(epsilon)
        self.delta = float(delta)
        self.noise_seed = noise_seed
        self.max_grad_norm = float(max_grad_norm)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.budget: PrivacyBudget | None = None
        self._saved_accountant: PrivacyAccountant | None = None  # from a loaded state
        self._plan: dict[str, Any] | None = None
        self._trainer = None
        self._pending_trainer_state: dict[str, Any] | None = None
        self.local_loss: float | None = None  # last call's mean loss: not private, stays here

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    def _reserved_releases(self, plan: dict[str, Any]) -> list[Entry]:
        """Releases besides DP-SGD that the plan must leave room for (may note them in ``plan``)."""
        return []

    def plan(self, n_records: int, planned_steps: int) -> float | None:
        """Calibrate the noise once for every step of every round (and the facade's reserved
        releases); refused if that would pass the budget or the lifetime cap. Returns the noise
        multiplier (None without DP)."""
        if self._plan is not None:
            if (self._plan["n_records"], self._plan["planned_steps"]) != (n_records, planned_steps):
                raise InputError(f"{self.model_name} is already planned for {self._plan['n_records']} "
                                 f"records and {self._plan['planned_steps']} steps; the noise is "
                                 f"calibrated once for the whole run. Keep the plan or start a new model.")
            return self._plan["noise_multiplier"]
        plan: dict[str, Any] = {"n_records": int(n_records), "planned_steps": int(planned_steps),
                                "noise_multiplier": None}
        reserved = self._reserved_releases(plan) if self.private else []
        if n_records < 1 or planned_steps < 0 or (planned_steps == 0 and not reserved and self.private):
            raise InputError(f"plan needs at least one record and one step (got {n_records} "
                             f"records, {planned_steps} steps).")
        if self.private:
            self.budget = PrivacyBudget(self.epsilon, self.delta, self.model_name, self.ledger)
            if planned_steps:
                q = sample_rate(n_records, self.config["batch_size"])
                plan["noise_multiplier"] = self.budget.calibrate(q, planned_steps, reserved)
            else:  # reserved releases only (private evolution's votes, fitted to the budget)
                self.budget.check_lifetime(reserved)
        self._plan = plan
        return plan["noise_multiplier"]

    def _require_plan(self) -> None:
        """Before any release: a plan, and a budget whose accountant is rebuilt from the ledger
        (checked against a loaded checkpoint, so a lost ledger cannot reset the spend)."""
        if self._plan is None:
            raise InputError("no privacy plan yet: call plan(n_records, planned_steps) with the steps "
                             "of all rounds before the first release (fit() does it for you).")
        if self.private and self.budget is None:
            self.budget = PrivacyBudget(self.epsilon, self.delta, self.model_name, self.ledger)
            if self._saved_accountant is not None:
                self.budget.check_restored(self._saved_accountant.history)

    def _build_trainer(self, make: Callable[..., Any]) -> Any:
        """``make(settings=..., noise_multiplier=..., budget=..., device=..., seed=...)`` with the
        facade's config and plan (DP noise from ``noise_seed``, OS entropy when it is None;
        batches from ``seed`` without DP), then the trainer state of a restored checkpoint."""
        settings = TrainSettings(batch_size=self.config["batch_size"], lr=self.config["lr"],
                                 max_grad_norm=self.max_grad_norm)
        trainer = make(settings=settings, noise_multiplier=self._plan["noise_multiplier"],
                       budget=self.budget, device=str(self.device),
                       seed=self.noise_seed if self.private else self.seed)
        if self._pending_trainer_state is not None:
            trainer.load_state_dict(self._pending_trainer_state)
            self._pending_trainer_state = None
        return trainer

    def _privacy_state(self) -> dict[str, Any]:
        """The budget's part of a facade's ``state_dict``: target, plan, optimizer/RNG state,
        the accountant history (checked against the ledger on load) and, for an in-memory ledger
        only, its entries."""
        trainer = (self._trainer.state_dict() if self._trainer is not None
                   else self._pending_trainer_state)
        accountant = self.budget.accountant if self.budget is not None else self._saved_accountant
        return {"epsilon": self.epsilon, "delta": self.delta, "max_grad_norm": self.max_grad_norm,
                "plan": self._plan, "trainer": trainer,
                "accountant": None if accountant is None else accountant.to_dict(),
                "ledger": ([asdict(e) for e in self.ledger.read()] if self.ledger.path is None
                           else None)}

    def _restore_privacy_state(self, state: Mapping[str, Any]) -> None:
        self.epsilon, self.delta = state["epsilon"], state["delta"]
        self.max_grad_norm = state.get("max_grad_norm", 1.0)  # states saved before it was kept
        self._plan = None if state["plan"] is None else dict(state["plan"])
        self._pending_trainer_state = state["trainer"]
        self._saved_accountant = (None if state["accountant"] is None
                                  else PrivacyAccountant.from_dict(state["accountant"]))
        self.budget = None
        if state["ledger"] is not None and self.ledger.path is None and not self.ledger.read():
            for entry in state["ledger"]:
                self.ledger.append(LedgerEntry(**entry))

    def epsilon_spent(self) -> float | None:
        if not self.private:
            return None
        if self.budget is not None:
            return self.budget.spent()
        return 0.0 if self._saved_accountant is None else self._saved_accountant.epsilon(self.delta)


