"""The centralized baseline of a simulated run: what one data holder with every site's records
would get. It exists only in simulation (in a real consortium nobody may pool the records); the
report sets it beside the federated model and the sites' local-only models (``client.task``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.data import load_site_data, stratified_split
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from simulation.profiles import RunProfile


def pooled_split(site_files: dict[str, Path], schema: Schema, seed: int, part: str = "train") -> pd.DataFrame:
    """One split (``train``, ``holdout`` or ``test``) of every site, as the site cuts it, pooled."""
    return pd.concat([stratified_split(load_site_data(path, schema), schema.label.name, seed)[part]
                      for _, path in sorted(site_files.items())], ignore_index=True)


def centralized_synthetic(site_files: dict[str, Path], schema: Schema, profile: RunProfile,
                          generator: str, epsilon: float, seed: int) -> pd.DataFrame:
    """``profile.synthetic_records`` from one DP model trained on the pooled train splits, with a
    site's epsilon, delta rule (1/(10 n) of its records), total steps (rounds x local steps),
    settings and initial weights: the federated model's ceiling."""
    synth = TabularSynthesizer(schema, kind=generator, epsilon=epsilon,
                               config=profile.tabular_config, seed=seed)
    synth.fit(pooled_split(site_files, schema, seed), steps=profile.rounds * profile.local_steps)
    return synth.sample(profile.synthetic_records, seed=seed)
