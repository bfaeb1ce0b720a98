"""Fidelity: how closely a synthetic set resembles a site's held-out real split (CONTRACT METRICS).

Column Shapes only compares one column at a time, and independent marginals already score about
0.95 on it (BRIEF, "What the figures mean"); Column Pair Trends and the detection AUC are the
figures that tell a generator from the marginals baseline, so ``fidelity_metrics`` returns all four
together and reports should never show Column Shapes alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance
from sdmetrics.reports import QualityReport
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

from common.metrics.features import (
    TABLE,
    FeatureEncoder,
    classifier,
    modeled,
    one_thread,
    sdmetrics_frame,
    sdv_metadata,
)
from common.schema import Schema

DETECTION_FOLDS = 5


def quality_scores(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """sdmetrics 0.32 QualityReport over the modeled columns, with metadata from the schema.

    One report yields both properties, so ``fidelity_metrics`` computes it once;
    ``column_shapes`` and ``column_pair_trends`` serve callers that want a single figure.
    """
    report = QualityReport()
    with warnings.catch_warnings():  # constant columns in small splits make scipy/sdmetrics chatty
        warnings.simplefilter("ignore")
        report.generate({TABLE: sdmetrics_frame(modeled(real, schema), schema)},
                        {TABLE: sdmetrics_frame(modeled(synth, schema), schema)},
                        sdv_metadata(schema), verbose=False)
    scores = report.get_properties().set_index("Property")["Score"]
    return {"column_shapes": float(scores["Column Shapes"]),
            "column_pair_trends": float(scores["Column Pair Trends"])}


def column_shapes(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> float:
    """Mean per-column similarity (KS complement for numbers/dates, TV complement otherwise); 1 = same."""
    return quality_scores(real, synth, schema)["column_shapes"]


def column_pair_trends(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> float:
    """Mean pairwise similarity (correlation for number pairs, contingency otherwise); 1 = same."""
    return quality_scores(real, synth, schema)["column_pair_trends"]


def detection_auc(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema, seed: int = 0) -> float:
    """Mean 5-fold cross-validated ROC AUC of a gradient-boosted classifier telling ``real`` from an
    equal-size sample of ``synth`` (the larger side is subsampled, seeded). 0.5 = indistinguishable;
    values a little under 0.5 are noise, not better than perfect.

    A row found on both sides shares its fold with all its twins. Otherwise it is scored by a
    classifier that memorised its twin under the other label, and a perfect copy of the real split
    would score ~0.03 instead of 0.5. Copies are the privacy metrics' business (``exact_copies``),
    not fidelity's.
    """
    n = min(len(real), len(synth))
    if n < DETECTION_FOLDS:
        raise ValueError(f"detection needs at least {DETECTION_FOLDS} records on each side "
                         f"(got {len(real)} real, {len(synth)} synthetic)")
    rng = np.random.default_rng(seed)
    sides = [frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))] for frame in (real, synth)]
    encoder = FeatureEncoder(schema.modeled_columns).fit(*sides)
    x = encoder.stack(sides)
    is_synth = np.repeat([0, 1], n)
    row = pd.factorize(pd.util.hash_pandas_object(x, index=False))[0]
    on_both_sides = np.isin(row, row[:n]) & np.isin(row, row[n:])
    groups = np.where(on_both_sides, row, row.max() + 1 + np.arange(2 * n))
    folds = StratifiedGroupKFold(DETECTION_FOLDS, shuffle=True, random_state=seed)
    with one_thread():
        scores = cross_val_score(classifier(seed), x, is_synth, groups=groups, cv=folds,
                                 scoring="roc_auc")
    return float(scores.mean())


def wasserstein_mean(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> float:
    """Mean over numeric modeled columns of the 1-D Wasserstein distance between present values,
    each column scaled to [0, 1] by its public schema bounds (so columns weigh alike). A column
    present on one side only counts 1, the largest distance on [0, 1]; NaN if no numeric column."""
    distances = []
    for col in schema.modeled_columns:
        if not col.is_numeric:
            continue
        a, b = (_unit_scaled(frame[col.name], col.min, col.max) for frame in (real, synth))
        if len(a) and len(b):
            distances.append(wasserstein_distance(a, b))
        elif len(a) or len(b):
            distances.append(1.0)
    return float(np.mean(distances)) if distances else float("nan")


def _unit_scaled(series: pd.Series, lo: float, hi: float) -> np.ndarray:
    values = series.dropna().astype("float64").to_numpy()
    return (values - lo) / (hi - lo)


def fidelity_metrics(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema,
                     seed: int = 0) -> dict[str, float]:
    """CONTRACT METRICS.fidelity: synthetic vs the site's held-out test split."""
    return {**quality_scores(real, synth, schema),
            "detection_auc": detection_auc(real, synth, schema, seed),
            "wasserstein_mean": wasserstein_mean(real, synth, schema)}
