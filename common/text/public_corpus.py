"""A public corpus of record -> note pairs: what the narrative model learns before any private note.

By default the NEISS sample in ``examples/neiss/`` (US CPSC, public domain: real ED injury notes in
the terse style the sites write). A corpus is a data file with its own schema, read and validated
like a site's file; its prompts serialise fields in plain words, so what the model learns carries
over to a consortium's schema with other column names.

Pretraining on public data is free only if the data really are public: a site refuses a run whose
public corpus holds its own notes (``overlap``), compared by a hash of the normalised text, so
neither side sends notes to the other to check.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from common.data import load_site_data
from common.errors import InputError
from common.schema import Schema

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO / "examples" / "neiss" / "neiss_1k.csv"
DEFAULT_SCHEMA = REPO / "examples" / "neiss" / "schema.yaml"
# What a NEISS note says about its record (the label first): the fields its prompts name.
DEFAULT_FIELDS = ("mechanism", "Age", "Sex", "Body_Part", "Diagnosis", "Location", "Product_1",
                  "Alcohol", "Drug", "Disposition")
HASH_CHARS = 16  # 64 bits of SHA-256: collisions between 10^3 and 10^6 notes stay below 1e-7
_WORD = re.compile(r"[a-z0-9]+")


@functools.cache
def public_corpus(path: Path, schema_path: Path | None = None) -> PublicCorpus:
    """The corpus at ``path`` (``DEFAULT_CORPUS``: NEISS with its prompt fields; any other needs
    its schema), read once per process."""
    path = Path(path)
    if path.resolve() == DEFAULT_CORPUS and schema_path in (None, DEFAULT_SCHEMA):
        return PublicCorpus.default()
    if schema_path is None:
        raise InputError(f"the public corpus {path} needs its schema (--public-schema S): a "
                         f"corpus is read and validated like a site's file.")
    if not path.is_file():
        raise InputError(f"{path}: public corpus not found; pass an existing file, or 'none' for "
                         f"no warm start.")
    return PublicCorpus(path, Path(schema_path))


def note_hash(text: str) -> str:
    """A note's identity up to case, spacing and punctuation (what copying or re-exporting a file
    changes)."""
    normalised = " ".join(_WORD.findall(str(text).lower()))
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:HASH_CHARS]


def overlap(texts: Iterable[str], public_hashes: Sequence[str]) -> int:
    """How many of ``texts`` are notes of the public corpus."""
    public = set(public_hashes)
    return sum(note_hash(t) in public for t in texts)


@dataclass(frozen=True)
class PublicCorpus:
    """``path`` (CSV or parquet) under ``schema_path``; ``fields`` are the prompt fields (None:
    the label, then every feature)."""

    path: Path
    schema_path: Path
    fields: tuple[str, ...] | None = None

    @classmethod
    def default(cls) -> PublicCorpus:
        return cls(DEFAULT_CORPUS, DEFAULT_SCHEMA, DEFAULT_FIELDS)

    @cached_property
    def schema(self) -> Schema:
        return Schema.load(self.schema_path)

    @cached_property
    def records(self) -> pd.DataFrame:
        """The corpus' valid records that have a note."""
        if self.schema.narrative is None:
            raise InputError(f"{self.schema_path}: the public corpus' schema has no narrative "
                             f"column; a warm start learns record -> note from it.")
        frame = load_site_data(self.path, self.schema)
        text = frame[self.schema.narrative.name].astype("string").str.strip()
        return frame[text.notna() & (text != "")].reset_index(drop=True)

    @cached_property
    def sha256(self) -> str:
        """The corpus file, its schema and the prompt fields: what a cached warm start was made of."""
        digest = hashlib.sha256()
        for part in (self.path.read_bytes(), self.schema_path.read_bytes(),
                     repr(self.fields).encode()):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()

    def note_hashes(self) -> list[str]:
        """The corpus' notes as ``note_hash`` values (public: the notes themselves are), sorted."""
        return sorted({note_hash(t) for t in self.records[self.schema.narrative.name]})

    def plan_entry(self) -> dict[str, object]:
        """What a run plan says about its public corpus: enough for a site to check overlap."""
        return {"name": self.path.name, "sha256": self.sha256, "note_hashes": self.note_hashes()}
