"""Privacy: does a synthetic set give away the site's training records (CONTRACT METRICS)?

Three views of one risk. ``exact_copies`` counts memorised rows outright; DCR overfitting protection
(sdmetrics) asks whether synthetic rows sit closer to the training records than to records the
generator never saw; the membership-inference attack asks whether an attacker holding the synthetic
set can tell a training record from a holdout one. All three compare the modeled columns only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sdmetrics.single_table import DCROverfittingProtection
from sklearn.metrics import roc_auc_score

from common.metrics.features import TABLE, modeled, sdmetrics_frame, sdv_metadata, unit_interval
from common.schema import Schema

# sdmetrics computes DCR by cross-joining frames in pandas, about 11 us per (synthetic, real) pair
# on these machines: the synthetic side is subsampled to fit DCR_PAIR_BUDGET pairs (~2.5 s), never
# under DCR_MIN_SYNTHETIC rows, and each reference side is capped at DCR_MAX_REFERENCE rows.
DCR_PAIR_BUDGET = 200_000
DCR_MAX_REFERENCE = 1_000
DCR_MIN_SYNTHETIC = 200
# The attack scores at most this many members and as many non-members.
MIA_MAX_PER_SIDE = 1_000
_BLOCK_CELLS = 4_000_000  # (query, reference, column) cells per block of the distance computation


def exact_copies(train: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> int:
    """Distinct synthetic rows equal to some train row on every modeled column (missing equals
    missing). Modeled columns are never text, so this is every non-text column the generators
    learn. Distinct: a row repeated ten times is one memorised record, and ten planted copies of
    a guessed record must not turn the count into a membership test."""
    keys = [pd.util.hash_pandas_object(sdmetrics_frame(modeled(frame, schema), schema), index=False)
            for frame in (train, synth)]
    return int(np.isin(np.unique(keys[1].to_numpy()), keys[0].to_numpy()).sum())


def dcr_overfitting_protection(train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
                               schema: Schema, seed: int = 0) -> float:
    """sdmetrics 0.32 DCROverfittingProtection on equal-size seeded samples of the train and
    holdout splits (as its own ``num_rows_subsample`` does): 1 = synthetic rows are no closer to
    train records than to unseen ones, 0 = all closer to train.

    The references must be the same size: the site's train split is three times its holdout, and
    against the whole of it an honest generator's samples find their nearest record in train most
    of the time (it scored 0.33 on simulated data). With equal sizes an honest generator scores
    about 1 and a copy of the train split about 0.55 (only the copied rows whose original was
    drawn are sure to count), so values well under 1 flag memorisation.
    """
    rng = np.random.default_rng(seed)
    n_reference = min(len(train), len(holdout), DCR_MAX_REFERENCE)
    train, holdout = (_sample(frame, n_reference, rng) for frame in (train, holdout))
    synth = _sample(synth, max(DCR_MIN_SYNTHETIC, DCR_PAIR_BUDGET // (2 * n_reference)), rng)
    train, holdout, synth = (sdmetrics_frame(modeled(f, schema), schema)
                             for f in (train, holdout, synth))
    with warnings.catch_warnings():  # constant columns in small samples make it chatty
        warnings.simplefilter("ignore")
        return float(DCROverfittingProtection.compute(train, synth, holdout, sdv_metadata(schema),
                                                      TABLE))


def mia_auc(train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame, schema: Schema,
            seed: int = 0) -> float:
    """ROC AUC of a distance-based membership-inference attack: a record's score is minus its
    distance to the closest synthetic record (``closest_distance``); members are the train split,
    non-members the holdout split, equal-size seeded samples. 0.5 = the synthetic set tells the
    attacker nothing; near 1 = it reveals who was trained on."""
    n = min(len(train), len(holdout), MIA_MAX_PER_SIDE)
    rng = np.random.default_rng(seed)
    queries = pd.concat([_sample(train, n, rng), _sample(holdout, n, rng)], ignore_index=True)
    is_member = np.repeat([1, 0], n)
    return float(roc_auc_score(is_member, -closest_distance(queries, synth, schema)))


def closest_distance(queries: pd.DataFrame, reference: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Each query row's distance to its closest reference row, in a space scaled by the schema only
    (never fitted on data): the mean over modeled columns of a per-column distance in [0, 1].
    Numbers and dates: |a - b| after scaling by the public bounds; categories and booleans: 0 if
    equal, else 1; missing vs present counts 1, missing vs missing 0 (Gower's distance, with
    the schema's ranges instead of the data's)."""
    q_num, q_cat = _scaled(queries, schema)
    r_num, r_cat = _scaled(reference, schema)
    n_columns = q_num.shape[1] + q_cat.shape[1]
    out = np.empty(len(queries))
    rows = max(1, _BLOCK_CELLS // max(1, len(reference) * n_columns))
    for start in range(0, len(queries), rows):
        block = slice(start, start + rows)
        numeric = np.minimum(np.abs(q_num[block, None, :] - r_num[None, :, :]), 1.0).sum(axis=2)
        categorical = (q_cat[block, None, :] != r_cat[None, :, :]).sum(axis=2)
        out[block] = (numeric + categorical).min(axis=1) / n_columns
    return out


def _scaled(frame: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and dates in [0, 1] by their schema bounds with missing as -1 (so that missing vs
    present differs by at least 1, clipped to 1, and missing vs missing by 0); categories and
    booleans as codes of the schema's list, missing as -1."""
    numeric, codes = [], []
    for col in schema.modeled_columns:
        series = frame[col.name]
        if col.is_numeric or col.type == "datetime":
            unit = np.clip(unit_interval(series, col), 0.0, 1.0)
            numeric.append(np.where(np.isnan(unit), -1.0, unit))
        else:
            categories = [False, True] if col.type == "boolean" else list(col.categories)
            values = series.astype(object).where(series.notna(), None)
            codes.append(pd.Categorical(values, categories=categories).codes.astype(np.int16))
    n = len(frame)
    return (np.column_stack(numeric) if numeric else np.empty((n, 0)),
            np.column_stack(codes) if codes else np.empty((n, 0), dtype=np.int16))


def _sample(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows (all if fewer) without replacement, in their original order."""
    if n >= len(frame):
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))]


def privacy_metrics(train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
                    schema: Schema, seed: int = 0) -> dict[str, float | int]:
    """CONTRACT METRICS.privacy: the synthetic set vs the site's train and holdout splits."""
    return {"exact_copies": exact_copies(train, synth, schema),
            "dcr_overfitting_protection": dcr_overfitting_protection(train, holdout, synth, schema,
                                                                     seed),
            "mia_auc": mia_auc(train, holdout, synth, schema, seed)}
