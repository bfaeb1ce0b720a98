"""Does a narrative agree with its record? Checked with the schema's public synonym lists only.

The gate runs on synthetic narratives anywhere (at the coordinator, at generation time), so it may
not learn from real notes: a classifier trained on one site's narratives would carry them out of
the site. The schema's ``synonyms`` are public words (agreed before training), matched as whole
words, case-insensitively.

Rule, per checked column: the record's category must be mentioned, and no other category may be
mentioned more often. A note about a fall that mentions "GSW" twice is not a fall note; one
mentioning both a fall and a cut (falls onto glass happen) still is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from common.errors import InputError
from common.schema import Schema


class ConsistencyChecker:
    """Checks ``columns`` (default: every column with synonyms, the label first)."""

    def __init__(self, schema: Schema, columns: Sequence[str] | None = None) -> None:
        if columns is None:
            columns = sorted((c.name for c in schema.columns if c.synonyms),
                             key=lambda name: name != schema.label.name)
        for name in columns:
            if name not in schema or not schema[name].synonyms:
                raise InputError(f"the consistency gate checks '{name}', which has no 'synonyms' "
                                 f"in the schema; add public words for its categories or drop it "
                                 f"from the checked columns.")
        self.columns = list(columns)
        self._patterns = {name: {category: _pattern(words)
                                 for category, words in schema[name].synonyms.items() if words}
                          for name in self.columns}

    def mentions(self, column: str, text: str) -> dict[str, int]:
        """How often each category of ``column`` is named in ``text`` (categories named at all)."""
        counts = {c: len(p.findall(text)) for c, p in self._patterns[column].items()}
        return {c: n for c, n in counts.items() if n}

    def check(self, record: Mapping[str, Any], text: str) -> dict[str, bool]:
        """Per checked column: does ``text`` agree with the record? A missing value, or a category
        without synonyms, cannot be contradicted."""
        verdicts = {}
        for column in self.columns:
            value = record.get(column)
            if value is None or pd.isna(value) or str(value) not in self._patterns[column]:
                verdicts[column] = True
                continue
            named = self.mentions(column, text)
            own = named.get(str(value), 0)
            verdicts[column] = own > 0 and own >= max(named.values())
        return verdicts

    def consistent(self, record: Mapping[str, Any], text: str) -> bool:
        return all(self.check(record, text).values())


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Any of ``words`` as a whole word: not inside a longer word or number."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)
