"""The figures behind a site's plots, safe to leave the site: small-cell-suppressed histograms of
each modeled column (real test split vs synthetic) and a column-association matrix.

Bins come from the schema only (public bounds, code lists), never from data, so every site bins
alike and no bin edge reveals a record. A cell under ``MIN_CELL`` records is suppressed (null),
and more cells are suppressed until the suppressed cells of a histogram hold either no records or
at least ``MIN_CELL`` in all: a lone suppressed cell could otherwise be recovered by subtraction
(BRIEF, privacy rules: no cell under 10 records). The real side's shown cells and its size are
then rounded to a multiple of ten (``common.privacy.disclosure``), so the cells do not add up to
the split's exact size either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from common.metrics.features import modeled, unit_interval
from common.privacy.disclosure import MIN_CELL, rounded
from common.schema import Column, Schema

NUMERIC_BINS = 10  # equal-width bins over the public bounds
MAX_VALUE_BINS = 12  # an integer column with at most this many values gets one bin per value
MISSING = "missing"
SUPPRESSION_NOTE = (f"Cells with fewer than {MIN_CELL} records are suppressed (null), real and "
                    f"synthetic alike, and further cells until the suppressed ones hold 0 or at "
                    f"least {MIN_CELL} records together; the real counts shown and the split's size "
                    f"are rounded to a multiple of {MIN_CELL}; bins come from the schema, not the data.")


def suppress(counts: Sequence[int]) -> list[int | None]:
    """Counts with small cells nulled: every cell under MIN_CELL, then the smallest shown cells
    until the suppressed total is 0 or at least MIN_CELL (or nothing is left to suppress)."""
    shown: list[int | None] = [int(c) if c >= MIN_CELL else None for c in counts]
    hidden = sum(int(c) for c, s in zip(counts, shown, strict=True) if s is None)
    while 0 < hidden < MIN_CELL and any(s is not None for s in shown):
        smallest = min((i for i, s in enumerate(shown) if s is not None), key=lambda i: shown[i])
        hidden += shown[smallest]
        shown[smallest] = None
    return shown


def cell_codes(series: pd.Series, col: Column) -> tuple[np.ndarray, list[str]]:
    """Each value's cell index and the cell labels, from the schema: categories (booleans as
    false/true), one cell per value of a short integer range, else NUMERIC_BINS equal-width bins
    over the bounds; a last ``missing`` cell for nullable columns."""
    if col.is_numeric or col.type == "datetime":
        labels, edges = _bins(col)
        unit = unit_interval(series, col)
        codes = np.clip(np.searchsorted(edges, unit, side="right") - 1, 0, len(labels) - 1)
        missing = np.isnan(unit)
    else:
        categories = [False, True] if col.type == "boolean" else list(col.categories)
        labels = [str(c).lower() if col.type == "boolean" else str(c) for c in categories]
        values = series.astype(object).where(series.notna(), None)
        codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
        missing = codes < 0
    if col.nullable:
        labels = [*labels, MISSING]
    codes = np.where(missing, len(labels) - 1 if col.nullable else -1, codes)
    return codes, labels


def _bins(col: Column) -> tuple[list[str], np.ndarray]:
    """Cell labels and left edges on the [0, 1] scale of ``unit_interval``. Integer bins are
    labelled by the whole numbers they hold (a value on an edge belongs to the bin it opens)."""
    span = col.max - col.min if col.is_numeric else None
    if col.type == "integer" and span + 1 <= MAX_VALUE_BINS:
        values = np.arange(col.min, col.max + 1)
        return [str(int(v)) for v in values], (values - col.min - 0.5) / span
    edges = np.linspace(0.0, 1.0, NUMERIC_BINS + 1)
    if col.type == "datetime":
        lo, hi = pd.Timestamp(col.min), pd.Timestamp(col.max)
        stamps = [(lo + (hi - lo) * e).date().isoformat() for e in edges]
        labels = [f"{a} to {b}" for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    elif col.type == "integer":
        firsts = [int(np.ceil(col.min + span * e)) for e in edges]
        lasts = [f - 1 for f in firsts[1:-1]] + [int(col.max)]
        labels = [str(a) if a == b else f"{a}-{b}" for a, b in zip(firsts[:-1], lasts, strict=True)]
    else:
        bounds = [f"{col.min + span * e:g}" for e in edges]
        labels = [f"{a} to {b}" for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return labels, edges[:-1]


def histograms(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> dict[str, dict[str, Any]]:
    """Per modeled column: cell labels and suppressed real (rounded) and synthetic counts, with
    the sizes the counts are shares of (plot ``count / n``)."""
    out = {}
    for col in schema.modeled_columns:
        sides = {}
        for side, frame in (("real", real), ("synthetic", synth)):
            codes, labels = cell_codes(frame[col.name], col)
            sides[side] = suppress(np.bincount(codes[codes >= 0], minlength=len(labels)))
        sides["real"] = [None if c is None else rounded(c) for c in sides["real"]]
        out[col.name] = {"type": col.type, "cells": labels, **sides,
                         "n_real": rounded(len(real)), "n_synthetic": len(synth)}
    return out


def cramers_v(frame: pd.DataFrame, schema: Schema) -> list[list[float | None]]:
    """Bias-corrected Cramér's V (Bergsma 2013) between every pair of modeled columns, on the cells
    of ``cell_codes`` (missing is a cell of its own), 1 on the diagonal. The correction matters
    here: a 150-record test split and 2,000 synthetic records would otherwise differ by sample
    size alone. None where a column has a single occupied cell."""
    coded = [cell_codes(frame[col.name], col) for col in schema.modeled_columns]
    k = len(coded)
    matrix: list[list[float | None]] = [[1.0 if i == j else None for j in range(k)] for i in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            (x, x_cells), (y, y_cells) = coded[i], coded[j]
            matrix[i][j] = matrix[j][i] = _cramers_v(x, len(x_cells), y, len(y_cells))
    return matrix


def _cramers_v(x: np.ndarray, nx: int, y: np.ndarray, ny: int) -> float | None:
    keep = (x >= 0) & (y >= 0)
    table = np.bincount(x[keep] * ny + y[keep], minlength=nx * ny).reshape(nx, ny).astype(float)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n, (r, c) = table.sum(), table.shape
    if min(r, c) < 2 or n < 2:
        return None
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    phi2 = ((table - expected) ** 2 / expected).sum() / n
    phi2 = max(0.0, phi2 - (r - 1) * (c - 1) / (n - 1))
    dof = min(r - (r - 1) ** 2 / (n - 1), c - (c - 1) ** 2 / (n - 1)) - 1
    return float(np.sqrt(phi2 / dof)) if dof > 0 else None


def associations(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Cramér's V matrices of real and synthetic and their difference (synthetic - real), over the
    modeled columns. Each entry aggregates a whole split (at least MIN_CELL records), so nothing
    is suppressed cell by cell; a split under MIN_CELL records gives no matrix at all."""
    columns = [col.name for col in schema.modeled_columns]
    if min(len(real), len(synth)) < MIN_CELL:
        return {"columns": columns, "real": None, "synthetic": None, "difference": None}
    v_real, v_synth = cramers_v(real, schema), cramers_v(synth, schema)
    difference = [[None if r is None or s is None else s - r for r, s in zip(rr, ss, strict=True)]
                  for rr, ss in zip(v_real, v_synth, strict=True)]
    return {"columns": columns, "real": v_real, "synthetic": v_synth, "difference": difference}


def plot_data(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Everything a site's plots need, JSON-able: histograms, associations, and the rule applied."""
    real, synth = modeled(real, schema), modeled(synth, schema)
    return {"min_cell": MIN_CELL, "note": SUPPRESSION_NOTE, "label": schema.label.name,
            "histograms": histograms(real, synth, schema),
            "associations": associations(real, synth, schema)}
