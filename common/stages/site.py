"""One run at one site, as a stage's site half sees it: the site's validated data and its splits,
its privacy settings and lifetime account, the run's folder and its models.

It joins the two sides of every request: the site's own settings (``SiteConfig``, from its node
config) and the coordinator's plan. Privacy parameters come from the first only. State lives in
the account of the data file (``common.privacy.account``): ``runs/RUN/MODEL/state.pt`` between
messages, and ``runs/RUN/replies/`` for every reply already sent, so a resent request is answered
from disk and spends nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.data import load_site_data, stratified_split
from common.errors import InputError
from common.fileio import atomic_write_text
from common.privacy.account import SiteAccount
from common.privacy.accountant import Entry
from common.privacy.budget import accountant_of
from common.privacy.ledger import Ledger
from common.run_plan import PlanRefused, RunPlan
from common.schema import Schema
from common.site_config import SiteConfig
from common.stages.base import Payload
from common.stages.models import family_of

STATE_FILE = "state.pt"
# What a site process parsed and validated, kept for its life (a run sends a site a dozen
# messages, each built into a SiteRun): by file path, modification time and size, so an edited
# file is read again.
_PARSED: dict[tuple[Any, ...], Any] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


def _kept(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    if key not in _PARSED:
        if len(_PARSED) >= 32:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = make()
    return _PARSED[key]


class SiteRun:
    """``config``'s data under ``plan``; ``schema`` is the site's copy of the consortium schema."""

    def __init__(self, config: SiteConfig, plan: RunPlan, schema: Schema | None = None) -> None:
        self.config, self.plan = config, plan
        self.schema = schema or _kept(("schema", *_file_key(config.schema_path)),
                                      lambda: Schema.load(config.schema_path))
        self.delta = config.site_delta
        self.account = SiteAccount(config.state_dir, config.data_path, config.epsilon_total,
                                   self.delta)
        self.folder = self.account.run_folder(plan.run)

    # --- data -----------------------------------------------------------------------------
    @cached_property
    def data(self) -> pd.DataFrame:
        """The site's file, validated against the schema (bad rows by the site's own policy);
        parsed once per process while the file is unchanged."""
        key = ("data", *_file_key(self.config.data_path), self.schema.hash, self.config.bad_rows,
               str(self.config.state_dir))
        frame = _kept(key, lambda: load_site_data(
            self.config.data_path, self.schema, bad_rows=self.config.bad_rows,
            quarantine_path=self.config.state_dir / "quarantine.csv")).copy()
        if len(frame) > self.config.max_records:
            raise InputError(f"{self.config.data_path}: {len(frame)} records, more than the site's "
                             f"public bound max-records={self.config.max_records}, from which its "
                             f"delta follows; raise max-records in the node config.")
        return frame

    @cached_property
    def splits(self) -> dict[str, pd.DataFrame]:
        """Seeded, label-stratified train / holdout / test splits; the generators see train only."""
        return stratified_split(self.data, self.schema.label.name, self.plan.seed)

    def records(self, model: str) -> pd.DataFrame:
        """The train records ``model`` learns from."""
        spec = self.plan.models[model]
        return family_of(spec).records(self.splits["train"], self.schema, spec)

    # --- privacy --------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        return self.account.ledger(self.plan.run)

    @property
    def local_only(self) -> bool:
        """Whether this run trains the local-only baseline here: the plan asks, the site allows."""
        return self.plan.local_only and self.config.allow_local_only

    def check_plan(self) -> None:
        """Refuse a plan whose models this site cannot build (unknown family, kind or setting)."""
        for spec in self.plan.models.values():
            try:
                family_of(spec).check(spec)
            except PlanRefused:
                raise
            except InputError as exc:
                raise PlanRefused(str(exc)) from None

    def planned_releases(self) -> list[Entry]:
        """Every release this run's plan makes from the site's data, each model calibrated to
        the site's share for it (and the local-only baseline, when it runs here)."""
        releases: list[Entry] = []
        for name, spec in self.plan.models.items():
            steps, n_records = self.plan.planned_steps(name), len(self.records(name))
            if n_records < 1:
                raise InputError(f"{self.config.data_path}: the train split has no records for "
                                 f"the {name} model; the site needs more valid records.")
            planned = family_of(spec).planned(spec, self.config.share(spec.family), self.delta,
                                              n_records, steps)
            copies = 2 if self.local_only and name == self.local_only_model else 1
            releases += planned * copies
        return releases

    @property
    def local_only_model(self) -> str | None:
        """The plan's tabular model: the one the local-only baseline trains alone."""
        return next((n for n, s in self.plan.models.items() if s.family == "tabular"), None)

    def spends(self) -> dict[str, Any]:
        """The DP accounting the site reports: this run's epsilon per model and composed, the
        lifetime spend of its data file, its cap and delta."""
        entries = self.account.entries()
        mine = [e for e in entries if e.run == self.plan.run]
        epsilon = {e.model: e.epsilon_after for e in mine}  # each entry holds its running total
        return {"epsilon": {model: round(value, 4) for model, value in epsilon.items()},
                "epsilon_run": round(accountant_of(mine).epsilon(self.delta), 4),
                "epsilon_lifetime": round(accountant_of(entries).epsilon(self.delta), 4),
                "epsilon_cap": self.config.epsilon_total, "delta": self.delta}

    # --- models ---------------------------------------------------------------------------
    def model(self, name: str, local: bool = False) -> Any:
        """The site's copy of the plan's model ``name`` (its ``-local`` twin with ``local``),
        with the site's privacy settings, restored from its last saved state."""
        spec = self.plan.models[name]
        ledger_name = spec.ledger_name + ("-local" if local else "")
        model = family_of(spec).build(
            self.schema, spec, self.plan.seed, epsilon=self.config.share(spec.family),
            delta=self.delta, noise_seed=self.config.noise_seed,
            max_grad_norm=self.config.max_grad_norm, ledger=self.ledger, name=ledger_name)
        path = self.folder / ledger_name / STATE_FILE
        if path.exists():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.epsilon = self.config.share(spec.family)  # the site's current share always wins
        return model

    def has_model(self, name: str, local: bool = False) -> bool:
        spec = self.plan.models[name]
        return (self.folder / (spec.ledger_name + ("-local" if local else "")) / STATE_FILE).exists()

    def save_model(self, model: Any) -> None:
        """``model``'s state (``state_dict``), renamed into place, under its ledger name."""
        folder = self.folder / model.model_name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{STATE_FILE}.tmp"
        torch.save(model.state_dict(), tmp)
        tmp.replace(folder / STATE_FILE)

    # --- replies --------------------------------------------------------------------------
    def replay(self, key: str, compute: Callable[[], Payload]) -> Payload:
        """The reply already sent for ``key``, or ``compute()``'s, saved before it is returned:
        a resent request gets the same answer and spends nothing again."""
        arrays, values = (self.folder / "replies" / f"{key}.{ext}" for ext in ("npz", "json"))
        if values.exists():
            with np.load(arrays) as saved:
                return Payload(arrays={k: saved[k] for k in saved.files},
                               values=json.loads(values.read_text(encoding="utf-8")))
        reply = compute()
        arrays.parent.mkdir(parents=True, exist_ok=True)
        tmp = arrays.with_name(f".{arrays.name}.tmp.npz")
        np.savez(tmp, **reply.arrays)
        tmp.replace(arrays)
        atomic_write_text(values, json.dumps(reply.values))  # written last: it marks the reply whole
        return reply

