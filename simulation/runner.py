"""The local multi-site pipeline: load every site's file as a site would, split it, summarise.

Each stage added by later issues (federated training, synthesis, evaluation) plugs in after
``prepare_sites``, which gives every site the same treatment a real site client applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.data import load_site_data, stratified_split
from common.schema import Schema


@dataclass
class SiteData:
    name: str
    path: Path
    splits: dict[str, pd.DataFrame]

    @property
    def n_records(self) -> int:
        return sum(len(part) for part in self.splits.values())


def prepare_sites(site_files: dict[str, Path], schema: Schema, seed: int) -> list[SiteData]:
    """Load, validate (reject on any problem) and split each site's file."""
    sites = []
    for name, path in sorted(site_files.items()):
        frame = load_site_data(path, schema, bad_rows="reject")
        sites.append(SiteData(name, path, stratified_split(frame, schema.label.name, seed)))
    return sites


def summary_table(sites: list[SiteData], schema: Schema) -> pd.DataFrame:
    """Per-site counts and case mix (simulated data only: real sites never print this)."""
    label = schema.label.name
    rows = []
    for site in sites:
        whole = pd.concat(site.splits.values(), ignore_index=True)
        top = whole[label].value_counts(normalize=True).head(3)
        rows.append({
            "site": site.name,
            "records": site.n_records,
            **{split: len(part) for split, part in site.splits.items()},
            "median_age": float(whole["age"].median()) if "age" in whole else None,
            "top_mechanisms": ", ".join(f"{k} {v:.0%}" for k, v in top.items()),
        })
    return pd.DataFrame(rows)
