"""The reference point every benchmark and report shows beside a generator (BRIEF, "What the
figures mean"): each modeled column drawn on its own from its empirical marginal.

It has no model and no DP, and is not meant for release: it copies real values. It scores about as
well as any generator on Column Shapes and has no joint structure at all, so a generator earns its
keep only where it beats this on Column Pair Trends, detection AUC and TSTR.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from common.errors import InputError
from common.metrics.features import modeled
from common.schema import Schema


class IndependentMarginals:
    """``fit(df)`` / ``sample(n, conditions, seed)`` like ``TabularSynthesizer``, so benchmarks
    treat it as one more generator. Each column is resampled (with replacement, missing values
    included) independently of the others; a condition restricts only its own column, since under
    independence it says nothing about the rest."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._data: pd.DataFrame | None = None

    def fit(self, df: pd.DataFrame) -> IndependentMarginals:
        if df.empty:
            raise InputError("IndependentMarginals needs at least one record to fit.")
        self._data = modeled(df, self.schema).reset_index(drop=True)
        return self

    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        if self._data is None:
            raise RuntimeError("call fit(df) before sample(n)")
        rng = np.random.default_rng(secrets.randbits(63) if seed is None else seed)
        columns = {}
        for name in self._data.columns:
            values = self._data[name]
            if conditions and name in conditions:
                values = values[values == conditions[name]]
                if values.empty:
                    raise InputError(f"condition {name}={conditions[name]!r}: no training record "
                                     f"has this value, so its marginal cannot produce it.")
            columns[name] = values.iloc[rng.integers(0, len(values), n)].reset_index(drop=True)
        return pd.DataFrame(columns)
