"""Run profiles: how big a demo or simulation is. Fixed here, never tuned on private data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.run_plan import MARGINAL_KINDS


@dataclass(frozen=True)
class RunProfile:
    name: str
    sites: int                # simulated hospitals (demo only)
    records_per_site: int     # simulated records per hospital (demo only)
    rounds: int               # federated rounds
    local_steps: int          # DP-SGD steps per site per round
    synthetic_records: int    # size of the released synthetic dataset
    tabular_config: dict[str, Any] = field(default_factory=dict)  # the deep generators' (vae, ddpm)
    marginal_config: dict[str, Any] = field(default_factory=dict)  # the marginal models' (mst, aim)
    text_rounds: int = 0      # federated DP-LoRA rounds of the narrative model's adapters
    text_local_steps: int = 0  # DP-SGD steps per site per text round
    narrated_records: int | None = None  # released records that get a narrative (None: all)
    text_config: dict[str, Any] = field(default_factory=dict)  # NarrativeModel config

    @property
    def has_text(self) -> bool:
        """Whether the profile trains a narrative model (DP-LoRA rounds or PE vote rounds)."""
        return self.text_rounds > 0 or self.text_config.get("pe", {}).get("rounds", 0) > 0

    def config_for(self, generator: str) -> dict[str, Any]:
        """The model settings of ``generator`` in this profile."""
        return self.marginal_config if generator in MARGINAL_KINDS else self.tabular_config


# What an ED note says about its record; a profile prompts with those its schema has (the label
# first), not every vital sign: a prompt of every column is ~200 tokens, of these ~60.
PROMPT_FIELDS = ["mechanism", "intent", "place", "activity", "age", "sex", "body_region",
                 "injury_type", "gcs", "disposition"]

PROFILES = {
    # Quick: minutes on 2 CPU cores. The narratives come from the public warm start (NEISS) and
    # two rounds of private evolution, the whole text budget on votes: DP-LoRA at a CPU's batch
    # sizes sits at sigma/B ~0.08, far above what learns (docs/narratives.md), and the plan would
    # be refused. 500 released records are narrated (CPU generation runs at ~100 tokens/s).
    "quick": RunProfile("quick", sites=5, records_per_site=800, rounds=3, local_steps=100,
                        synthetic_records=2000,
                        tabular_config={"batch_size": 128, "lr": 3e-3, "model": {"hidden": [128, 128]}},
                        narrated_records=500,
                        text_config={"base": "smollm2", "fields": PROMPT_FIELDS,
                                     "batch_size": 8, "max_target_tokens": 64,
                                     "pe": {"rounds": 2, "share": 1.0, "candidates": 4,
                                            "pool_records": 400},
                                     "sampling": {"max_new_tokens": 64, "batch_size": 25,
                                                  "retries": 1}}),
    # Full: a GPU. DP-LoRA at logical batches of 512 (physical 16) over 5 x 50 steps, then
    # private evolution on the trained adapter, the text budget split between them; every
    # released record is narrated.
    "full": RunProfile("full", sites=5, records_per_site=4000, rounds=10, local_steps=150,
                       synthetic_records=10000, tabular_config={"batch_size": 256, "lr": 2e-3},
                       text_rounds=5, text_local_steps=50,
                       text_config={"base": "smollm2", "fields": PROMPT_FIELDS, "batch_size": 512,
                                    "physical_batch_size": 16,
                                    "pe": {"rounds": 3, "share": 0.5, "candidates": 8,
                                           "pool_records": 2000}}),
}
