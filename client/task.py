"""What a site does in a federated run, without Flower: its data, its budget, its rounds.

State lives in ``STATE_DIR/RUN/``: the privacy ledger (the source of truth for the spend), the
synthesizer's state after the last round, and each round's update (``client.site_state``: a
resent round spends nothing twice). The local-only baseline (the site's own model, the
yardstick of what federating gains it) is trained there once too, and never leaves the site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from client.site_config import SiteConfig
from client.site_state import STATE_FILE, cached_round, load_state, save_state
from common.data import load_site_data, stratified_split
from common.errors import InputError
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.run_plan import RunPlan
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer


class SiteTask:
    """One site's side of one run for one tabular generator."""

    def __init__(self, site: SiteConfig, plan: RunPlan) -> None:
        self.site = site
        self.plan = plan
        self.schema = Schema.load(site.schema_path)
        self.folder = site.state_dir / plan.run
        self.model_folder = self.folder / f"tabular-{plan.kind}"
        self.local_folder = self.folder / f"tabular-{plan.kind}-local"

    @property
    def ledger_path(self) -> Path:
        return self.folder / "ledger.jsonl"

    def splits(self) -> dict[str, pd.DataFrame]:
        """The site's seeded, label-stratified train / holdout / test splits."""
        frame = load_site_data(self.site.data_path, self.schema, bad_rows=self.site.bad_rows,
                               quarantine_path=self.site.state_dir / "quarantine.csv")
        return stratified_split(frame, self.schema.label.name, self.plan.seed)

    def train_split(self) -> pd.DataFrame:
        """The records the generators may see: the train split."""
        return self.splits()["train"]

    def spends(self) -> dict[str, Any]:
        """Epsilon spent per model in this run's ledger, and the delta: the DP accounting, which
        the site reports with its evaluation figures."""
        entries = Ledger(self.ledger_path).read()
        epsilon = {e.model: e.epsilon_after for e in entries}  # each entry holds its running total
        delta = max((e.delta for e in entries), default=None)
        total = epsilon_from_ledger(entries, delta) if entries else 0.0  # every model, composed
        return {"epsilon": epsilon, "epsilon_total": total, "delta": delta}

    def _synthesizer(self, folder: Path | None = None) -> TabularSynthesizer:
        """The site's federated synthesizer (or the one of ``folder``: its name in the ledger is
        the folder's), restored from its last saved state, or a new one with the run's initial
        weights."""
        folder = folder or self.model_folder
        synth = TabularSynthesizer(self.schema, kind=self.plan.kind, epsilon=self.site.epsilon_tabular,
                                   delta=self.site.delta, config=self.plan.tabular_config,
                                   seed=self.plan.seed, ledger=self.ledger_path, name=folder.name)
        state = load_state(folder)
        if state is not None:
            synth.load_state_dict(state)
            synth.epsilon = self.site.epsilon_tabular  # the site's current budget always wins
        return synth

    def _save(self, synth: TabularSynthesizer, folder: Path | None = None) -> None:
        save_state(synth.state_dict(), folder or self.model_folder)

    def label_counts(self) -> tuple[np.ndarray, np.ndarray | None]:
        """DP label counts and (for a model that uses them) class-conditional tables: one release,
        charged once, to the ledger, before it is returned."""
        train = self.train_split()
        synth = self._synthesizer()
        synth.plan(len(train), self.plan.rounds * self.plan.local_steps)
        counts = synth.release_label_counts(train)
        self._save(synth)
        return counts, synth.released_label_tables()

    def train_round(self, round_: int, global_weights: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """``local_steps`` DP-SGD steps from the global weights; the spend is in the ledger before
        the update is returned. Returns (weights, epsilon spent so far)."""
        if not 1 <= round_ <= self.plan.rounds:
            raise InputError(f"round {round_} is outside the planned 1..{self.plan.rounds}.")

        def train() -> tuple[list[np.ndarray], float | None]:
            records = self.train_split()
            synth = self._synthesizer()
            synth.plan(len(records), self.plan.rounds * self.plan.local_steps)
            synth.set_weights(global_weights)
            epsilon = synth.train_steps(records, self.plan.local_steps, round=round_,
                                        proximal_mu=self.plan.proximal_mu)
            self._save(synth)
            return synth.get_weights(), epsilon

        return cached_round(self.model_folder, round_, train)

    def local_only_synthetic(self, n_records: int, seed: int) -> pd.DataFrame:
        """``n_records`` from the local-only baseline: the site's model trained alone, with the
        same budget, total steps (rounds x local steps) and initial weights as its federated one.

        Trained once (a restart samples the saved model, spending nothing twice), under its own
        name in the site's ledger so the audit shows its spend. The model stays here: only what
        is computed from its records (evaluation figures) may leave the site.
        """
        synth = self._synthesizer(self.local_folder)
        if not (self.local_folder / STATE_FILE).exists():
            synth.fit(self.train_split(), steps=self.plan.rounds * self.plan.local_steps)
            self._save(synth, self.local_folder)
        return synth.sample(n_records, seed=seed)

    def epsilon_spent(self) -> float:
        synth = self._synthesizer()
        spent = synth.epsilon_spent()
        return 0.0 if spent is None else float(spent)

