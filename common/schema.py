"""The schema: the one public description of a dataset that sites and coordinator agree on.

Everything that preprocessing may use comes from here (public clinical bounds, code lists), never
from private data. Sites and server compare ``Schema.hash`` before any training, so the hash covers
every field that changes what a model sees (types, bounds, categories, roles, transforms) and
ignores prose (descriptions), key order and YAML formatting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from common.errors import SchemaError

ColumnType = Literal["integer", "float", "categorical", "boolean", "datetime", "text"]
Role = Literal["feature", "label", "narrative", "site", "identifier", "ignore"]

COLUMN_TYPES: tuple[str, ...] = ("integer", "float", "categorical", "boolean", "datetime", "text")
ROLES: tuple[str, ...] = ("feature", "label", "narrative", "site", "identifier", "ignore")
TRANSFORMS: tuple[str, ...] = ("none", "log")
NUMERIC_TYPES = ("integer", "float")
_COLUMN_KEYS = {
    "name", "type", "role", "nullable", "min", "max", "transform", "categories", "format",
    "synonyms", "description",
}
_SCHEMA_KEYS = {"name", "version", "description", "columns"}


@dataclass(frozen=True)
class Column:
    """One column: its type, public bounds or categories, whether it may be missing, its role.

    ``synonyms`` maps a category to public words that name it (used to check that a narrative
    agrees with its record without training on private text).
    """

    name: str
    type: ColumnType
    role: Role = "feature"
    nullable: bool = False
    min: float | str | None = None
    max: float | str | None = None
    transform: str = "none"
    categories: tuple[str, ...] | None = None
    format: str | None = None
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @property
    def modeled(self) -> bool:
        """Whether the tabular generators learn this column."""
        return self.role in ("feature", "label")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.role != "feature":
            out["role"] = self.role
        if self.nullable:
            out["nullable"] = True
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.transform != "none":
            out["transform"] = self.transform
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.format is not None:
            out["format"] = self.format
        if self.synonyms:
            out["synonyms"] = {k: list(v) for k, v in self.synonyms.items()}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Schema:
    """An ordered set of columns with exactly one label and at most one narrative and site column."""

    name: str
    columns: tuple[Column, ...]
    version: int = 1
    description: str = ""
    source: str = "<schema>"

    def __post_init__(self) -> None:
        _check_schema(self)

    # --- lookups -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(col.name == name for col in self.columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def _one(self, role: str) -> Column | None:
        found = [c for c in self.columns if c.role == role]
        return found[0] if found else None

    @property
    def label(self) -> Column:
        col = self._one("label")
        assert col is not None  # guaranteed by _check_schema
        return col

    @property
    def narrative(self) -> Column | None:
        return self._one("narrative")

    @property
    def site(self) -> Column | None:
        return self._one("site")

    @property
    def modeled_columns(self) -> list[Column]:
        """Features and the label, in schema order: what the tabular generators learn."""
        return [c for c in self.columns if c.modeled]

    @property
    def output_columns(self) -> list[str]:
        """Columns of a released synthetic file: modeled columns plus the narrative."""
        names = [c.name for c in self.modeled_columns]
        if self.narrative is not None:
            names.append(self.narrative.name)
        return names

    # --- identity ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            out["description"] = self.description
        out["columns"] = [c.to_dict() for c in self.columns]
        return out

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON form, descriptions excluded."""
        data = self.to_dict()
        data.pop("description", None)
        for col in data["columns"]:
            col.pop("description", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<schema>") -> Schema:
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: a schema is a YAML mapping with 'name' and 'columns'; "
                              f"found {type(data).__name__}.")
        unknown = set(data) - _SCHEMA_KEYS
        if unknown:
            raise SchemaError(f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                              f"allowed: {sorted(_SCHEMA_KEYS)}.")
        raw_cols = data.get("columns")
        if not isinstance(raw_cols, list) or not raw_cols:
            raise SchemaError(f"{source}: 'columns' must be a non-empty list of column entries.")
        columns = tuple(_column_from_dict(c, i, source) for i, c in enumerate(raw_cols, start=1))
        version = data.get("version", 1)
        if not isinstance(version, int):
            raise SchemaError(f"{source}: 'version' must be an integer, found {version!r}.")
        return cls(name=str(data.get("name", Path(source).stem)), columns=columns, version=version,
                   description=str(data.get("description", "")), source=source)

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.is_file():
            raise SchemaError(f"{path}: schema file not found. Pass the path of a schema YAML "
                              f"(e.g. one written by 'fedsynth sim-data' or 'fedsynth schema infer').")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SchemaError(f"{path}: not valid YAML ({_one_line(exc)}). Fix the syntax and retry.")
        except UnicodeDecodeError:
            raise SchemaError(f"{path}: not a UTF-8 text file. Save the schema as UTF-8 YAML.")
        return cls.from_dict(data, source=str(path))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _column_from_dict(raw: Any, index: int, source: str) -> Column:
    where = f"{source}: column #{index}"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: each column is a mapping with at least 'name' and 'type'.")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}: missing 'name' (a non-empty string).")
    where = f"{source}: column '{name}'"
    unknown = set(raw) - _COLUMN_KEYS
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_COLUMN_KEYS)}.")
    ctype = raw.get("type")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"{where}: 'type' is {ctype!r}; use one of {list(COLUMN_TYPES)}.")
    role = raw.get("role", "feature")
    if role not in ROLES:
        raise SchemaError(f"{where}: 'role' is {role!r}; use one of {list(ROLES)}.")
    nullable = raw.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{where}: 'nullable' must be true or false, found {nullable!r}.")
    categories = raw.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not categories:
            raise SchemaError(f"{where}: 'categories' must be a non-empty list.")
        for value in categories:
            if isinstance(value, bool) or value is None:
                raise SchemaError(
                    f"{where}: category {value!r} is not a string. YAML reads unquoted "
                    f"yes/no/true/false/on/off/null as booleans or null: quote it (e.g. \"No\").")
        categories = tuple(str(v) for v in categories)
    synonyms_raw = raw.get("synonyms") or {}
    if not isinstance(synonyms_raw, dict):
        raise SchemaError(f"{where}: 'synonyms' maps a category to a list of words.")
    synonyms = {str(k): tuple(str(w) for w in (v if isinstance(v, list) else [v]))
                for k, v in synonyms_raw.items()}
    lo, hi = raw.get("min"), raw.get("max")
    if ctype == "datetime":
        lo = None if lo is None else str(lo)
        hi = None if hi is None else str(hi)
    return Column(name=name, type=ctype, role=role, nullable=nullable, min=lo, max=hi,
                  transform=str(raw.get("transform", "none")), categories=categories,
                  format=raw.get("format"), synonyms=synonyms,
                  description=str(raw.get("description", "")))


def _check_column(col: Column, source: str) -> None:
    where = f"{source}: column '{col.name}'"
    if col.is_numeric:
        for key in ("min", "max"):
            value = getattr(col, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SchemaError(
                    f"{where}: numeric columns need public bounds; '{key}' is {value!r}. Add "
                    f"'{key}:' with a clinically plausible bound that is public knowledge "
                    f"(never a value read off private data).")
        if not col.min < col.max:  # type: ignore[operator]
            raise SchemaError(f"{where}: 'min' ({col.min}) must be below 'max' ({col.max}).")
        if col.transform not in TRANSFORMS:
            raise SchemaError(f"{where}: 'transform' is {col.transform!r}; use one of {list(TRANSFORMS)}.")
        if col.transform == "log" and col.min < 0:  # type: ignore[operator]
            raise SchemaError(f"{where}: 'transform: log' needs min >= 0 (found {col.min}).")
    elif col.transform != "none":
        raise SchemaError(f"{where}: 'transform' applies to integer and float columns only.")
    if col.type == "categorical":
        if col.categories is None:
            raise SchemaError(f"{where}: categorical columns need 'categories', the public code list.")
        dupes = sorted({c for c in col.categories if col.categories.count(c) > 1})
        if dupes:
            raise SchemaError(f"{where}: duplicate categories {dupes}.")
    elif col.categories is not None:
        raise SchemaError(f"{where}: 'categories' applies to categorical columns only (type is {col.type}).")
    if col.type == "datetime":
        import pandas as pd

        for key in ("min", "max"):
            value = getattr(col, key)
            if value is None:
                raise SchemaError(f"{where}: datetime columns need public bounds 'min' and 'max' "
                                  f"(ISO dates, e.g. 2014-01-01).")
            try:
                pd.Timestamp(value)
            except (ValueError, TypeError):
                raise SchemaError(f"{where}: '{key}' {value!r} is not an ISO date/time.")
        if pd.Timestamp(col.min) >= pd.Timestamp(col.max):
            raise SchemaError(f"{where}: 'min' ({col.min}) must be before 'max' ({col.max}).")
    if col.type == "text" and col.role in ("feature", "label"):
        raise SchemaError(f"{where}: a text column cannot be a {col.role}; give it role narrative, "
                          f"identifier or ignore (or make it categorical with a code list).")
    if col.role == "label" and col.type != "categorical":
        raise SchemaError(f"{where}: the label must be categorical (found {col.type}).")
    if col.role == "label" and col.nullable:
        raise SchemaError(f"{where}: the label cannot be nullable: generators are conditioned on it. "
                          f"Add an explicit category such as 'unknown' for records without one.")
    if col.role == "narrative" and col.type != "text":
        raise SchemaError(f"{where}: the narrative column must have type text.")
    if col.synonyms:
        if col.categories is None:
            raise SchemaError(f"{where}: 'synonyms' applies to categorical columns only.")
        unknown = sorted(set(col.synonyms) - set(col.categories))
        if unknown:
            raise SchemaError(f"{where}: synonyms given for unknown categories {unknown}.")


def _check_schema(schema: Schema) -> None:
    names = [c.name for c in schema.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"{schema.source}: duplicate column names {dupes}.")
    for col in schema.columns:
        _check_column(col, schema.source)
    for role, allowed in (("label", (1, 1)), ("narrative", (0, 1)), ("site", (0, 1))):
        count = sum(c.role == role for c in schema.columns)
        if not allowed[0] <= count <= allowed[1]:
            need = "exactly one" if allowed[0] == 1 else "at most one"
            raise SchemaError(f"{schema.source}: the schema needs {need} column with role '{role}' "
                              f"(found {count}).")
    if not any(c.role == "feature" for c in schema.columns):
        raise SchemaError(f"{schema.source}: no feature column; mark at least one column role: feature.")
