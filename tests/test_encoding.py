"""TableEncoder: schema-only, reversible, never leaves the schema's bounds.

``small_schema`` and ``random_frame`` are shared with test_privacy.py and test_synthesizer.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.encoding import TableEncoder
from common.errors import InputError
from common.schema import Schema

DAY = pd.Timedelta(days=1)


def small_schema() -> Schema:
    """A few numerics (one log, some nullable), a datetime, categories, a boolean, 5 labels."""
    return Schema.from_dict({"name": "small", "columns": [
        {"name": "case_id", "type": "text", "role": "identifier"},
        {"name": "age", "type": "integer", "min": 0, "max": 110},
        {"name": "sbp", "type": "integer", "min": 40, "max": 300, "nullable": True},
        {"name": "los_hours", "type": "float", "min": 0, "max": 2000, "transform": "log",
         "nullable": True},
        {"name": "temp", "type": "float", "min": 30.5, "max": 43.0},
        {"name": "arrival", "type": "datetime", "min": "2015-01-01", "max": "2024-12-31",
         "nullable": True},
        {"name": "sex", "type": "categorical", "categories": ["F", "M", "U"]},
        {"name": "intubated", "type": "boolean", "nullable": True},
        {"name": "region", "type": "categorical", "categories": ["head", "torso", "limb"],
         "nullable": True},
        {"name": "mechanism", "type": "categorical", "role": "label",
         "categories": ["fall", "mvc", "assault", "burn", "drowning"]},
        {"name": "note", "type": "text", "role": "narrative"},
    ]})


def random_frame(schema: Schema, n: int, seed: int) -> pd.DataFrame:
    """A typed frame (data.py conventions) with values anywhere in bounds, incl. the bounds
    themselves, and ~20% missing in nullable columns."""
    rng = np.random.default_rng(seed)
    out: dict[str, pd.Series] = {}
    for col in schema.columns:
        if col.type == "integer":
            values = pd.array(rng.integers(col.min, col.max + 1, n), dtype="Int64")
            values[:2] = [col.min, col.max]
        elif col.type == "float":
            values = rng.uniform(col.min, col.max, n)
            values[:2] = [col.min, col.max]
        elif col.type == "datetime":
            lo, hi = pd.Timestamp(col.min), pd.Timestamp(col.max)
            seconds = rng.integers(0, int((hi - lo).total_seconds()) + 1, n)
            values = lo + pd.to_timedelta(seconds, unit="s")
            values = values.insert(0, hi)[:n].insert(0, lo)[:n]
        elif col.type == "boolean":
            values = pd.array(rng.integers(0, 2, n).astype(bool), dtype="boolean")
        elif col.type == "categorical":
            values = pd.Categorical(rng.choice(list(col.categories), n),
                                    categories=list(col.categories))
        else:
            values = pd.array([f"{col.name}-{i}" for i in range(n)], dtype="string")
        series = pd.Series(values, name=col.name)
        if col.nullable:
            series = series.mask(rng.random(n) < 0.2)
        out[col.name] = series
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return small_schema()


def test_layout_follows_schema(schema: Schema) -> None:
    enc = TableEncoder(schema)
    kinds = [(s.column, s.kind, s.width) for s in enc.spans]
    assert kinds == [
        ("age", "numeric", 1), ("sbp", "numeric", 1), ("sbp", "missing", 2),
        ("los_hours", "numeric", 1), ("los_hours", "missing", 2), ("temp", "numeric", 1),
        ("arrival", "numeric", 1), ("arrival", "missing", 2), ("sex", "categorical", 3),
        ("intubated", "categorical", 2), ("intubated", "missing", 2),
        ("region", "categorical", 3), ("region", "missing", 2),
    ]
    assert [s.start for s in enc.spans] == list(np.cumsum([0] + [w for *_, w in kinds[:-1]]))
    assert enc.dim == 23 and enc.n_classes == 5


def test_round_trip(schema: Schema) -> None:
    frame = random_frame(schema, 500, seed=1)
    enc = TableEncoder(schema)
    x, y = enc.encode(frame)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (500, enc.dim)
    assert np.abs(x).max() <= 1.0
    out = enc.decode(x, y)
    modeled = [c.name for c in schema.modeled_columns]
    assert list(out.columns) == modeled
    for name in modeled:
        col, got, want = schema[name], out[name], frame[name]
        assert got.dtype == want.dtype, name
        assert (got.isna() == want.isna()).all(), name
        present = want.notna()
        if col.type == "float":
            scale = np.log1p(col.max) if col.transform == "log" else col.max - col.min
            tol = 1e-6 * scale * (1 + want[present].abs().max())
            np.testing.assert_allclose(got[present], want[present], atol=tol, rtol=1e-5)
        elif col.type == "datetime":
            span = pd.Timestamp(col.max) - pd.Timestamp(col.min)
            assert (got[present] - want[present]).abs().max() <= span * 1e-7 + pd.Timedelta(1, "s")
        else:
            assert (got[present] == want[present]).all(), name


def test_missing_encodes_as_zero_value_and_flag(schema: Schema) -> None:
    frame = random_frame(schema, 200, seed=2)
    enc = TableEncoder(schema)
    x, _ = enc.encode(frame)
    for span in enc.spans:
        if span.kind != "missing":
            continue
        missing = frame[span.column].isna().to_numpy()
        assert missing.any() and (~missing).any()
        np.testing.assert_array_equal(x[:, span.start + 1], missing)
        np.testing.assert_array_equal(x[:, span.start], ~missing)
        value = next(s for s in enc.spans if s.column == span.column and s.kind != "missing")
        assert (x[missing, value.start:value.stop] == 0).all()


def test_wild_inputs_decode_inside_bounds(schema: Schema) -> None:
    enc = TableEncoder(schema)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 50, (400, enc.dim))
    x[:5] = [np.nan], [np.inf], [-np.inf], [1e30], [-1e30]
    out = enc.decode(x, rng.integers(0, enc.n_classes, 400))
    for col in schema.modeled_columns:
        values = out[col.name].dropna()
        assert len(values) > 0
        if col.is_numeric:
            assert values.min() >= col.min and values.max() <= col.max, col.name
        elif col.type == "datetime":
            assert values.min() >= pd.Timestamp(col.min) and values.max() <= pd.Timestamp(col.max)
        elif col.type == "categorical":
            assert set(values.astype(str)) <= set(col.categories)
    assert (out["age"].dropna() == out["age"].dropna().round()).all()


def test_integer_bounds_are_kept_after_rounding() -> None:
    schema = Schema.from_dict({"name": "frac", "columns": [
        {"name": "n", "type": "integer", "min": 0.5, "max": 3.5},
        {"name": "k", "type": "categorical", "role": "label", "categories": ["a", "b"]},
    ]})
    enc = TableEncoder(schema)
    out = enc.decode(np.array([[-1.0], [1.0]]), np.array([0, 1]))
    assert out["n"].tolist() == [1, 3]


def test_encoder_has_no_fitted_state(schema: Schema) -> None:
    probe = random_frame(schema, 50, seed=4)
    fresh = TableEncoder(schema)
    used = TableEncoder(schema)
    for seed in range(3):  # data with a different spread must not change anything
        frame = random_frame(schema, 300, seed=10 + seed)
        frame["age"] = frame["age"].clip(upper=20)
        used.encode(frame)
    for a, b in zip(fresh.encode(probe), used.encode(probe), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.spans == used.spans
    x, y = fresh.encode(probe.iloc[:1])
    assert x[0, 0] == pytest.approx(2 * probe["age"].iloc[0] / 110 - 1)


@pytest.mark.parametrize("column, value, fix", [
    ("age", 111, "bounds"), ("sex", "X", "allowed"), ("mechanism", "meteor", "allowed"),
    ("temp", None, "non-nullable"),
])
def test_invalid_values_raise_input_error(schema: Schema, column, value, fix) -> None:
    frame = random_frame(schema, 10, seed=5)
    frame[column] = frame[column].astype(object)
    frame.loc[3, column] = value
    with pytest.raises(InputError, match=fix) as err:
        TableEncoder(schema).encode(frame)
    assert column in str(err.value)


def test_missing_column_is_named(schema: Schema) -> None:
    frame = random_frame(schema, 10, seed=6).drop(columns=["region"])
    with pytest.raises(InputError, match="region"):
        TableEncoder(schema).encode(frame)
