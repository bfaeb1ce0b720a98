"""AIM (McKenna et al., VLDB 2022), federated: the workload, what a site scores each round, and how
the coordinator selects, as small functions that ``MarginalSynthesizer`` calls on both sides.

After the 1-way marginals, a fixed, planned number of rounds (our rule: noise set once for all
of them, not halved adaptively as AIM does centrally). Each round:
1. the coordinator sends, for every admissible candidate of the workload (all pairs, and the
   label with every pair of features), the current model's distribution of the candidate's
   cells at each site (``model_rows``: conditioned on the site's code when the model carries the
   site attribute, so a hospital that differs from the pool is compared with its own part of the
   model, not with the pool: AugFLAIM's concern with heterogeneous sites);
2. each site releases, with Gaussian noise, how far its own counts are from that expectation at
   its own noisy size (``model_scores``: L1, one record moves each score by at most 1);
3. the coordinator sums the scores, subtracts the expected error of measuring each candidate
   (sqrt(2/pi) * noise deviation * cells, AIM's penalty) and picks the round's best candidates
   under the model-size cap (``select``); the sites measure them; the model is refitted.
The model's distributions are estimated by sampling it (the exact routine would compile a JAX
program per candidate); ``samples`` records per site keep that error well below the noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from common.marginal.mst import Clique, table
from common.marginal.sampler import TreeSampler


def workload(label: str, features: Sequence[str], triples: bool) -> list[Clique]:
    """Every pair of the label and features, and (``triples``) the label with every feature pair."""
    pairs = list(itertools.combinations([label, *features], 2))
    return pairs + ([(label, a, b) for a, b in itertools.combinations(features, 2)] if triples else [])


def admissible(candidates: Sequence[Clique], measured: Sequence[Clique],
               small_enough: Callable[[Clique], bool]) -> list[Clique]:
    """The candidates not already inside a measured clique and ``small_enough`` on their own (the
    whole model's size cap is checked only for the picks, in ``select``: a junction tree per
    candidate cost 65 s of a fit)."""
    inside = [set(cl) for cl in measured]
    return [cl for cl in candidates if not any(set(cl) <= m for m in inside) and small_enough(cl)]


def model_rows(sampler: TreeSampler, cliques: Sequence[Clique], sizes: Mapping[str, int],
               site: str | None, codes: Sequence[int], samples: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Per clique, the model's distribution of its cells (rows x cells, each row summing to 1):
    one row per site code in ``codes`` (the model given that site) or, with ``site`` None, one row
    for every site."""
    rows: list[list[np.ndarray]] = [[] for _ in cliques]
    for code in codes:
        draws = (sampler.given({site: code}) if site is not None else sampler).sample(samples, rng)
        for i, clique in enumerate(cliques):
            rows[i].append(table(draws, clique, sizes) / samples)
    return [np.stack(r) for r in rows]


def model_scores(codes: Mapping[str, np.ndarray], cliques: Sequence[Clique], sizes: Mapping[str, int],
                 mapping: Mapping[str, np.ndarray], expected: Sequence[np.ndarray],
                 size: float) -> np.ndarray:
    """How far (L1) each clique's counts at this site are from the model's distribution for the
    site (``expected``, one row) at the site's noisy ``size``: one record moves each score by at
    most 1 (``size`` is an earlier release, fixed)."""
    return np.asarray([np.abs(table(codes, cl, sizes, mapping) - size * np.ravel(e)).sum()
                       for cl, e in zip(cliques, expected, strict=True)], dtype=np.float64)


def select(candidates: Sequence[Clique], scores: np.ndarray, cells: Sequence[int], deviation: float,
           k: int, fits: Callable[[Sequence[Clique]], bool]) -> list[Clique]:
    """Up to ``k`` candidates by summed noisy score less AIM's penalty, sqrt(2/pi) * ``deviation``
    * cells (what measuring it would add in expected L1 error), best first, skipping one inside a
    clique already picked and one that would break the size cap (``fits`` of the picks so far)."""
    penalized = np.asarray(scores) - np.sqrt(2 / np.pi) * deviation * np.asarray(cells, dtype=float)
    chosen: list[Clique] = []
    for i in np.argsort(-penalized, kind="stable"):
        clique = candidates[i]
        if len(chosen) == k:
            break
        if any(set(clique) <= set(c) for c in chosen) or not fits([*chosen, clique]):
            continue
        chosen = [c for c in chosen if not set(c) <= set(clique)] + [clique]
    return chosen
