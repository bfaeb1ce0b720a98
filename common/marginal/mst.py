"""MST (McKenna et al., winner of the NIST 2018 DP synthetic-data challenge), federated: what a site
measures, and what the coordinator does with the sum, as small functions that the federated stage
(``common.stages.marginals``) and a one-site fit (``MarginalSynthesizer.fit``) both call.

A site makes three Gaussian releases from its train split, each charged before it leaves:
1. every attribute's 1-way marginal (L2 sensitivity sqrt(attributes));
2. for each candidate pair of features, how far its 2-way marginal is from the product of the
   site's own noisy 1-ways (each score moves by at most 1 with one record: sensitivity
   sqrt(pairs));
3. the 2-way marginals the coordinator chose: the label with every feature (the label's pairs
   are always measured) and the edges of a maximum spanning tree over the features' summed
   noisy scores (sensitivity sqrt(cliques)).
Between them the coordinator compresses cells whose summed noisy count is under three noise
deviations into one cell per attribute (post-processing, as MST does) and picks the tree.

With a site column in the schema, and one site code per site, each site's tables are the rows of
its own site in (site, ...) marginals (``SiteRows``): the model then carries the site as an
attribute, so the release can represent differences between hospitals at no extra budget.
Noise: each site adds its own, so a sum over S sites carries sqrt(S) times the noise one central
curator would add (secure aggregation would bring it back to one: a later issue).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

Clique = tuple[str, ...]
COMPRESS_BELOW = 3.0  # noise deviations: a summed 1-way cell under this joins its column's "other"


def table(codes: Mapping[str, np.ndarray], clique: Clique, sizes: Mapping[str, int],
          mapping: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The counts of ``clique``'s cells (flattened, C order), on the compressed domain when a
    column has a ``mapping`` (original cell -> compressed cell)."""
    mapping = mapping or {}
    index = [mapping[a][codes[a]] if a in mapping else codes[a] for a in clique]
    shape = [compressed_size(a, sizes, mapping) for a in clique]
    flat = np.ravel_multi_index(index, shape) if clique else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=int(np.prod(shape))).astype(np.float64)


def compressed_size(attr: str, sizes: Mapping[str, int], mapping: Mapping[str, np.ndarray]) -> int:
    return int(mapping[attr].max()) + 1 if attr in mapping else int(sizes[attr])


def compression(one_ways: Mapping[str, np.ndarray], stddev: float) -> dict[str, np.ndarray]:
    """Per column whose summed noisy 1-way has two or more cells under ``COMPRESS_BELOW`` noise
    deviations: the map of its cells, the small ones merged into one last cell."""
    mapping = {}
    for attr, noisy in one_ways.items():
        small = np.asarray(noisy) < COMPRESS_BELOW * stddev
        if small.sum() >= 2:
            kept = np.cumsum(~small) - 1
            mapping[attr] = np.where(small, int((~small).sum()), kept).astype(np.int64)
    return mapping


def compress_counts(noisy: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 1-way (or a block of rows of them, last axis the cells) on the compressed cells,
    and the weights (1/sqrt(cells merged)) that keep every entry's noise at the same deviation."""
    merged = np.zeros((*noisy.shape[:-1], int(cells.max()) + 1))
    np.add.at(merged, (..., cells), noisy)
    weights = 1.0 / np.sqrt(np.bincount(cells).astype(float))
    return merged * weights, weights


def pair_scores(codes: Mapping[str, np.ndarray], pairs: Sequence[Clique], sizes: Mapping[str, int],
                mapping: Mapping[str, np.ndarray], own: Mapping[str, np.ndarray]) -> np.ndarray:
    """How far each pair's 2-way counts are (L1) from the product of this site's own noisy 1-ways
    ``own`` (compressed, clipped at 0, scaled to the site's noisy size): one record moves each
    score by at most 1."""
    scores = []
    for a, b in pairs:
        pa, pb = (np.clip(merged_counts(own[x], x, mapping), 0.0, None) for x in (a, b))
        total = max((pa.sum() + pb.sum()) / 2.0, 1.0)
        expected = np.outer(pa / max(pa.sum(), 1e-9), pb / max(pb.sum(), 1e-9)).ravel() * total
        scores.append(np.abs(table(codes, (a, b), sizes, mapping) - expected).sum())
    return np.asarray(scores, dtype=np.float64)


def merged_counts(noisy: np.ndarray, attr: str, mapping: Mapping[str, np.ndarray]) -> np.ndarray:
    """A 1-way on the compressed cells: the merged cells' counts added up."""
    if attr not in mapping:
        return np.asarray(noisy, dtype=np.float64)
    merged = np.zeros(int(mapping[attr].max()) + 1)
    np.add.at(merged, mapping[attr], noisy)
    return merged


def candidate_pairs(features: Sequence[str]) -> list[Clique]:
    return list(itertools.combinations(features, 2))


def spanning_tree(features: Sequence[str], pairs: Sequence[Clique], scores: np.ndarray) -> list[Clique]:
    """The maximum spanning tree over ``features`` by ``scores`` (Kruskal; post-processing of the
    summed noisy scores)."""
    forest = DisjointSet(features)
    tree = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        a, b = pairs[i]
        if not forest.connected(a, b):
            forest.merge(a, b)
            tree.append((a, b))
    return tree


@dataclasses.dataclass(frozen=True, eq=False)
class SiteRows:
    """A linear query for mbi: the rows of the given sites in a (site, ...) marginal, flattened
    row by row, each entry scaled by ``weights`` (rows x cells: one over each site's noise
    deviation, times 1/sqrt(cells merged) where cells were merged after measuring)."""

    rows: tuple[int, ...]
    weights: np.ndarray | None = None

    def __call__(self, factor):  # a mbi Factor whose first attribute is the site
        block = factor.datavector(flatten=False)[np.asarray(self.rows)].reshape(len(self.rows), -1)
        if self.weights is not None:
            block = block * self.weights
        return block.reshape(-1)

    def op_norm_sq(self) -> float:
        return 1.0 if self.weights is None else float(np.max(self.weights ** 2))

    use_for_total_estimation = False

    def __hash__(self) -> int:  # identity: mbi traces queries as static data
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other
