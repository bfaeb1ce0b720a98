"""One site's evaluation of a synthetic set (CONTRACT METRICS), and the federation's summary.

This is what a site runs on data that never leaves it; the result holds aggregate figures only,
rounded and JSON-able, under the small-number rules (``common.privacy.disclosure``): sizes are
rounded to a multiple of ten, the count of exact copies reads "<10" under ten, per-class recall
of a class with fewer than 10 test records is null, like a small histogram cell, and every class
of the schema is listed, so that a null does not tell an absent class from a rare one. The plot data
(``bins.plot_data``) travels beside the METRICS, not inside them: the report keeps it under
``report["plots"][SITE]`` and ``fedsynth evaluate`` writes it under the key ``plots``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.data import SPLITS, load_site_data, read_raw, stratified_split, validate_frame
from common.errors import DataError, InputError
from common.metrics.bins import plot_data
from common.metrics.features import label_array
from common.metrics.fidelity import fidelity_metrics
from common.metrics.privacy import privacy_metrics
from common.metrics.text import FLAG_COLUMN, text_metrics
from common.metrics.utility import utility_metrics
from common.privacy.disclosure import MIN_CELL, rounded, small_count
from common.schema import Column, Schema

DIGITS = 4  # figures are rounded to this many decimals: finer is noise at these sample sizes
# Summed over sites in ``summarize``; every other number is a record-weighted mean.
COUNTS = ("n_train", "n_test", "exact_copies")
RECALLS = ("per_class_recall_trtr", "per_class_recall_augmented")


@dataclass(frozen=True)
class SiteEvaluation:
    """``metrics``: CONTRACT METRICS; ``plots``: the suppressed plot data (``bins.plot_data``)."""

    metrics: dict[str, Any]
    plots: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """What ``fedsynth evaluate`` writes: the METRICS keys, plus ``plots``."""
        return {**self.metrics, "plots": self.plots}


def evaluate_site(schema: Schema, splits: Mapping[str, pd.DataFrame], synthetic: pd.DataFrame,
                  seed: int = 0, real: bool = False) -> SiteEvaluation:
    """Score ``synthetic`` against one site's train / holdout / test splits (typed frames).

    Fidelity and plots compare it with the test split, utility trains on train (and on synthetic
    records) and tests on test, privacy compares train members with holdout non-members. The
    synthetic rows are shuffled (seeded) first, so that TSTR's first ``n_train`` records and the
    augmentation pool are random draws even from a file sorted by class. Text metrics
    (``text.text_metrics``) score the synthetic narratives against the site's train and test
    narratives (and its holdout notes, for MAUVE's ceiling); ``text`` is None when the synthetic
    set or a split has too few narratives. ``real``: ``synthetic`` is real records scored as a
    yardstick (``real_train``), so privacy and text figures (which would describe those records)
    and plots are left out (None, empty) rather than computed and dropped.
    """
    check_sizes(splits, synthetic)
    train, holdout, test = (splits[name] for name in SPLITS)
    synthetic = _shuffled(synthetic, seed)
    utility = utility_metrics(train, test, synthetic, schema, seed=seed)
    support = pd.Series(label_array(test, schema)).value_counts()
    for key in RECALLS:  # every class of the schema: an absent class looks like a small one
        utility[key] = {c: utility[key][c] if support.get(c, 0) >= MIN_CELL else None
                        for c in schema.label.categories}
    if real:
        privacy = dict.fromkeys(("exact_copies", "dcr_overfitting_protection", "mia_auc"))
    else:
        privacy = privacy_metrics(train, holdout, synthetic, schema, seed)
        privacy["exact_copies"] = small_count(privacy["exact_copies"])
    metrics = {"n_train": rounded(len(train)), "n_test": rounded(len(test)),
               "fidelity": fidelity_metrics(test, synthetic, schema, seed),
               "utility": utility,
               "privacy": privacy,
               "text": None if real else text_metrics(schema, train, test, synthetic, seed,
                                                      holdout=holdout)}
    plots = {} if real else plot_data(test, synthetic, schema)
    return SiteEvaluation(jsonable(metrics), jsonable(plots))


def evaluate_text(schema: Schema, splits: Mapping[str, pd.DataFrame], synthetic: pd.DataFrame,
                  seed: int = 0) -> dict[str, Any]:
    """METRICS with only ``text`` filled (``n_train`` and ``n_test`` as ``evaluate_site`` gives
    them; ``fidelity``, ``utility`` and ``privacy`` None): for a set whose records are another
    set's and whose narratives alone differ (the narrative model without private data,
    ``baselines.text_floor``). The same shuffle and text figures as ``evaluate_site``; a set with
    too few narratives gets ``text`` None, not an error (its records were scored already)."""
    train, holdout, test = (splits[name] for name in SPLITS)
    synthetic = _shuffled(synthetic, seed)
    return jsonable({"n_train": rounded(len(train)), "n_test": rounded(len(test)),
                     "fidelity": None, "utility": None, "privacy": None,
                     "text": text_metrics(schema, train, test, synthetic, seed, holdout=holdout)})


def _shuffled(synthetic: pd.DataFrame, seed: int) -> pd.DataFrame:
    order = np.random.default_rng(seed).permutation(len(synthetic))
    return synthetic.iloc[order].reset_index(drop=True)


def check_sizes(splits: Mapping[str, pd.DataFrame], synthetic: pd.DataFrame,
                real_name: str = "the site's data", synthetic_name: str = "the synthetic set") -> None:
    """Every split and the synthetic set need MIN_CELL records: below that no figure could be
    released, and the classifiers and cross-validation need a few records anyway."""
    small = {name: len(splits[name]) for name in SPLITS if len(splits[name]) < MIN_CELL}
    if small:
        sizes = ", ".join(f"{name} {n}" for name, n in small.items())
        raise InputError(f"{real_name}: its splits are too small to evaluate ({sizes} records; "
                         f"each of train, holdout and test needs at least {MIN_CELL}). The split is "
                         f"60/20/20 by label, so give it at least {5 * MIN_CELL} valid records.")
    if len(synthetic) < MIN_CELL:
        raise InputError(f"{synthetic_name}: {len(synthetic)} synthetic record(s); evaluation needs "
                         f"at least {MIN_CELL}. Generate more records (fedsynth generate --n).")


def evaluate_files(schema_path: str | Path, real_path: str | Path, synthetic_path: str | Path,
                   seed: int = 0) -> SiteEvaluation:
    """``fedsynth evaluate``: one site's file, split by label with ``seed``, and a synthetic file,
    both checked against the schema first (bad input raises InputError naming the file)."""
    schema = Schema.load(schema_path)
    real = load_site_data(real_path, schema)
    synthetic = load_synthetic(synthetic_path, schema)
    splits = stratified_split(real, schema.label.name, seed)
    check_sizes(splits, synthetic, str(real_path), str(synthetic_path))
    return evaluate_site(schema, splits, synthetic, seed)


def load_synthetic(path: str | Path, schema: Schema) -> pd.DataFrame:
    """A synthetic file as a typed frame. It holds the released columns only (the modeled ones;
    when narratives were written, the narrative, which may be empty for records not narrated, and
    the consistency gate's ``narrative_flagged``; the site column when the generator models the
    site), so it is checked against those; identifiers are not expected."""
    raw = read_raw(path)
    released = [c for c in schema.columns if c.modeled]
    if schema.narrative is not None and schema.narrative.name in raw.columns:
        # A quick run narrates some of its records: an empty narrative is not an error here.
        released.append(replace(schema.narrative, nullable=True))
        if FLAG_COLUMN in raw.columns and FLAG_COLUMN not in schema:
            released.append(Column(FLAG_COLUMN, "boolean", role="ignore", nullable=True))
    if schema.site is not None and schema.site.name in raw.columns:
        released.append(schema.site)
    result = validate_frame(raw, Schema(name=schema.name, columns=tuple(released),
                                        version=schema.version, source=schema.source), str(path))
    if not result.ok:  # the generic fix (quarantine the rows) is for training data, not here
        lines = [line for line in result.summary().splitlines() if not line.startswith("Fix:")]
        raise DataError("\n".join([*lines, "Fix: pass a synthetic file sampled from generators of "
                                    "this schema (a run's synthetic.csv, or fedsynth generate), "
                                    "or the schema the generators were trained with."]))
    return result.frame.reset_index(drop=True)


def summarize(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The federation's METRICS from each site's: counts (``COUNTS``) summed, every other number
    the mean weighted by the site's ``n_test``, per-class dicts averaged class by class. A figure
    that is null at some sites is averaged over the others; null everywhere stays null. A figure
    that some site wrote "<10" has no known sum or mean: it is null."""
    if not per_site:
        raise ValueError("summarize needs at least one site's metrics")
    sites = list(per_site.values())
    return jsonable(_combine(sites, [float(m["n_test"]) for m in sites], key=None))


def _combine(values: Sequence[Any], weights: Sequence[float], key: str | None) -> Any:
    present = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not present:
        return None
    if all(isinstance(v, Mapping) for v, _ in present):
        names = dict.fromkeys(name for v, _ in present for name in v)
        return {name: _combine([v.get(name) for v, _ in present], [w for _, w in present], name)
                for name in names}
    if any(isinstance(v, str) for v, _ in present):  # "<10" somewhere: no known sum or mean
        return None
    if key in COUNTS:
        return sum(int(v) for v, _ in present)
    total = sum(w for _, w in present)
    return sum(float(v) * w for v, w in present) / total if total > 0 else None


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, floats rounded to DIGITS, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), DIGITS) if math.isfinite(value) else None
    return value
