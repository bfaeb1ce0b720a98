"""Run profiles: how big a demo or simulation is. Fixed here, never tuned on private data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunProfile:
    name: str
    sites: int                # simulated hospitals (demo only)
    records_per_site: int     # simulated records per hospital (demo only)
    rounds: int               # federated rounds
    local_steps: int          # DP-SGD steps per site per round
    synthetic_records: int    # size of the released synthetic dataset
    tabular_config: dict[str, Any] = field(default_factory=dict)


PROFILES = {
    "quick": RunProfile("quick", sites=5, records_per_site=800, rounds=3, local_steps=100,
                        synthetic_records=2000,
                        tabular_config={"batch_size": 128, "lr": 3e-3, "model": {"hidden": [128, 128]}}),
    "full": RunProfile("full", sites=5, records_per_site=4000, rounds=10, local_steps=150,
                       synthetic_records=10000, tabular_config={"batch_size": 256, "lr": 2e-3}),
}
