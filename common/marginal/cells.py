"""Schema-only cells for the marginal model: every modeled column (and the site column, when the
schema has one) becomes one discrete attribute, from public facts alone.

A category is its code-list entry, a boolean false/true; a number or a date falls into one of
``bins`` equal-width bins over its public bounds, in log space where the schema says
``transform: log``, or gets one cell per value when it is a short integer range; a nullable column
has a last ``missing`` cell. Decoding a bin draws uniformly within it. The scaling, log transform
and typed decoding are ``TableEncoder``'s, so the tabular generators and the marginal model read
the schema the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from common.encoding import TableEncoder, unit_scale
from common.errors import InputError
from common.schema import Column, Schema

DEFAULT_BINS = 16
MAX_ENUMERATED = 100_000  # an integer column with a wider range decodes by rounding instead


@dataclass(frozen=True)
class Attribute:
    """One discrete attribute: its column, its cells, and how they map to the encoder's layout."""

    name: str
    size: int
    kind: str  # "label", "site", "categorical", "numeric" (binned) or "values" (one cell per integer)
    missing: bool  # the last cell is "missing"

    @property
    def value_cells(self) -> int:
        return self.size - int(self.missing)


class Cells:
    """The discretisation of ``schema``: ``encode`` a typed frame into cell codes per attribute,
    ``decode`` codes back into a typed frame within the schema's bounds and code lists."""

    def __init__(self, schema: Schema, bins: int = DEFAULT_BINS) -> None:
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        self.schema, self.bins = schema, bins
        self.encoder = TableEncoder(schema)
        self._spans = {s.column: s for s in self.encoder.spans if s.kind != "missing"}
        self._missing_span = {s.column: s for s in self.encoder.spans if s.kind == "missing"}
        self.attributes: list[Attribute] = []
        for col in schema.modeled_columns:
            if col.role == "label":
                self.attributes.append(Attribute(col.name, len(col.categories), "label", False))
            else:
                kind, cells = self._value_cells(col)
                self.attributes.append(Attribute(col.name, cells + int(col.nullable), kind, col.nullable))
        site = schema.site
        if site is not None and site.categories:
            self.attributes.append(Attribute(site.name, len(site.categories), "site", False))
        # the integers each bin holds, so a decoded integer stays in the bin it was drawn from
        self._integers = {a.name: self._integers_by_bin(schema[a.name], a) for a in self.attributes
                          if a.kind == "numeric" and schema[a.name].type == "integer"
                          and schema[a.name].max - schema[a.name].min < MAX_ENUMERATED}

    def _value_cells(self, col: Column) -> tuple[str, int]:
        width = self._spans[col.name].width
        if width > 1 or col.type == "boolean":
            return "categorical", width
        if col.type == "integer" and col.transform == "none" and col.max - col.min + 1 <= self.bins:
            return "values", int(col.max - col.min + 1)
        return "numeric", self.bins

    def _integers_by_bin(self, col: Column, attr: Attribute) -> list[np.ndarray]:
        values = np.arange(int(np.ceil(col.min)), int(np.floor(col.max)) + 1)
        unit = unit_scale(pd.Series(values, dtype="float64"), col)
        bins = np.minimum(np.floor(unit * attr.value_cells), attr.value_cells - 1).astype(np.int64)
        return [values[bins == b] for b in range(attr.value_cells)]

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def shape(self) -> dict[str, int]:
        return {a.name: a.size for a in self.attributes}

    def encode(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Cell codes (int64, one array per attribute) of a typed frame's records."""
        x, y = self.encoder.encode(frame)
        codes: dict[str, np.ndarray] = {}
        for attr in self.attributes:
            if attr.kind == "label":
                codes[attr.name] = y
            elif attr.kind == "site":
                codes[attr.name] = _site_codes(frame[attr.name], self.schema[attr.name])
            else:
                codes[attr.name] = self._encode_feature(x, attr)
        return codes

    def cells_of(self, values: Mapping[str, Any]) -> dict[str, int]:
        """The cell of each typed value (as ``parse_conditions`` gives them): a record of every
        attribute's first cell with these values set, encoded like any record, so a condition
        falls in the cell a data file's value would."""
        record = self.decode({a.name: np.zeros(1, dtype=np.int64) for a in self.attributes},
                             np.random.default_rng(0))
        for name, value in values.items():
            record[name] = pd.Series([value], dtype=record[name].dtype)
        codes = self.encode(record)
        return {name: int(codes[name][0]) for name in values}

    def _encode_feature(self, x: np.ndarray, attr: Attribute) -> np.ndarray:
        block = x[:, self._spans[attr.name].start:self._spans[attr.name].stop]
        if attr.kind == "categorical":
            code = block.argmax(axis=1)
        else:
            unit = (np.clip(block[:, 0], -1.0, 1.0) + 1.0) / 2.0  # the public bounds, scaled
            code = (np.rint(unit * (attr.value_cells - 1)) if attr.kind == "values"
                    else np.minimum(np.floor(unit * attr.value_cells), attr.value_cells - 1))
        if attr.missing:
            code = np.where(self._missing(x, attr.name), attr.size - 1, code)
        return code.astype(np.int64)

    def _missing(self, x: np.ndarray, column: str) -> np.ndarray:
        return x[:, self._missing_span[column].start + 1] > 0.5

    def _draw_integers(self, attr: Attribute, code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform draw among the integers of each record's bin, on the encoder's scale."""
        col, by_bin = self.schema[attr.name], self._integers[attr.name]
        drawn = np.full(len(code), float(col.min))
        for cell in np.unique(code):
            if len(by_bin[cell]):
                drawn[code == cell] = rng.choice(by_bin[cell], int((code == cell).sum()))
        return 2.0 * unit_scale(pd.Series(drawn), col) - 1.0

    def decode(self, codes: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
        """A typed frame from cell codes: a bin's value drawn uniformly within the bin."""
        n = len(codes[self.schema.label.name])
        x = np.zeros((n, self.encoder.dim))
        for attr in self.attributes:
            if attr.kind in ("label", "site"):
                continue
            code = np.asarray(codes[attr.name], dtype=np.int64)
            present = code < attr.value_cells
            span = self._spans[attr.name]
            if attr.kind == "categorical":
                x[np.flatnonzero(present), span.start + code[present]] = 1.0
            elif attr.kind == "values":
                x[present, span.start] = 2.0 * code[present] / (attr.value_cells - 1) - 1.0
            else:
                unit = (code[present] + rng.random(int(present.sum()))) / attr.value_cells
                x[present, span.start] = 2.0 * unit - 1.0
                if attr.name in self._integers:
                    x[present, span.start] = self._draw_integers(attr, code[present], rng)
            if attr.missing:
                miss = self._missing_span[attr.name]
                x[:, miss.start] = present
                x[:, miss.start + 1] = ~present
        frame = self.encoder.decode(x, np.asarray(codes[self.schema.label.name], dtype=np.int64))
        site = self.schema.site
        if site is not None and site.name in codes:
            frame[site.name] = pd.Categorical.from_codes(np.asarray(codes[site.name]),
                                                         categories=list(site.categories))
        return frame


def _site_codes(values: pd.Series, column: Column) -> np.ndarray:
    codes = pd.Categorical(values.astype("string").to_numpy(na_value=None),
                           categories=list(column.categories)).codes.astype(np.int64)
    if (codes < 0).any():
        raise InputError(f"column '{column.name}' (the site) has {int((codes < 0).sum())} missing or "
                         f"unknown value(s); every record needs its site's code from the schema.")
    return codes
