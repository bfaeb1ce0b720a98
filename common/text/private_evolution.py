"""Private evolution for the narratives (Aug-PE, Xie et al. 2024; PrE-Text, Hou et al. 2024).

A public model proposes candidate notes; each private note votes for its nearest candidate in an
embedding space (all-MiniLM-L6-v2, as PrE-Text); the noisy vote histogram is all a site releases.
Histograms from sites add up, and one vote round costs one Gaussian release of sensitivity 1
(removing a note moves one bin by 1): far less than a gradient step's worth of noise.

Here candidates carry records: the coordinator draws records from the released tabular model,
and a note votes only among candidates of its own *key* (the gate's columns: mechanism, body
region), abstaining when its key has none, so votes pick the best-written note for a kind of
injury, not the commonest kind. After each round the weakest half of every key's candidates is
written again in the manner of the strongest (the variation step); after the last round the
voted notes (weight = noisy votes above zero) are the style examples the narrative model writes
the release with. Everything after the noise is post-processing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common.privacy.accountant import Entry, calibrate_noise

KEY_MISSING = "<missing>"


def record_keys(records: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each record's key: its values of ``columns`` joined by '|' (a missing value is a key part
    of its own, as a declared category is a value)."""
    if not columns:
        return [""] * len(records)
    parts = [records[c].astype("string").fillna(KEY_MISSING).to_numpy() for c in columns]
    return ["|".join(str(v) for v in values) for values in zip(*parts, strict=True)]


def vote_histogram(private: np.ndarray, private_keys: Sequence[str], candidates: np.ndarray,
                   candidate_keys: Sequence[str]) -> np.ndarray:
    """Votes per candidate: each private embedding (unit rows) for its nearest candidate (largest
    cosine) with the same key; a note whose key has no candidate abstains. At most one vote per
    note, so the histogram has L2 (and L1) sensitivity 1."""
    votes = np.zeros(len(candidate_keys), dtype=np.float64)
    by_key: dict[str, list[int]] = {}
    for j, key in enumerate(candidate_keys):
        by_key.setdefault(key, []).append(j)
    for key, rows in _group(private_keys).items():
        own = by_key.get(key)
        if not own:
            continue
        similarity = private[rows] @ candidates[own].T
        np.add.at(votes, np.asarray(own)[similarity.argmax(axis=1)], 1.0)
    return votes


def _group(keys: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def vote_releases(settings: Mapping[str, Any], epsilon: float | None, delta: float) -> list[Entry]:
    """The planned vote rounds as one ledger-style entry (noise multiplier, rate 1, rounds), with
    the noise that fits them into ``settings['share']`` of ``epsilon``; none without DP or rounds."""
    rounds = int(settings["rounds"])
    if epsilon is None or rounds < 1:
        return []
    share = float(settings["share"])
    if not 0 < share <= 1:
        raise ValueError(f"the private-evolution share of the text budget must be in (0, 1], got {share}")
    return [(calibrate_noise(share * epsilon, delta, 1.0, rounds), 1.0, rounds)]


@dataclass
class CandidatePool:
    """The coordinator's candidates: records (JSON-able dicts), their keys and notes, and the
    summed noisy votes of the last round."""

    records: list[dict[str, Any]]
    keys: list[str]
    texts: list[str]
    votes: list[float] = field(default_factory=list)

    @classmethod
    def draw(cls, records: pd.DataFrame, key_columns: Sequence[str], per_key: int) -> CandidatePool:
        """Up to ``per_key`` records of every key present in ``records`` (in their order)."""
        keys = record_keys(records, key_columns)
        chosen = [i for rows in _group(keys).values() for i in rows[:per_key]]
        chosen.sort()
        return cls([_plain(records.iloc[i].to_dict()) for i in chosen], [keys[i] for i in chosen], [])

    def frame(self, indices: Sequence[int] | None = None) -> pd.DataFrame:
        rows = self.records if indices is None else [self.records[i] for i in indices]
        return pd.DataFrame(rows)

    def weak_and_strong(self) -> list[tuple[int, int]]:
        """(weak, strong) pairs: in every key with two or more candidates, the lower-voted half,
        each paired with a candidate of the upper half (best first, in turn)."""
        pairs = []
        for rows in _group(self.keys).values():
            if len(rows) < 2:
                continue
            ranked = sorted(rows, key=lambda i: -self.votes[i])
            strong, weak = ranked[:(len(ranked) + 1) // 2], ranked[(len(ranked) + 1) // 2:]
            pairs += [(w, strong[k % len(strong)]) for k, w in enumerate(weak)]
        return pairs

    def examples(self) -> dict[str, list[tuple[str, float]]]:
        """Per key, the notes with positive noisy votes and their votes as weights."""
        out: dict[str, list[tuple[str, float]]] = {}
        for key, text, vote in zip(self.keys, self.texts, self.votes, strict=True):
            if vote > 0:
                out.setdefault(key, []).append((text, float(vote)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "keys": self.keys, "texts": self.texts, "votes": self.votes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CandidatePool:
        return cls(list(data["records"]), list(data["keys"]), list(data["texts"]),
                   [float(v) for v in data["votes"]])


def evolve(pool: CandidatePool, write: Callable[[pd.DataFrame], list[str | None]],
           example_column: str) -> int:
    """The variation step: every weak candidate's note written again with a strong one of its
    key as the example (``write`` writes notes for a frame of records, None where the gate
    rejected one: the old note stays). Returns how many notes changed."""
    pairs = pool.weak_and_strong()
    if not pairs:
        return 0
    frame = pool.frame([w for w, _ in pairs])
    frame[example_column] = pd.array([pool.texts[s] for _, s in pairs], dtype="string")
    changed = 0
    for (weak, _), text in zip(pairs, write(frame), strict=True):
        if text is not None:
            pool.texts[weak], changed = text, changed + 1
    return changed


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record in JSON types (numpy scalars and pandas missing values made plain)."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out[name] = None
        elif isinstance(value, np.generic):
            out[name] = value.item()
        elif isinstance(value, pd.Timestamp):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out
