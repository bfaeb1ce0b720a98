"""A record as the prompt of its narrative: one ``name: value`` line per field, in schema words.

Schema-driven, so any schema works (the ED simulator's, NEISS, a user's own): by default the label
first, then every feature in schema order; the site, identifiers and text columns never appear.
Names and categories are written with spaces for underscores ("body region: upper extremity"),
which reads like clinical text and costs fewer tokens than codes; a missing value is left out, as
a note leaves out what was not recorded. ``parse`` reads a prompt back (tests, and the consistency
report), so the serialisation is checked to lose nothing it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from common.errors import InputError
from common.schema import Column, Schema

INSTRUCTION = "Write the emergency department triage note for this record."
# A frame column (never a schema column) holding an example note for a record's prompt: another
# note of the same key, in whose manner the record's note is written (warm start, private evolution).
EXAMPLE_COLUMN = "_example_note"
EXAMPLE_PREFIX = "example note: "
_SERIALISED_TYPES = ("integer", "float", "categorical", "boolean", "datetime")


def _words(code: str) -> str:
    return code.replace("_", " ")


class RecordSerializer:
    """Record <-> prompt for ``fields`` of ``schema`` (default: label, then features)."""

    def __init__(self, schema: Schema, fields: Sequence[str] | None = None) -> None:
        if fields is None:
            fields = [schema.label.name, *(c.name for c in schema.columns if c.role == "feature")]
        self.columns: list[Column] = [self._checked(schema, name) for name in fields]
        self._by_words = {_words(c.name): c for c in self.columns}
        if len(self._by_words) != len(self.columns):
            raise InputError(f"narrative prompt fields {list(fields)} repeat a name (underscores "
                             f"read as spaces); list each column once.")
        self._categories = {c.name: {_words(v): v for v in c.categories or ()} for c in self.columns}
        for col in self.columns:
            if len(self._categories[col.name]) != len(col.categories or ()):
                raise InputError(f"column '{col.name}': two categories differ only by '_' vs ' '; "
                                 f"prompts could not tell them apart.")

    @staticmethod
    def _checked(schema: Schema, name: str) -> Column:
        if name not in schema:
            raise InputError(f"narrative prompt field '{name}' is not a schema column; use some of "
                             f"{[c.name for c in schema.modeled_columns]}.")
        col = schema[name]
        if col.type not in _SERIALISED_TYPES or not col.modeled:
            raise InputError(f"narrative prompt field '{name}' has role {col.role} and type "
                             f"{col.type}; prompts name modeled (feature or label) columns only.")
        if any("\n" in v for v in col.categories or ()):
            raise InputError(f"column '{name}': a category contains a line break; prompts hold "
                             f"one field per line.")
        return col

    @property
    def fields(self) -> list[str]:
        return [c.name for c in self.columns]

    def prompt(self, record: Mapping[str, Any]) -> str:
        """The user turn for ``record``: the instruction, the known fields, and the example note
        when the record carries one (``EXAMPLE_COLUMN``)."""
        example = record.get(EXAMPLE_COLUMN)
        tail = "" if example is None or pd.isna(example) else f"\n{EXAMPLE_PREFIX}{example}"
        return INSTRUCTION + "\n" + self.serialize(record) + tail

    def serialize(self, record: Mapping[str, Any]) -> str:
        lines = []
        for col in self.columns:
            value = record.get(col.name)
            if value is not None and not pd.isna(value):
                lines.append(f"{_words(col.name)}: {_format(col, value)}")
        return "\n".join(lines)

    def parse(self, text: str) -> dict[str, Any]:
        """The fields read back from a prompt (or its serialised part); absent fields are None."""
        record: dict[str, Any] = {c.name: None for c in self.columns}
        for line in text.removeprefix(INSTRUCTION).strip().splitlines():
            if line.startswith(EXAMPLE_PREFIX):
                continue
            name, sep, value = line.partition(": ")
            col = self._by_words.get(name)
            if not sep or col is None:
                raise ValueError(f"not a serialised field: {line!r}")
            record[col.name] = self._value(col, value)
        return record

    def _value(self, col: Column, text: str) -> Any:
        if col.type == "categorical":
            return self._categories[col.name][text]
        if col.type == "integer":
            return int(text)
        if col.type == "float":
            return float(text)
        if col.type == "boolean":
            return {"yes": True, "no": False}[text]
        return pd.Timestamp(text)


def _format(col: Column, value: Any) -> str:
    """Floats to 4 significant digits: a note never needs more, and digits cost tokens."""
    if col.type == "categorical":
        return _words(str(value))
    if col.type == "integer":
        return str(int(value))
    if col.type == "float":
        return f"{float(value):.4g}"
    if col.type == "boolean":
        return "yes" if bool(value) else "no"
    return pd.Timestamp(value).isoformat()
