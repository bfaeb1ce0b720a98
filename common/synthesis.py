"""Sampling a synthetic dataset from released global generators (a run's ``model/`` folder): the
tabular records, then (when the folder holds a narrative adapter) a narrative for each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from common.errors import InputError
from common.stages.models import TabularFamily
from common.text.narrative_model import FILES as NARRATIVE_FILES
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel


def parse_conditions(items: Sequence[str]) -> dict[str, str]:
    """``["mechanism=drowning", "sex=F"]`` -> a dict; values are parsed by column type later."""
    conditions: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--condition {item!r} is not COL=VALUE (e.g. --condition mechanism=drowning).")
        if name.strip() in conditions:
            raise InputError(f"--condition names column '{name.strip()}' twice.")
        conditions[name.strip()] = value.strip()
    return conditions


def has_narratives(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a narrative model (a run with narratives)."""
    return (Path(model_dir) / NARRATIVE_FILES["meta"]).exists()


CPU_NARRATED = 50  # records ``fedsynth generate`` narrates by default without a GPU: about a minute


def synthesize(model_dir: str | Path, n: int, conditions: dict[str, str] | None = None,
               seed: int | None = None, text: bool = True, narrate: int | None = None,
               label: str | None = None) -> pd.DataFrame:
    """``n`` synthetic records from the global tabular generator in ``model_dir``; when
    ``text`` and the folder has a narrative model, the first ``narrate`` (None: all) get a
    narrative, with a progress bar named ``label``."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model folder not found; pass the model/ folder of a run "
                         f"(e.g. runs/demo/model).")
    synthesizer = TabularFamily.load(model_dir)
    records = synthesizer.sample(n, conditions=conditions, seed=seed)
    if text and has_narratives(model_dir):
        records = add_narratives(records, NarrativeModel.load(model_dir), narrate, seed, label)
    return records


def add_narratives(records: pd.DataFrame, model: NarrativeModel, limit: int | None,
                   seed: int | None, label: str | None = None) -> pd.DataFrame:
    """``records`` with a narrative (and the gate's ``narrative_flagged``) for the first ``limit``
    of them (all when None); the others keep an empty narrative and flag, so a quick CPU run
    can release many records and narrate a few. With ``label``, a progress bar (on stderr)."""
    limit = len(records) if limit is None else min(limit, len(records))
    with tqdm(total=limit, desc=label, unit="note", disable=None if label else True,
              leave=False) as bar:
        narrated = model.sample(records.iloc[:limit], seed=seed, progress=bar)
    column = model.schema.narrative.name
    out = records.copy()
    out[column] = pd.array([pd.NA] * len(out), dtype="string")
    out[FLAG_COLUMN] = pd.array([pd.NA] * len(out), dtype="boolean")
    out.loc[out.index[:limit], column] = narrated[column].to_numpy()
    out.loc[out.index[:limit], FLAG_COLUMN] = narrated[FLAG_COLUMN].to_numpy()
    return out
