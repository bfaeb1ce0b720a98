"""Canaries for a simulated run (issue "memorization guard"): random secrets planted in one site's
training narratives before the run; after it, their exposure in the global narrative model says
whether federated DP-LoRA memorised them (Carlini et al., The Secret Sharer).

Simulation only: nobody plants canaries in a hospital's records. The planted copy of the site's
file and the list of canaries stay in the simulation's private folder; only the exposure in bits
reaches the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from common.data import load_site_data, read_raw, stratified_split
from common.fileio import atomic_write_text, write_table
from common.schema import Schema
from common.text.canary import Canary, plant, random_secret

if TYPE_CHECKING:
    from common.text.narrative_model import NarrativeModel

CANARIES, COPIES, CANDIDATES = 3, 2, 63  # exposure tops out at log2(64) = 6 bits


@dataclass(frozen=True)
class PlantedCanaries:
    site: str
    site_file: Path  # the site's data with the canaries appended to some train narratives
    spec: Path  # JSON: the canaries, and a record + original narrative carrying each


def plant_canaries(site_files: dict[str, Path], schema: Schema, seed: int,
                   folder: Path) -> PlantedCanaries:
    """Append ``CANARIES`` secrets, each to ``COPIES`` narratives of the first site's train split
    (as the site will cut it with ``seed``), in a copy of its file in ``folder``."""
    site = sorted(site_files)[0]
    raw = read_raw(site_files[site])
    typed = load_site_data(site_files[site], schema).assign(_row=np.arange(len(raw)))
    train_rows = stratified_split(typed, schema.label.name, seed)["train"]["_row"].to_numpy()
    column = schema.narrative.name
    rng = np.random.default_rng(seed + 7919)
    canaries = [Canary(random_secret(rng)) for _ in range(CANARIES)]
    texts, where = plant([str(raw[column].iloc[r]) for r in train_rows], canaries, COPIES, rng)
    planted = raw.copy()
    for carriers in where:
        for i in carriers:
            planted.loc[planted.index[train_rows[i]], column] = texts[i]
    site_file = write_table(planted, folder / f"{site}{site_files[site].suffix}")
    carriers = [typed.drop(columns="_row").iloc[train_rows[rows[0]]].to_dict() for rows in where]
    spec = [{"secret": c.secret, "record": {k: _plain(v) for k, v in record.items()},
             "narrative": str(record[column])} for c, record in zip(canaries, carriers, strict=True)]
    atomic_write_text(folder / "canaries.json", json.dumps(
        {"site": site, "candidates": CANDIDATES, "canaries": spec}, default=str) + "\n")
    return PlantedCanaries(site, site_file, folder / "canaries.json")


def _plain(value: object) -> object:
    """A JSON-able cell value (numpy scalars to Python, missing to None)."""
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def canary_exposure_bits(model: NarrativeModel, spec_path: Path, seed: int) -> tuple[str, float]:
    """The site whose training narratives carried the canaries of ``spec_path`` and their mean
    exposure in the global narrative model, in bits."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    bits = [model.canary_exposure(c["record"], c["narrative"], Canary(c["secret"]),
                                  int(spec["candidates"]), seed=seed + i)
            for i, c in enumerate(spec["canaries"])]
    return str(spec["site"]), float(np.mean(bits))
