"""What every DP model facade shares about its budget (the tabular synthesizer, the narrative
model): a plan before any release, a budget rebuilt from the ledger, the spend so far."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from common.errors import InputError
from common.privacy.accountant import PrivacyAccountant
from common.privacy.budget import PrivacyBudget
from common.privacy.ledger import Ledger, LedgerEntry
from common.tabular.trainer import TrainSettings


class PlannedBudget:
    """Mixin over the facade's ``epsilon``, ``delta``, ``model_name``, ``ledger``, ``budget``,
    ``_plan``, its trainer and ``_saved_accountant`` (the accountant of a loaded state)."""

    epsilon: float | None
    delta: float | None
    model_name: str
    ledger: Ledger
    budget: PrivacyBudget | None
    _plan: dict[str, Any] | None
    _saved_accountant: PrivacyAccountant | None
    _trainer: Any  # the facade's trainer (state_dict/load_state_dict), None before training
    _pending_trainer_state: dict[str, Any] | None
    config: dict[str, Any]
    device: Any
    seed: int

    @property
    def private(self) -> bool:
        return self.epsilon is not None

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
        facade's config and plan (seeded DP noise only from ``dp_seed``, batches from ``seed``
        without DP), then the trainer state of a restored checkpoint, if any."""
        settings = TrainSettings(batch_size=self.config["batch_size"], lr=self.config["lr"],
                                 max_grad_norm=self.config["max_grad_norm"])
        trainer = make(settings=settings, noise_multiplier=self._plan["noise_multiplier"],
                       budget=self.budget, device=str(self.device),
                       seed=self.config["dp_seed"] if self.private else self.seed)
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
        return {"epsilon": self.epsilon, "delta": self.delta, "plan": self._plan, "trainer": trainer,
                "accountant": None if accountant is None else accountant.to_dict(),
                "ledger": ([asdict(e) for e in self.ledger.read()] if self.ledger.path is None
                           else None)}

    def _restore_privacy_state(self, state: Mapping[str, Any]) -> None:
        self.epsilon, self.delta = state["epsilon"], state["delta"]
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
