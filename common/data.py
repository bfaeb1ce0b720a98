"""Reading a site's file and checking it against the schema.

A file is read as text first, then every cell is parsed by its column's declared type, so each
problem can be reported with its row, column, value and reason (and nothing is guessed from the
data). Rows are numbered from 1 = the first data row (in a CSV that is line 2, after the header).

Typed frames use pandas' nullable dtypes: integer -> Int64, float -> float64, boolean -> boolean,
categorical -> Categorical over the schema's list, datetime -> datetime64, text -> string.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from common.errors import DataError
from common.fileio import atomic_write_text
from common.schema import Column, Schema

BadRowPolicy = Literal["reject", "quarantine"]
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_NULLS = {"", "na", "n/a", "nan", "null", "none", "<na>", "nat"}
MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One bad cell (or a whole-file problem when ``row`` is None)."""

    row: int | None
    column: str | None
    value: str | None
    kind: str
    reason: str

    def describe(self) -> str:
        where = "file" if self.row is None else f"row {self.row}"
        col = f", column '{self.column}'" if self.column else ""
        val = f", value {self.value!r}" if self.value is not None else ""
        return f"{where}{col}{val}: {self.reason}"


@dataclass
class ValidationResult:
    """The typed frame (bad cells set to missing) plus every problem found."""

    path: str
    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def file_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.row is None]

    @property
    def bad_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems if p.row is not None})

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def summary(self, limit: int = MAX_LISTED) -> str:
        """A report a data steward can act on: counts by kind, then the first ``limit`` problems."""
        if self.ok:
            return f"{self.path}: valid ({len(self.frame)} rows, {self.frame.shape[1]} columns)."
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        lines = [f"{self.path}: {len(self.problems)} problem(s) in {len(self.bad_rows)} row(s) "
                 f"[{counts}]. Rows are numbered from 1 = first data row."]
        lines += [f"  {p.describe()}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more.")
        lines.append("Fix: correct these cells in the file (or the schema if a bound or code list is "
                     "wrong and public), or train with bad_rows = quarantine to set the rows aside.")
        return "\n".join(lines)


def read_raw(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file with every cell as text (None for missing)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. Check the path (data files are read at the site).")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass one data file (.csv or .parquet).")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv or .parquet.")
    try:
        if suffix == ".csv":
            if path.stat().st_size == 0:
                raise DataError(f"{path}: the file is empty; it needs a header row and data rows.")
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                                encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
            frame = frame.astype(object).where(frame.notna(), None)
            frame = frame.apply(lambda s: s.map(_to_text))
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text. Re-save the file as UTF-8 CSV.")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:].upper()} "
                        f"({' '.join(str(exc).split())}). Check the file format.")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _to_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def validate_frame(raw: pd.DataFrame, schema: Schema, path: str = "<data>") -> ValidationResult:
    """Parse every schema column of a raw (text) frame; collect every problem."""
    problems: list[Problem] = []
    notes: list[str] = []
    if raw.shape[0] == 0:
        problems.append(Problem(None, None, None, "empty_file",
                                "the file has a header but no data rows"))
    missing = [c.name for c in schema.columns if c.name not in raw.columns]
    for name in missing:
        problems.append(Problem(None, name, None, "missing_column",
                                f"required column is absent (the schema declares it as "
                                f"{schema[name].type}); add it, or remove it from the schema"))
    extra = [c for c in raw.columns if c not in schema]
    if extra:
        notes.append(f"columns not in the schema are ignored: {extra}")
    typed = {}
    for col in schema.columns:
        if col.name not in raw.columns:
            continue
        series, col_problems = parse_column(raw[col.name], col)
        typed[col.name] = series
        problems.extend(col_problems)
    frame = pd.DataFrame(typed, index=raw.index)
    problems.sort(key=lambda p: (-1 if p.row is None else p.row, p.column or ""))
    return ValidationResult(path=path, frame=frame, problems=problems, notes=notes)


def parse_column(raw: pd.Series, col: Column) -> tuple[pd.Series, list[Problem]]:
    """Parse one text column by its declared type; bad cells become missing and a Problem."""
    text = raw.map(lambda v: None if v is None else str(v).strip())
    is_null = text.map(lambda v: v is None or v.lower() in _NULLS)
    problems: list[Problem] = []
    rows = np.arange(1, len(text) + 1)

    def bad(i: int, kind: str, reason: str) -> None:
        problems.append(Problem(int(rows[i]), col.name, text.iloc[i], kind, reason))

    values: list[object] = [None] * len(text)
    for i, (value, null) in enumerate(zip(text.tolist(), is_null.tolist(), strict=True)):
        if null:
            if not col.nullable and col.role not in ("identifier", "ignore"):
                problems.append(Problem(int(rows[i]), col.name, None, "missing_value",
                                        "missing value in a column the schema declares non-nullable"))
            continue
        values[i] = _parse_cell(value, col, lambda kind, reason, i=i: bad(i, kind, reason))
    return _typed_series(values, col, raw.index), problems


def _parse_cell(value: str, col: Column, bad) -> object:
    if col.type in ("integer", "float"):
        try:
            number = float(value)
        except ValueError:
            return bad("wrong_type", f"not a number (expected {col.type})")
        if not math.isfinite(number):
            return bad("wrong_type", "not a finite number")
        if col.type == "integer" and number != int(number):
            return bad("wrong_type", "not a whole number (expected integer)")
        if not col.min <= number <= col.max:
            return bad("out_of_bounds", f"outside the schema bounds [{col.min}, {col.max}]")
        return int(number) if col.type == "integer" else number
    if col.type == "boolean":
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return bad("wrong_type", "not a boolean (use true/false, yes/no or 1/0)")
    if col.type == "categorical":
        if value not in col.categories:
            listed = list(col.categories[:8]) + (["..."] if len(col.categories) > 8 else [])
            return bad("unknown_category", f"not one of the schema's categories {listed}")
        return value
    if col.type == "datetime":
        try:
            stamp = pd.to_datetime(value, format=col.format) if col.format else pd.Timestamp(value)
        except (ValueError, TypeError):
            fmt = col.format or "ISO 8601, e.g. 2021-03-04 or 2021-03-04T10:15"
            return bad("wrong_type", f"not a date/time in the format {fmt}")
        if not pd.Timestamp(col.min) <= stamp <= pd.Timestamp(col.max):
            return bad("out_of_bounds", f"outside the schema bounds [{col.min}, {col.max}]")
        return stamp
    return value  # text


def _typed_series(values: list[object], col: Column, index: pd.Index) -> pd.Series:
    if col.type == "integer":
        return pd.Series(pd.array(values, dtype="Int64"), index=index, name=col.name)
    if col.type == "float":
        return pd.Series([np.nan if v is None else v for v in values], index=index,
                         dtype="float64", name=col.name)
    if col.type == "boolean":
        return pd.Series(pd.array(values, dtype="boolean"), index=index, name=col.name)
    if col.type == "categorical":
        return pd.Series(pd.Categorical(values, categories=list(col.categories)), index=index,
                         name=col.name)
    if col.type == "datetime":
        return pd.Series(pd.to_datetime(values), index=index, name=col.name)
    return pd.Series(pd.array(values, dtype="string"), index=index, name=col.name)


def validate_file(path: str | Path, schema: Schema) -> ValidationResult:
    """Read a file and check it against the schema."""
    return validate_frame(read_raw(path), schema, path=str(path))


def load_site_data(path: str | Path, schema: Schema, bad_rows: BadRowPolicy = "reject",
                   quarantine_path: str | Path | None = None) -> pd.DataFrame:
    """The typed, valid rows of a site's file, by the site's policy for bad rows.

    ``reject``: any problem raises DataError with the full report. ``quarantine``: bad rows are
    written with their reasons to ``quarantine_path`` (never silently dropped) and the rest is
    returned; problems with the whole file (missing columns, empty file) still reject it.
    """
    result = validate_file(path, schema)
    if result.ok:
        return result.frame.reset_index(drop=True)
    if bad_rows == "reject" or result.file_problems:
        raise DataError(result.summary())
    if bad_rows != "quarantine":
        raise DataError(f"bad_rows policy {bad_rows!r} is unknown; use 'reject' or 'quarantine'.")
    if quarantine_path is None:
        raise DataError(f"{path}: bad_rows = quarantine needs a quarantine file path.")
    raw = read_raw(path)
    reasons: dict[int, list[str]] = {}
    for p in result.problems:
        reasons.setdefault(p.row, []).append(f"{p.column}: {p.reason}")
    positions = [r - 1 for r in result.bad_rows]
    quarantined = raw.iloc[positions].copy()
    quarantined.insert(0, "_row", result.bad_rows)
    quarantined.insert(1, "_reasons", ["; ".join(reasons[r]) for r in result.bad_rows])
    atomic_write_text(quarantine_path, quarantined.to_csv(index=False))
    keep = result.frame.drop(index=result.frame.index[positions])
    if keep.empty:
        raise DataError(f"{path}: every row is bad ({len(positions)} quarantined in "
                        f"{quarantine_path}); nothing left to train on.")
    return keep.reset_index(drop=True)


SPLITS = ("train", "holdout", "test")


def stratified_split(frame: pd.DataFrame, label: str, seed: int,
                     fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, pd.DataFrame]:
    """Seeded train / holdout / test split, stratified by ``label``.

    Each class is shuffled and cut by the fractions (rounded down for holdout and test), so a class
    with very few records stays in train, and the same seed always gives the same split.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    labels = frame[label].astype("string").fillna("<missing>")
    for cls in sorted(labels.unique()):
        idx = np.flatnonzero((labels == cls).to_numpy())
        idx = idx[rng.permutation(len(idx))]
        n_hold = int(len(idx) * fractions[1])
        n_test = int(len(idx) * fractions[2])
        parts["holdout"].append(idx[:n_hold])
        parts["test"].append(idx[n_hold:n_hold + n_test])
        parts["train"].append(idx[n_hold + n_test:])
    return {name: frame.iloc[np.sort(np.concatenate(chunks))].reset_index(drop=True)
            for name, chunks in parts.items()}
