"""Propose a schema from a data file, for a person to confirm.

A schema must hold only public knowledge, yet the quickest start is to look at a file. So the
proposal widens every numeric bound to a round number (the exact minimum and maximum of private
data never appear) and lists each bound and category list the user must confirm is public (a
clinical range, a coding manual) before the schema is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.data import _FALSE, _NULLS, _TRUE, read_raw
from common.errors import InputError
from common.schema import Column, Schema

_ID_NAME = re.compile(r"(^|_)(id|case|number|mrn|uuid)($|_)|case_?number", re.IGNORECASE)


@dataclass
class SchemaProposal:
    schema: Schema
    to_confirm: list[str] = field(default_factory=list)

    def confirmation_notice(self) -> str:
        lines = [f"Proposed schema for {self.schema.source} ({len(self.schema.columns)} columns).",
                 "Before use, confirm each of these is PUBLIC knowledge (a clinical range, a coding",
                 "manual), not something read off your data; edit the YAML where it is not:"]
        lines += [f"  - {item}" for item in self.to_confirm]
        return "\n".join(lines)


def widened_bounds(lo: float, hi: float) -> tuple[float, float]:
    """Round both bounds outward on a step of the range's own magnitude (range 74 -> step 100).

    The exact extremes of private data never show, and the proposal stays a plausible range.
    """
    step = 10.0 ** math.ceil(math.log10(hi - lo)) if hi > lo else 1.0
    low = math.floor(lo / step) * step
    high = math.ceil(hi / step) * step
    if high == low:
        high = low + step
    return float(round(low, 10)), float(round(high, 10))


def infer_schema(path: str | Path, label: str | None = None, text: str | None = None,
                 site: str | None = None, max_categories: int = 60) -> SchemaProposal:
    raw = read_raw(path)
    if raw.empty:
        raise InputError(f"{path}: the file has no data rows; a schema cannot be proposed.")
    for flag, name in (("--label", label), ("--text", text), ("--site", site)):
        if name is not None and name not in raw.columns:
            raise InputError(f"{path}: {flag} names column '{name}', which is not in the file. "
                             f"Columns: {list(raw.columns)}.")
    if label is None:
        raise InputError(f"{path}: pass --label COL, the column to use as the label (the injury "
                         f"mechanism); columns: {list(raw.columns)}.")
    columns: list[Column] = []
    notes: list[str] = []
    for name in raw.columns:
        values = raw[name].map(lambda v: None if v is None else str(v).strip())
        present = values[values.map(lambda v: v is not None and v.lower() not in _NULLS)]
        nullable = len(present) < len(values)
        column, note = _infer_column(name, present, nullable, len(values), label, text, site,
                                     max_categories)
        columns.append(column)
        if note:
            notes.append(note)
    schema = Schema(name=Path(path).stem, columns=tuple(columns), source=str(path))
    return SchemaProposal(schema=schema, to_confirm=notes)


def _infer_column(name: str, present: pd.Series, nullable: bool, n_rows: int, label: str | None,
                  text: str | None, site: str | None, max_categories: int) -> tuple[Column, str]:
    distinct = sorted(present.unique().tolist())
    if name == text:
        return Column(name, "text", role="narrative", nullable=nullable), ""
    if name in (label, site):
        role = "label" if name == label else "site"
        note = f"{name}: category list {_short(distinct)} ({role})"
        if role == "label" and nullable:
            note += "; the label has missing values: add a category such as 'unknown' and fill them"
        return Column(name, "categorical", role=role, nullable=nullable and role != "label",
                      categories=tuple(distinct),
                      description="PROPOSED from data: confirm the list is public"), note
    if not distinct:
        return Column(name, "text", role="ignore", nullable=True,
                      description="empty in the sample file"), ""
    if len(distinct) == n_rows and _ID_NAME.search(name):
        return Column(name, "text", role="identifier"), ""
    if {v.lower() for v in distinct} <= (_TRUE | _FALSE) and len(distinct) <= 2:
        return Column(name, "boolean", nullable=nullable), ""
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        whole = bool((numbers == numbers.round()).all())
        lo, hi = widened_bounds(float(numbers.min()), float(numbers.max()))
        ctype = "integer" if whole else "float"
        return (Column(name, ctype, nullable=nullable, min=int(lo) if whole else lo,
                       max=int(hi) if whole else hi,
                       description="PROPOSED bounds: replace with public clinical bounds"),
                f"{name}: bounds [{lo:g}, {hi:g}] (widened from the data; use the clinical range)")
    dates = pd.to_datetime(present, errors="coerce", format="ISO8601")
    if dates.notna().all():
        lo = f"{dates.min().year}-01-01"
        hi = f"{dates.max().year}-12-31"
        return (Column(name, "datetime", nullable=nullable, min=lo, max=hi,
                       description="PROPOSED bounds: confirm the collection period is public"),
                f"{name}: date bounds [{lo}, {hi}] (the data collection period)")
    if len(distinct) <= max_categories:
        return (Column(name, "categorical", nullable=nullable, categories=tuple(distinct),
                       description="PROPOSED from data: confirm the list is a public code list"),
                f"{name}: category list {_short(distinct)}")
    return (Column(name, "text", role="ignore", nullable=nullable,
                   description=f"free text ({len(distinct)} distinct values): not modeled"), "")


def _short(values: list[str], limit: int = 6) -> str:
    shown = ", ".join(values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} values)"
