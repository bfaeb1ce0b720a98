"""Run profiles: how big a demo or simulation is. Fixed here, never tuned on private data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunProfile:
    name: str
    sites: int
    records_per_site: int


PROFILES = {
    "quick": RunProfile("quick", sites=5, records_per_site=800),
    "full": RunProfile("full", sites=5, records_per_site=4000),
}
