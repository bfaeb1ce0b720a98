"""Utility: does a synthetic set train a label classifier that works on real data (CONTRACT METRICS)?

TRTR (train real, test real) is the ceiling, TSTR (train synthetic, test real) the figure of a
generator, and "augmented" asks whether synthetic records of rare classes help a classifier trained
on the real data. All three use one classifier family and one fixed setting
(``features.CLASSIFIER_PARAMS``), never tuned on data, so their differences come from the training
records alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, recall_score

from common.metrics.features import (
    FeatureEncoder,
    classifier,
    feature_columns,
    label_array,
    one_thread,
)
from common.schema import Schema

# Synthetic records for augmentation: a pre-sampled pool, or a conditional sampler
# ``(label_value, n) -> frame`` (e.g. ``lambda c, n: synth.sample(n, {"mechanism": c})``).
SyntheticSource = pd.DataFrame | Callable[[str, int], pd.DataFrame]


@dataclass(frozen=True)
class UtilityScore:
    """Macro-F1 over the classes present in the test split, and each such class's recall."""

    macro_f1: float
    per_class_recall: dict[str, float]


def train_and_score(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, seed: int = 0,
                    extra: Sequence[pd.DataFrame] = ()) -> UtilityScore:
    """Fit the fixed classifier on the modeled features of ``train`` plus any ``extra`` records,
    score its label predictions on ``test``. Classes absent from ``test`` are not averaged (their
    F1 is undefined there)."""
    parts = [train, *extra]
    encoder = FeatureEncoder(feature_columns(schema)).fit(*parts)
    y_train = np.concatenate([label_array(part, schema) for part in parts])
    y_test = label_array(test, schema)
    if len(np.unique(y_train)) == 1:  # a collapsed generator: the classifier could only say this
        predicted = np.full(len(test), y_train[0])
    else:
        with one_thread():
            model = classifier(seed).fit(encoder.stack(parts), y_train)
            predicted = model.predict(encoder.transform(test))
    classes = [c for c in schema.label.categories if c in set(y_test)]
    recalls = recall_score(y_test, predicted, labels=classes, average=None, zero_division=0)
    return UtilityScore(macro_f1=float(f1_score(y_test, predicted, labels=classes, average="macro",
                                                zero_division=0)),
                        per_class_recall={c: float(r) for c, r in zip(classes, recalls, strict=True)})


def trtr(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, seed: int = 0) -> UtilityScore:
    """Train on the site's real train split, test on its test split: the ceiling. The same for
    every synthetic set a site scores (release, baselines, floor), so fitted once per content."""
    key = (_content(train), _content(test), schema.hash, seed)
    if key not in _TRTR:
        if len(_TRTR) >= 8:
            _TRTR.pop(next(iter(_TRTR)))
        _TRTR[key] = train_and_score(train, test, schema, seed)
    return _TRTR[key]


_TRTR: dict[tuple[str, str, str, int], UtilityScore] = {}


def _content(frame: pd.DataFrame) -> str:
    """A frame's contents (column names, then every row's values and index, in order)."""
    digest = hashlib.sha256(repr(tuple(frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame).to_numpy().tobytes())
    return digest.hexdigest()


def tstr(synth: pd.DataFrame, test: pd.DataFrame, schema: Schema, seed: int = 0) -> UtilityScore:
    """Train on synthetic records only (pass as many as the real train split), test on real."""
    return train_and_score(synth, test, schema, seed)


def augmentation_plan(train: pd.DataFrame, schema: Schema) -> dict[str, int]:
    """How many synthetic records each class rarer than the median class gets: enough to reach the
    median class size. The median is over the classes present in ``train``; a class the site has
    never seen is not added (its stratified test split cannot hold it either)."""
    counts = pd.Series(label_array(train, schema)).value_counts()
    median = int(np.floor(np.median(counts.to_numpy())))
    return {str(c): median - int(n) for c, n in counts.items() if n < median}


def augmented(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, synthetic: SyntheticSource,
              seed: int = 0) -> UtilityScore:
    """Train on the real train split plus synthetic records of its rare classes (see
    ``augmentation_plan``), test on the real test split. A pool short of a class adds what it has."""
    extra = [_records_of(synthetic, schema, label, n)
             for label, n in augmentation_plan(train, schema).items()]
    return train_and_score(train, test, schema, seed, extra)


def _records_of(source: SyntheticSource, schema: Schema, label: str, n: int) -> pd.DataFrame:
    if callable(source):
        return source(label, n)
    return source[label_array(source, schema) == label].iloc[:n]


def utility_metrics(train: pd.DataFrame, test: pd.DataFrame, synth: pd.DataFrame, schema: Schema,
                    sampler: Callable[[str, int], pd.DataFrame] | None = None,
                    seed: int = 0) -> dict[str, object]:
    """CONTRACT METRICS.utility. TSTR trains on the first ``len(train)`` synthetic records;
    augmentation draws from ``sampler`` when given (conditional sampling), else from ``synth``."""
    real = trtr(train, test, schema, seed)
    boosted = augmented(train, test, schema, synth if sampler is None else sampler, seed)
    return {"trtr_macro_f1": real.macro_f1,
            "tstr_macro_f1": tstr(synth.iloc[:len(train)], test, schema, seed).macro_f1,
            "augmented_macro_f1": boosted.macro_f1,
            "per_class_recall_trtr": real.per_class_recall,
            "per_class_recall_augmented": boosted.per_class_recall}
