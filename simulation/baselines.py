"""The centralized baseline of a simulated run: what one data holder with every site's records
would get. It exists only in simulation (in a real consortium nobody may pool the records); the
report sets it beside the federated release and the sites' local-only models. Each simulated site
scores it on its own held-out split here, in the simulation's process: it never passes through a
deployed site, which scores only the release its coordinator announced.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from common.data import load_site_data, stratified_split
from common.metrics.evaluate import evaluate_site
from common.run_plan import ModelSpec, RunPlan
from common.schema import Schema
from common.site_config import SiteConfig
from common.stages.models import family_of
from common.stages.site import SiteRun
from simulation.profiles import RunProfile


def pooled_split(site_files: dict[str, Path], schema: Schema, seed: int, part: str = "train") -> pd.DataFrame:
    """One split (``train``, ``holdout`` or ``test``) of every site, as the site cuts it, pooled."""
    return pd.concat([stratified_split(load_site_data(path, schema), schema.label.name, seed)[part]
                      for _, path in sorted(site_files.items())], ignore_index=True)


def centralized_synthetic(site_files: dict[str, Path], schema: Schema, profile: RunProfile,
                          generator: str, epsilon: float, delta: float, seed: int) -> pd.DataFrame:
    """``profile.synthetic_records`` from one DP model trained on the pooled train splits, with a
    site's epsilon and delta, total steps (rounds x local steps), settings and initial weights:
    the federated model's ceiling."""
    spec = ModelSpec("tabular", generator, profile.config_for(generator))
    synth = family_of(spec).build(schema, spec, seed, epsilon=epsilon, delta=delta)
    synth.fit(pooled_split(site_files, schema, seed), steps=profile.rounds * profile.local_steps)
    return synth.sample(profile.synthetic_records, seed=seed)


def scored_at_sites(sites: Sequence[SiteConfig], plan: RunPlan, synthetic: pd.DataFrame,
                    seed: int) -> dict[str, dict[str, Any]]:
    """Each simulated site's evaluation of ``synthetic`` (METRICS and plots) on its own splits."""
    return {site.name: evaluate_site(run.schema, run.splits, synthetic, seed).to_json()
            for site in sites for run in [SiteRun(site, plan)]}
