"""What a site does in a run's narrative stage, without Flower: DP-LoRA rounds of the narrative
model on its own train split, in the same ledger as its tabular model, under its own text budget.

Only the adapter's B matrices leave the site (FFA-LoRA), after the spend is in the ledger. State
lives beside the tabular model's: ``STATE_DIR/RUN/text-lora/``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from client.site_config import SiteConfig
from client.site_state import cached_round, load_state, save_state
from client.task import SiteTask
from common.errors import InputError
from common.run_plan import RunPlan
from common.text.narrative_model import LEDGER_NAME, NarrativeModel


class NarrativeTask:
    """One site's side of one run for the narrative model."""

    def __init__(self, site: SiteConfig, plan: RunPlan) -> None:
        if not plan.has_text:
            raise InputError("the coordinator asked for narrative training in a run planned "
                             "without narratives (no text config or rounds).")
        self.site = site
        self.plan = plan
        self.tabular = SiteTask(site, plan)  # the same schema, splits, run folder and ledger
        self.folder = self.tabular.folder / LEDGER_NAME

    def train_records(self) -> pd.DataFrame:
        """The train split's records that have a narrative: the model learns record -> text."""
        train = self.tabular.train_split()
        text = train[self.tabular.schema.narrative.name]
        return train[text.notna() & (text.astype("string").str.strip() != "")]

    def _model(self) -> NarrativeModel:
        """The site's narrative model, restored from its last saved state (budget: the site's
        current ``epsilon_text``)."""
        model = NarrativeModel(self.tabular.schema, epsilon=self.site.epsilon_text,
                               delta=self.site.delta, config=self.plan.text_config,
                               ledger=self.tabular.ledger_path, seed=self.plan.seed)
        state = load_state(self.folder)
        if state is not None:
            model.load_state_dict(state)
            model.epsilon = self.site.epsilon_text
        return model

    def train_round(self, round_: int, global_weights: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """``text_local_steps`` DP-SGD steps on the adapters from the global ones; returns (B
        matrices, text epsilon spent so far), the spend in the ledger first."""
        if not 1 <= round_ <= self.plan.text_rounds:
            raise InputError(f"narrative round {round_} is outside the planned "
                             f"1..{self.plan.text_rounds}.")

        def train() -> tuple[list[np.ndarray], float | None]:
            records = self.train_records()
            model = self._model()
            model.plan(len(records), self.plan.text_rounds * self.plan.text_local_steps)
            model.set_weights(global_weights)
            epsilon = model.train_steps(records, self.plan.text_local_steps, round=round_)
            save_state(model.state_dict(), self.folder)
            return model.get_weights(), epsilon

        return cached_round(self.folder, round_, train)
