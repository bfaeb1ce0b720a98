"""How the metrics see a typed frame: the modeled columns only, as sdmetrics or a classifier wants them.

Every metric is computed over the schema's modeled columns (features + label), never identifiers,
the site or the narrative, so a synthetic file and a real split are compared on what the
generators learn. The conversions here are the only place that knows the typed-frame conventions
of ``common.data`` (nullable Int64/boolean, Categorical over the code list, datetime64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from common.errors import InputError
from common.schema import Column, Schema

TABLE = "records"  # the one table of the SDV/sdmetrics metadata
SDTYPES = {"integer": "numerical", "float": "numerical", "categorical": "categorical",
           "boolean": "boolean", "datetime": "datetime"}
# One classifier family and one setting for detection, TRTR, TSTR and augmented: fixed here,
# never tuned on data. No early stopping, so a fit depends on its data and seed only. The L2 term
# and small trees keep the multi-class fit stable: unregularised, duplicated rare-class rows (as
# augmentation adds) drove raw scores to ~1e4 and macro-F1 to 0.12 on simulated data.
CLASSIFIER_PARAMS: dict[str, Any] = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 15,
                                     "min_samples_leaf": 20, "l2_regularization": 1.0,
                                     "early_stopping": False}
# HistGradientBoosting bins a categorical feature into at most 255 codes; longer code lists
# (NEISS products: 1,120) keep their most frequent categories and pool the rest.
MAX_CATEGORY_CODES = 254


def classifier(seed: int) -> HistGradientBoostingClassifier:
    """The gradient-boosted classifier every metric uses; missing values are handled natively.
    Fit and predict it inside ``one_thread()``."""
    return HistGradientBoostingClassifier(**CLASSIFIER_PARAMS, categorical_features="from_dtype",
                                          random_state=seed)


def one_thread() -> threadpool_limits:
    """Run the classifier on one OpenMP thread. Its many short parallel regions spin-wait when a
    core is shared: on 2 busy cores one 2,000-row fit took 35 s of CPU with two threads and 2 s
    with one. Metric-sized data gains little from more threads anyway."""
    return threadpool_limits(limits=1, user_api="openmp")


def modeled(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The modeled columns of ``frame`` in schema order; a missing one is the caller's error."""
    names = [c.name for c in schema.modeled_columns]
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise InputError(f"the frame lacks modeled column(s) {absent} of schema '{schema.name}'; "
                         f"score frames that hold every feature and the label.")
    return frame[names]


def sdv_metadata(schema: Schema) -> dict[str, Any]:
    """SDV/sdmetrics metadata (the unified form: one table, ``TABLE``) built from the schema,
    never inferred from data."""
    columns = {c.name: {"sdtype": SDTYPES[c.type]} for c in schema.modeled_columns}
    return {"tables": {TABLE: {"columns": columns}}}


def sdmetrics_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Plain dtypes sdmetrics handles: float with NaN for numbers, objects with None for
    categories and booleans (missing is then a category of its own), datetime64 as is."""
    out = {}
    for col in schema.modeled_columns:
        series = frame[col.name]
        if col.is_numeric:
            out[col.name] = series.astype("float64")
        elif col.type in ("categorical", "boolean"):
            out[col.name] = series.astype(object).where(series.notna(), None)
        else:
            out[col.name] = pd.to_datetime(series)
    return pd.DataFrame(out, index=frame.index)


class FeatureEncoder:
    """Typed frame -> a classifier's design matrix over ``columns``.

    Numbers (and datetimes, as days) stay numbers with NaN for missing; categories and booleans
    become pandas categoricals, which the classifier splits on natively. Short code lists keep the
    schema's order; a list longer than ``MAX_CATEGORY_CODES`` keeps the categories most frequent
    in the frames given to ``fit`` (the classifier's own training data, nothing shared) and pools
    the others, so that train and test frames are always encoded alike. Detection fits on both
    sides: fitted on one, the pooled category would exist on the other side only and give it away.
    A number missing in every record of the fitted frames carries nothing to split on, and the
    classifier cannot bin it: it is left out of the matrix.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self._kept: dict[str, list[str]] = {}

    def fit(self, *frames: pd.DataFrame) -> FeatureEncoder:
        for col in self.columns:
            if col.type == "categorical" and len(col.categories) > MAX_CATEGORY_CODES:
                counts = pd.concat([f[col.name].astype(object) for f in frames]).value_counts()
                self._kept[col.name] = [str(c) for c in counts.index[:MAX_CATEGORY_CODES - 1]]
        self.columns = [col for col in self.columns if col.type in ("categorical", "boolean")
                        or any(f[col.name].notna().any() for f in frames)]
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({col.name: self._encode(frame[col.name], col) for col in self.columns},
                            index=frame.index)

    def stack(self, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Encode frames one by one, then stack them. Encoded frames share dtypes exactly, so
        sources with other dtypes (SDV's plain ones) or all-missing columns stack cleanly."""
        return pd.concat([self.transform(frame) for frame in frames], ignore_index=True)

    def _encode(self, series: pd.Series, col: Column) -> pd.Series:
        if col.is_numeric:
            return series.astype("float64")
        if col.type == "datetime":
            return (pd.to_datetime(series) - pd.Timestamp(col.min)) / pd.Timedelta(days=1)
        if col.type == "boolean":
            return pd.Series(pd.Categorical(series.astype(object).where(series.notna(), None),
                                            categories=[False, True]), index=series.index)
        values = series.astype(object).where(series.notna(), None)
        kept = self._kept.get(col.name)
        if kept is None:
            return pd.Series(pd.Categorical(values, categories=list(col.categories)),
                             index=series.index)
        pooled = values.where(values.isin(kept) | values.isna(), "<other>")
        return pd.Series(pd.Categorical(pooled, categories=[*kept, "<other>"]), index=series.index)


def unit_interval(series: pd.Series, col: Column) -> np.ndarray:
    """A number or date column scaled to [0, 1] by its public schema bounds, never by the data's
    range (missing stays NaN). Distances and histogram bins are then comparable across sites."""
    if col.type == "datetime":
        lo, hi = pd.Timestamp(col.min), pd.Timestamp(col.max)
        return ((pd.to_datetime(series) - lo) / (hi - lo)).to_numpy(dtype="float64")
    return (series.astype("float64").to_numpy() - col.min) / (col.max - col.min)


def feature_columns(schema: Schema) -> list[Column]:
    """The label's predictors: the modeled columns without the label."""
    return [c for c in schema.modeled_columns if c.role != "label"]


def label_array(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The label as an array of category strings."""
    return frame[schema.label.name].astype(str).to_numpy()
