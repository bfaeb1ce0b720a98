"""Conditional sampling from any generator: conditions parsed like a data file's cells, then
met by rejection sampling within a bounded number of draws (``fedsynth generate --condition``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from common.data import parse_column
from common.errors import InputError
from common.schema import Schema

SAMPLE_CHUNK = 4096


def parse_conditions(schema: Schema, conditions: Mapping[str, Any]) -> dict[str, Any]:
    """Each condition parsed by its column's type, as a data file's cell would be."""
    modeled = [c.name for c in schema.modeled_columns]
    parsed = {}
    for name, value in conditions.items():
        if name not in modeled:
            raise InputError(f"unknown condition column '{name}'; conditions may name the "
                             f"modeled columns {modeled}.")
        col = schema[name]
        series, problems = parse_column(pd.Series([None if value is None else str(value)]), col)
        if problems:
            allowed = (list(col.categories) if col.categories else ["true", "false"]
                       if col.type == "boolean" else f"[{col.min}, {col.max}]")
            raise InputError(f"condition {name}={value!r}: {problems[0].reason}; allowed "
                             f"values: {allowed}.")
        parsed[name] = series.iloc[0]
    return parsed


def rejection_sample(draw: Callable[[int], pd.DataFrame], n: int, wanted: Mapping[str, Any],
                     max_draws: int, conditions: Mapping[str, Any]) -> pd.DataFrame:
    """``n`` records of ``draw(size)`` that match ``wanted``, drawing in chunks sized by the
    acceptance rate so far; refused once ``max_draws`` records were drawn."""
    drawn, have, kept = 0, 0, []
    while have < n:
        if drawn >= max_draws:
            raise InputError(f"conditions {dict(conditions)} are too rare for this model: {have} of "
                             f"{n} records matched after {drawn} draws. Fix: condition on the label "
                             f"column, relax the conditions, or ask for fewer records.")
        acceptance = max(have, 1) / drawn if drawn else 1.0
        size = min(SAMPLE_CHUNK, max_draws - drawn, int(np.ceil(1.1 * (n - have) / acceptance)))
        frame = draw(size)
        kept.append(frame[matches(frame, wanted)])
        drawn, have = drawn + size, have + len(kept[-1])
    return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)


def matches(frame: pd.DataFrame, wanted: Mapping[str, Any]) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    for name, value in wanted.items():
        column = frame[name]
        keep &= (column.isna() if pd.isna(value) else (column == value).fillna(False)).to_numpy(bool)
    return keep
