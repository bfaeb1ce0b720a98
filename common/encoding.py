"""Schema-driven, reversible encoding of typed frames for the tabular generators.

The encoder is built from the schema alone: numeric columns are scaled by their public bounds,
categories come from the public code lists. Nothing is fitted on data, so encoding leaks nothing
that the DP mechanism would have to pay for, and every site encodes identically.

Layout, per modeled feature in schema order: a value span (numeric width 1 in [-1, 1];
categorical/boolean one-hot), then, for a nullable column, a ``missing`` span [present, missing].
A missing value encodes as zeros in its value span. The label is not in the matrix: it is the
class index ``y`` that every model is conditioned on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.errors import InputError
from common.schema import Column, Schema
from common.tabular.base import Span

_BOOL_CATEGORIES = (False, True)
_SECONDS_PER_DAY = 86_400.0


class TableEncoder:
    """Encode a typed frame to ``(x, y)`` and decode generated rows back to a typed frame."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.label = schema.label
        self.features = [c for c in schema.modeled_columns if c.role != "label"]
        self.spans: list[Span] = []
        self._value_span: dict[str, Span] = {}
        self._missing_span: dict[str, Span] = {}
        for col in self.features:
            width = _value_width(col)
            kind = "numeric" if width == 1 else "categorical"
            self._value_span[col.name] = self._add(Span(col.name, kind, self.dim, width))
            if col.nullable:
                self._missing_span[col.name] = self._add(Span(col.name, "missing", self.dim, 2))

    def _add(self, span: Span) -> Span:
        self.spans.append(span)
        return span

    @property
    def dim(self) -> int:
        return self.spans[-1].stop if self.spans else 0

    @property
    def n_classes(self) -> int:
        return len(self.label.categories)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label.categories

    # --- encode ---------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Typed frame -> (x float32 [n, dim], y int64 [n]); rejects values the schema forbids."""
        absent = [c.name for c in self.schema.modeled_columns if c.name not in frame.columns]
        if absent:
            raise InputError(f"the data lacks modeled column(s) {absent} declared in schema "
                             f"'{self.schema.name}'; add them or load the file with this schema.")
        x = np.zeros((len(frame), self.dim), dtype=np.float32)
        for col in self.features:
            present = frame[col.name].notna().to_numpy()
            if not col.nullable and not present.all():
                raise InputError(f"column '{col.name}' has missing values but the schema declares "
                                 f"it non-nullable; validate the file first ('fedsynth validate').")
            span = self._value_span[col.name]
            x[present, span.start:span.stop] = _encode_values(frame[col.name][present], col)
            if col.nullable:
                miss = self._missing_span[col.name]
                x[:, miss.start] = present
                x[:, miss.start + 1] = ~present
        return x, _category_codes(frame[self.label.name], self.label).astype(np.int64)

    # --- decode ---------------------------------------------------------------------------
    def decode(self, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
        """Encoded rows (any real values) -> a typed frame whose values always obey the schema."""
        x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
        y = np.asarray(y, dtype=np.int64)
        if x.shape != (len(y), self.dim):
            raise ValueError(f"decode expects x of shape ({len(y)}, {self.dim}), got {x.shape}")
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"class indices must lie in [0, {self.n_classes}), got {y.min()}..{y.max()}")
        columns: dict[str, pd.Series] = {}
        for col in self.schema.modeled_columns:
            if col.role == "label":
                columns[col.name] = _categorical(y, col)
                continue
            span = self._value_span[col.name]
            series = _decode_values(x[:, span.start:span.stop], col)
            if col.nullable:
                miss = self._missing_span[col.name]
                series = series.mask(x[:, miss.start + 1] > x[:, miss.start])
            columns[col.name] = series
        return pd.DataFrame(columns)


def unit_scale(values: pd.Series, col: Column) -> np.ndarray:
    """Non-missing values of a number or date column on [0, 1]: the encoder's own scaling by the
    public bounds (log space for ``transform: log``)."""
    return (_encode_values(values, col)[:, 0] + 1.0) / 2.0


def _value_width(col: Column) -> int:
    if col.type == "boolean":
        return len(_BOOL_CATEGORIES)
    if col.type == "categorical":
        return len(col.categories)
    return 1


def _bounds(col: Column) -> tuple[float, float]:
    """Public bounds in the scaled domain (days for datetimes, log1p if ``transform: log``)."""
    if col.type == "datetime":
        return 0.0, _days(pd.Timestamp(col.max) - pd.Timestamp(col.min))
    lo, hi = float(col.min), float(col.max)
    return (np.log1p(lo), np.log1p(hi)) if col.transform == "log" else (lo, hi)


def _days(delta) -> float:
    return delta / pd.Timedelta(seconds=1) / _SECONDS_PER_DAY


def _encode_values(values: pd.Series, col: Column) -> np.ndarray:
    """Non-missing values of one column -> their value-span block."""
    if col.type in ("categorical", "boolean"):
        codes = (_category_codes(values, col) if col.type == "categorical"
                 else values.astype(bool).to_numpy().astype(np.int64))
        return np.eye(_value_width(col), dtype=np.float32)[codes]
    if col.type == "datetime":
        stamps = pd.to_datetime(values)
        lo_ts, hi_ts = pd.Timestamp(col.min), pd.Timestamp(col.max)
        outside = (stamps < lo_ts) | (stamps > hi_ts)
        _reject_outside(values[outside], col)
        raw = ((stamps - lo_ts) / pd.Timedelta(seconds=1) / _SECONDS_PER_DAY).to_numpy(np.float64)
    else:
        raw = values.astype("float64").to_numpy()
        _reject_outside(values[(raw < col.min) | (raw > col.max)], col)
        if col.transform == "log":
            raw = np.log1p(raw)
    lo, hi = _bounds(col)
    return (2.0 * (raw - lo) / (hi - lo) - 1.0)[:, None]


def _reject_outside(bad: pd.Series, col: Column) -> None:
    if len(bad):
        raise InputError(f"column '{col.name}' has {len(bad)} value(s) outside the schema bounds "
                         f"[{col.min}, {col.max}] (e.g. {bad.iloc[0]!r}); validate the file first.")


def _category_codes(values: pd.Series, col: Column) -> np.ndarray:
    codes = pd.Categorical(values.astype("string").to_numpy(na_value=None),
                           categories=list(col.categories)).codes
    unknown = codes < 0
    if unknown.any():
        example = values[unknown].iloc[0]
        raise InputError(f"column '{col.name}' has {int(unknown.sum())} missing or unknown "
                         f"value(s) (e.g. {example!r}); allowed: {list(col.categories)}.")
    return codes


def _categorical(codes: np.ndarray, col: Column) -> pd.Series:
    return pd.Series(pd.Categorical.from_codes(codes, categories=list(col.categories)), name=col.name)


def _decode_values(block: np.ndarray, col: Column) -> pd.Series:
    """One value span -> a typed series inside the schema's bounds."""
    if col.type == "categorical":
        return _categorical(block.argmax(axis=1), col)
    if col.type == "boolean":
        return pd.Series(pd.array(block.argmax(axis=1) == 1, dtype="boolean"), name=col.name)
    lo, hi = _bounds(col)
    raw = lo + (np.clip(block[:, 0], -1.0, 1.0) + 1.0) / 2.0 * (hi - lo)
    if col.type == "datetime":
        stamps = pd.Timestamp(col.min) + pd.to_timedelta(raw * _SECONDS_PER_DAY, unit="s")
        stamps = pd.Series(stamps.round("s"), name=col.name).astype("datetime64[ns]")
        return stamps.clip(pd.Timestamp(col.min), pd.Timestamp(col.max))
    if col.transform == "log":
        raw = np.expm1(raw)
    if col.type == "integer":
        raw = np.clip(np.round(raw), np.ceil(col.min), np.floor(col.max))
        return pd.Series(pd.array(raw.astype(np.int64), dtype="Int64"), name=col.name)
    return pd.Series(np.clip(raw, col.min, col.max), dtype="float64", name=col.name)
