"""The model families a plan may name, and what the stages need of each: build the facade (with
the site's privacy settings, or none at the coordinator), the records it learns from, and what its
plan will release (for a site's upfront check against its lifetime cap).

A facade trains in rounds with ``plan``, ``train_steps``, ``get_weights`` / ``set_weights`` (named
arrays), ``state_dict`` / ``load_state_dict``, and is released with ``save``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from common.marginal.model import MarginalSynthesizer
from common.marginal.model import resolve_config as resolve_marginal_config
from common.privacy.accountant import DEFAULT_DELTA, Entry
from common.privacy.ledger import Ledger
from common.run_plan import MARGINAL_KINDS, TABULAR_KINDS, ModelSpec, PlanRefused
from common.saved_model import read_model_folder
from common.schema import Schema
from common.tabular.synthesizer import FILES as TABULAR_FILES
from common.tabular.synthesizer import TabularSynthesizer, resolve_config


class TabularFamily:
    """The tabular generators: deep ones trained in rounds (``vae``, ``ddpm``) and the marginal
    models (``mst``, ``aim``); they learn from the whole train split."""

    kinds = TABULAR_KINDS

    def build(self, schema: Schema, spec: ModelSpec, seed: int, epsilon: float | None = None,
              delta: float = DEFAULT_DELTA, noise_seed: int | None = None, max_grad_norm: float = 1.0,
              ledger: Ledger | None = None, name: str | None = None) -> Any:
        facade = MarginalSynthesizer if spec.kind in MARGINAL_KINDS else TabularSynthesizer
        return facade(schema, kind=spec.kind, epsilon=epsilon, delta=delta, config=spec.config,
                      seed=seed, ledger=ledger, name=name, noise_seed=noise_seed,
                      max_grad_norm=max_grad_norm)

    def records(self, train: pd.DataFrame, schema: Schema, spec: ModelSpec) -> pd.DataFrame:
        return train

    def planned(self, spec: ModelSpec, epsilon: float, delta: float, n_records: int,
                steps: int) -> list[Entry]:
        if spec.kind in MARGINAL_KINDS:
            return MarginalSynthesizer.planned_releases(spec.kind, spec.config, epsilon, delta)
        return TabularSynthesizer.planned_releases(spec.kind, spec.config, epsilon, delta,
                                                   n_records, steps) if steps else []

    def check(self, spec: ModelSpec) -> None:
        if spec.kind in MARGINAL_KINDS:
            resolve_marginal_config(spec.config, spec.kind)
        else:
            resolve_config(spec.config)

    @staticmethod
    def load(folder: Path) -> Any:
        """A released tabular model folder (``fedsynth generate --model``), whichever kind."""
        meta, schema = read_model_folder(folder, TABULAR_FILES, "tabular model")
        if meta["kind"] in MARGINAL_KINDS:
            state = torch.load(folder / TABULAR_FILES["state"], map_location="cpu", weights_only=True)
            return MarginalSynthesizer.from_saved(meta, schema, state)
        return TabularSynthesizer.load(folder)


class TextFamily:
    """The narrative model (``lora``): it learns from the train records that have a narrative.
    (Its module loads transformers, seconds of start-up: imported only when a plan has text.)"""

    kinds = ("lora",)

    def build(self, schema: Schema, spec: ModelSpec, seed: int, epsilon: float | None = None,
              delta: float = DEFAULT_DELTA, noise_seed: int | None = None, max_grad_norm: float = 1.0,
              ledger: Ledger | None = None, name: str | None = None) -> Any:
        from common.text.narrative_model import NarrativeModel

        return NarrativeModel(schema, epsilon=epsilon, delta=delta, config=spec.config, seed=seed,
                              ledger=ledger, name=name or spec.ledger_name, noise_seed=noise_seed,
                              max_grad_norm=max_grad_norm)

    def records(self, train: pd.DataFrame, schema: Schema, spec: ModelSpec) -> pd.DataFrame:
        """The train records with a note; refused when the plan's public corpus (the warm
        start) holds some of these notes: pretraining on them would not be public."""
        from common.text.public_corpus import overlap

        if schema.narrative is None:
            raise PlanRefused(f"the plan trains a narrative model, but the schema {schema.name} has "
                              f"no narrative column.")
        text = train[schema.narrative.name].astype("string")
        records = train[text.notna() & (text.str.strip() != "")]
        corpus = spec.config.get("public_corpus")
        if corpus:
            shared = overlap(records[schema.narrative.name], corpus.get("note_hashes", []))
            if shared:
                raise PlanRefused(
                    f"{shared} of this site's {len(records)} training notes are in the public "
                    f"corpus {corpus.get('name')!r} of the narrative model's warm start: "
                    f"pretraining on them would not be public. Run without the warm start "
                    f"(--public-corpus none) or with a corpus that does not hold the site's notes.")
        return records

    def planned(self, spec: ModelSpec, epsilon: float, delta: float, n_records: int,
                steps: int) -> list[Entry]:
        from common.text.narrative_model import NarrativeModel

        return NarrativeModel.planned_releases(spec.config, epsilon, delta, n_records, steps)

    def check(self, spec: ModelSpec) -> None:
        from common.text.narrative_model import resolve_config

        resolve_config(spec.config)


FAMILIES: dict[str, TabularFamily | TextFamily] = {"tabular": TabularFamily(), "text": TextFamily()}


def family_of(spec: ModelSpec) -> TabularFamily | TextFamily:
    """The family of ``spec``, refusing a plan that names an unknown family, kind or config."""
    family = FAMILIES.get(spec.family)
    if family is None or spec.kind not in family.kinds:
        known = ", ".join(f"{name} ({'/'.join(f.kinds)})" for name, f in FAMILIES.items())
        raise PlanRefused(f"the plan names a {spec.family} model of kind {spec.kind!r}; this site "
                          f"trains {known}.")
    return family

