"""MarginalSynthesizer: federated MST or AIM on private-pgm (``mbi``), one facade for both sides.

The mechanism is a sequence of steps, each one Gaussian release per site: the 1-way marginals,
then scores of candidate cliques and the chosen cliques' marginals in turn (MST: one turn, a
spanning tree; AIM: ``rounds`` planned turns against the current model, ``common.marginal.aim``).
At a site, ``release`` makes a step's release, charged to the site's ledger before it is computed,
with noise planned once for all steps from the site's share (``plan``). At the coordinator,
``query`` says what a step asks and ``absorb`` turns the releases into a graphical model, fitted
with mbi's mirror descent, that samples records decoding through the schema
(``common.marginal.cells``). ``fit(df)`` walks the same steps in one process: the local-only and
centralized baselines. ``save``/``load`` write the same ``tabular.json`` / ``tabular.pt`` files as
``TabularSynthesizer`` (no pickle: the fitted potentials as plain arrays).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.errors import InputError
from common.fileio import atomic_write_text
from common.marginal import aim, mst
from common.marginal.cells import DEFAULT_BINS, Cells
from common.marginal.mst import Clique
from common.marginal.pgm import private_pgm
from common.marginal.sampler import TreeSampler
from common.privacy.accountant import DEFAULT_DELTA, Entry, calibrate_noise
from common.privacy.ledger import Ledger
from common.privacy.planned import PlannedBudget
from common.schema import Schema
from common.tabular.conditions import parse_conditions, rejection_sample
from common.version import __version__

KINDS = ("mst", "aim")
DEFAULT_CONFIG: dict[str, Any] = {
    "bins": DEFAULT_BINS,     # equal-width bins of a number over its public bounds
    "iters": 2000,            # mirror-descent iterations of the (final) fit
    "site_attribute": True,   # model the schema's site column (one site code per site)
    "site_tables": False,     # also each site's chosen marginals as rows of (site, ...) ones
    "budget_split": None,     # zCDP shares; None: the kind's default (SPLITS)
    "label_pairs": True,      # the label with every feature, always measured (aim: in round 1);
                              # False: mst puts the label in the tree, aim selects its pairs
    "rounds": 3,              # aim: select-and-measure rounds, planned (and paid for) up front
    "per_round": 0,           # aim: cliques picked per round; 0: features / rounds (with the label's
                              # pairs, as many cliques as MST measures)
    "triples": True,          # aim: the label with every feature pair is in the workload
    "round_iters": 300,       # aim: mirror-descent iterations of each round's refit
    "model_samples": 20000,   # aim: records per site drawn to estimate the model's marginals
    "max_model_mb": 16.0,     # junction-tree size cap (mbi's measure); above it, no site attribute
    "max_draws_per_record": 200,  # rejection sampling gives up beyond this many candidates/record
}
# mst: its thirds (0.2/0.1/0.7 scored no better, benchmarks/RESULTS.md 2026-12-01); aim: the
# 1-ways, all the rounds' selections, all the rounds' measurements
SPLITS = {"mst": [1, 1, 1], "aim": [2, 1, 5]}
ONE_WAYS, SCORES, TABLES = "1-way marginals", "scores", "tables"
FILES = {"state": "tabular.pt", "schema": "schema.yaml", "meta": "tabular.json"}


@dataclass(frozen=True)
class Release:
    """One site's release at one step, as the coordinator holds it: the site's code in the site
    column (-1: none), its noise multiplier at that step (a function of its share and delta
    alone), and the released arrays by name."""

    code: int
    noise: float
    parts: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Query:
    """What the coordinator asks at one step: the cliques to score or measure, the compression
    of small cells, and (AIM's scores) the model's distribution of each clique's cells, one row
    per site code in ``rows`` (``(-1,)``: one row for every site)."""

    cliques: tuple[Clique, ...] = ()
    mapping: Mapping[str, np.ndarray] = field(default_factory=dict)
    model: tuple[np.ndarray, ...] = ()
    rows: tuple[int, ...] = ()


def release_names(kind: str, config: Mapping[str, Any]) -> list[str]:
    """The mechanism's releases in order, one per step (the ledger's notes)."""
    if kind == "mst":
        return [ONE_WAYS, "pair scores", "chosen marginals"]
    rounds = int(config["rounds"])
    return [ONE_WAYS, *itertools.chain.from_iterable(
        (f"selection scores {t}/{rounds}", f"measured marginals {t}/{rounds}") for t in range(1, rounds + 1))]


def step_kind(step: int) -> str:
    """Both mechanisms: the 1-ways, then scores and measurements in turn (MST: one turn)."""
    return ONE_WAYS if step == 0 else SCORES if step % 2 else TABLES


class MarginalSynthesizer(PlannedBudget):
    """Federated MST or AIM (``kind``) over ``schema`` under (``epsilon``, ``delta``)-DP (the
    privacy settings are the data holder's, as for ``TabularSynthesizer``); ``epsilon=None`` at
    the coordinator. The mechanism is a sequence of ``steps``: at each one the coordinator asks
    (``query``), every site answers with one Gaussian release (``release``), and the coordinator
    folds the answers in (``absorb``); ``fit``, ``fit_federated`` and the ``marginals`` stage all
    walk the same steps."""

    def __init__(self, schema: Schema, kind: str = "mst", epsilon: float | None = 3.0,
                 delta: float = DEFAULT_DELTA, config: Mapping[str, Any] | None = None,
                 device: str = "cpu", seed: int = 0, ledger: str | Path | Ledger | None = None,
                 name: str | None = None, noise_seed: int | None = None,
                 max_grad_norm: float = 1.0) -> None:
        if kind not in KINDS:
            raise InputError(f"unknown marginal model kind {kind!r}; choose one of {list(KINDS)}.")
        self.schema, self.kind, self.seed = schema, kind, seed
        self.model_name = name or f"tabular-{kind}"
        self.config = resolve_config(config, kind)
        self.device = device
        self._init_privacy(epsilon, delta, noise_seed, max_grad_norm, ledger)
        self.cells = Cells(schema, self.config["bins"])
        self.sizes = self.cells.shape
        self.label = schema.label.name
        self.site = next((a.name for a in self.cells.attributes if a.kind == "site"), None)
        self.features = [a.name for a in self.cells.attributes if a.kind not in ("label", "site")]
        self.own_one_ways: dict[str, np.ndarray] | None = None  # this site's first release
        self.releases_made = 0
        # the coordinator's half: the compression, the per-site 1-ways, the measured tables, the model
        self.mapping: dict[str, np.ndarray] = {}
        self.one_ways: list[tuple[int, float, dict[str, np.ndarray]]] = []  # (code, noise, 1-ways)
        self.other_weights: dict[str, np.ndarray] = {}  # how a merged cell decodes
        self.cliques: list[Clique] = []  # measured (and, between MST's steps, chosen)
        self.measured: list[tuple[Clique, list[tuple[int, float, np.ndarray]]]] = []  # (code, dev, y)
        self.chosen: list[Clique] = []  # AIM: this round's picks, to be measured next
        self.potentials: dict[Clique, np.ndarray] = {}
        self.total = 1.0
        self.with_site = False
        self.label_counts: np.ndarray | None = None
        self._sampler: TreeSampler | None = None  # built from the potentials on first use
        self._fitted: Any = None  # mbi's last model in this process: the next fit's warm start
        self._queries: dict[int, Query] = {}

    # --- the plan -------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(release_names(self.kind, self.config))

    @staticmethod
    def planned_releases(kind: str, config: Mapping[str, Any] | None, epsilon: float,
                         delta: float) -> list[Entry]:
        """The mechanism's Gaussian releases (sampling rate 1). A Gaussian release's RDP is
        alpha / (2 z^2) exactly, so releases with multipliers z / sqrt(share) compose to one
        release of multiplier z: calibrate that one, then split it by the shares."""
        return _split(calibrate_noise(epsilon, delta, 1.0, 1), kind, resolve_config(config, kind))

    def plan(self, n_records: int, planned_steps: int = 0) -> float | None:
        """Calibrate every release's noise once (the steps are DP-SGD's: none); returns the
        first release's noise multiplier (None without DP)."""
        if self._plan is None:
            if n_records < 1:
                raise InputError(f"plan needs at least one record (got {n_records}).")
            self._plan = {"n_records": int(n_records), "planned_steps": 0, "noise_multiplier": None,
                          "noise_multipliers": None}
            if self.private:
                from common.privacy.budget import PrivacyBudget

                self.budget = PrivacyBudget(self.epsilon, self.delta, self.model_name, self.ledger)
                z = self.budget.calibrate(1.0, 1)
                self._plan["noise_multipliers"] = [e[0] for e in _split(z, self.kind, self.config)]
                self._plan["noise_multiplier"] = z
        return self.noise_multiplier(0)

    def noise_multiplier(self, step: int) -> float | None:
        """The multiplier of step ``step``'s release: a function of the share and delta."""
        zs = self._plan["noise_multipliers"] if self._plan else None
        return None if zs is None else zs[step]

    def _release(self, exact: np.ndarray, sensitivity: float, step: int) -> np.ndarray:
        """The Gaussian mechanism on ``exact`` (L2 ``sensitivity``), charged first."""
        self._require_plan()
        if not self.private:
            return exact
        z = self.noise_multiplier(step)
        self.budget.charge(z, 1.0, 1, note=release_names(self.kind, self.config)[step])
        seed = None if self.noise_seed is None else [self.noise_seed, self.releases_made]
        self.releases_made += 1
        return exact + np.random.default_rng(seed).normal(0.0, z * sensitivity, exact.shape)

    # --- the site's half ------------------------------------------------------------------
    def release(self, records: pd.DataFrame, step: int, query: Query) -> dict[str, np.ndarray]:
        """This site's release at ``step``: every attribute's 1-way marginal first (kept for
        scoring later), then the scores of the queried cliques, or their marginals."""
        if not 0 <= step < self.steps:
            raise InputError(f"{self.kind} has steps 0..{self.steps - 1}, not {step}.")
        codes, what = self.cells.encode(records), step_kind(step)
        if what == ONE_WAYS:
            names = self.cells.names
            exact = np.concatenate([mst.table(codes, (a,), self.sizes) for a in names])
            noisy = self._release(exact, np.sqrt(len(names)), step)
            split = np.split(noisy, np.cumsum([self.sizes[a] for a in names])[:-1])
            self.own_one_ways = dict(zip(names, split, strict=True))
            return dict(self.own_one_ways)
        if self.own_one_ways is None:
            raise InputError("a site scores and measures only after it released its 1-way marginals.")
        cliques, mapping = list(query.cliques), query.mapping
        if what == SCORES:
            if self.kind == "mst":
                exact = mst.pair_scores(codes, cliques, self.sizes, mapping, self.own_one_ways)
            else:
                row = self._row(records, query.rows)
                exact = aim.model_scores(codes, cliques, self.sizes, mapping, [m[row] for m in query.model],
                                         noisy_size(self.own_one_ways))
            return {SCORES: self._release(exact, np.sqrt(max(len(cliques), 1)), step)}
        if not cliques:  # AIM's round found nothing to pick: nothing leaves, nothing is spent
            return {}
        exact = [mst.table(codes, cl, self.sizes, mapping) for cl in cliques]
        noisy = self._release(np.concatenate(exact), np.sqrt(len(cliques)), step)
        return {str(i): t for i, t in enumerate(np.split(noisy, np.cumsum([len(e) for e in exact])[:-1]))}

    def _row(self, records: pd.DataFrame, rows: Sequence[int]) -> int:
        """Which of the query's model rows is this site's: its own code's, or the only one."""
        code = self.site_code(records)
        if tuple(rows) == (-1,):
            return 0
        if code not in rows:
            raise InputError(f"the coordinator's model has no row for this site's code {code}.")
        return list(rows).index(code)

    def site_code(self, records: pd.DataFrame) -> int:
        """This site's code in the schema's site column when all its records share one, else -1
        (a consortium fact, not a statistic of the records)."""
        if self.site is None:
            return -1
        codes = np.unique(self.cells.encode(records)[self.site])
        return int(codes[0]) if len(codes) == 1 else -1

    # --- the coordinator's half -----------------------------------------------------------
    def query(self, step: int) -> Query:
        """What step ``step`` asks of every site (the same for a resent step)."""
        if step not in self._queries:
            what = step_kind(step)
            if what == ONE_WAYS:
                query = Query()
            elif what == TABLES:
                query = Query(tuple(self.cliques if self.kind == "mst" else self.chosen), dict(self.mapping))
            elif self.kind == "mst":
                query = Query(tuple(self.candidates()), dict(self.mapping))
            else:
                query = self._aim_query(step)
            self._queries[step] = query
        return self._queries[step]

    def expected_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """The arrays a site's release at ``step`` must hold: the coordinator's check of replies."""
        what, query = step_kind(step), self.query(step)
        if what == ONE_WAYS:
            return {a: (self.sizes[a],) for a in self.cells.names}
        if what == SCORES:
            return {SCORES: (len(query.cliques),)}
        return {str(i): (self._cells(cl),) for i, cl in enumerate(query.cliques)}

    def absorb(self, step: int, releases: Sequence[Release]) -> None:
        """Fold the sites' releases at ``step`` into the model."""
        what, query = step_kind(step), self.query(step)
        if what == ONE_WAYS:
            self._after_one_ways(releases)
            if self.kind == "aim":
                self._independent()
        elif what == SCORES:
            scores = np.sum([r.parts[SCORES] for r in releases], axis=0)
            if self.kind == "mst":
                self._choose_tree(scores)
            else:
                star = self._forced()
                deviation = self._measure_deviation(step + 1, len(star) + self._per_round())
                cells = [self._cells(c) for c in query.cliques]
                self.chosen = star + aim.select(query.cliques, scores, cells, deviation, self._per_round(),
                                                lambda picks: self._fits([*self.cliques, *star, *picks]))
        else:
            for i, clique in enumerate(query.cliques):
                rows = [(int(r.code), float(r.noise * np.sqrt(len(query.cliques))),
                         np.asarray(r.parts[str(i)], float))
                        for r in releases]
                self.measured.append((clique, rows))
            if self.kind == "aim":
                self.cliques += [c for c in self.chosen if c not in self.cliques]
                self.chosen = []
            if query.cliques or step == self.steps - 1:
                self._fit(final=step == self.steps - 1)

    def _after_one_ways(self, releases: Sequence[Release]) -> None:
        """Keep the sites' 1-ways, compress small cells of their sum (the compression every site
        measures on next), and decide whether the model carries the site attribute."""
        self.one_ways = [(r.code, r.noise, {a: np.asarray(v, dtype=float) for a, v in r.parts.items()})
                         for r in releases]
        summed = {a: np.sum([parts[a] for *_, parts in self.one_ways], axis=0) for a in self.cells.names}
        deviation = np.sqrt(sum((z * np.sqrt(len(self.cells.names))) ** 2 for _, z, _ in self.one_ways))
        self.mapping = mst.compression({a: summed[a] for a in self.features}, deviation)
        self.other_weights = {a: np.clip(summed[a][cells == cells.max()], 0.0, None)
                              for a, cells in self.mapping.items()}
        self.label_counts = np.clip(summed[self.label], 0.0, None)
        self.total = noisy_size(summed)
        codes = [code for code, *_ in self.one_ways]
        self.with_site = (self.site is not None and self.config["site_attribute"] and len(codes) > 1
                          and min(codes) >= 0 and len(set(codes)) == len(codes))
        if self.with_site and not self._fits([]):
            self.with_site = False

    def candidates(self) -> list[Clique]:
        """MST's scored pairs: the features' (the label's pairs are measured anyway), or every
        attribute's but the site's when the label is in the tree like any column."""
        return mst.candidate_pairs(self.features if self.config["label_pairs"]
                                   else [self.label, *self.features])

    def _choose_tree(self, scores: np.ndarray) -> None:
        """A maximum spanning tree by the summed noisy scores (and the label with every feature
        when ``label_pairs``); the site attribute stays only if the model fits the size cap."""
        nodes = self.features if self.config["label_pairs"] else [self.label, *self.features]
        tree = mst.spanning_tree(nodes, self.candidates(), scores)
        self.cliques = self._stars() + tree
        if self.with_site and not self._fits(self.cliques):
            self.with_site = False

    def _stars(self) -> list[Clique]:
        """The label's pairs with every feature, when ``label_pairs``: measured whatever the scores."""
        return [(self.label, a) for a in self.features] if self.config["label_pairs"] else []

    def _forced(self) -> list[Clique]:
        """What AIM's round measures whatever the scores: the label's pairs in the first round."""
        return [] if self.cliques else self._stars()

    def _aim_query(self, step: int) -> Query:
        """AIM's scoring request: the admissible workload and the current model's distribution of
        each candidate's cells at each site (sampled, seeded by the model seed and the step)."""
        measured = [*self.cliques, *self._forced()]
        cap = self.config["max_model_mb"] * 2**20 / 8  # cells; the whole model's cap is checked on picking
        candidates = aim.admissible(aim.workload(self.label, self.features, self.config["triples"]),
                                    measured, lambda cl: self._cells(cl) <= cap)
        codes = sorted(code for code, *_ in self.one_ways) if self.with_site else [-1]
        if self._sampler is None:
            self._sampler = TreeSampler(self._model_sizes(), self.potentials)
        model = aim.model_rows(self._sampler, candidates, self._model_sizes(),
                               self.site if self.with_site else None, codes,
                               int(self.config["model_samples"]), np.random.default_rng([self.seed, step]))
        return Query(tuple(candidates), dict(self.mapping), tuple(model), tuple(codes))

    def _per_round(self) -> int:
        k = int(self.config["per_round"])
        return k if k > 0 else int(np.ceil(len(self.features) / int(self.config["rounds"])))

    def _measure_deviation(self, step: int, cliques: int) -> float:
        """The noise deviation of a cell of the summed tables of ``cliques`` measured at ``step``
        (the sites' multipliers there follow from their first ones and the public split)."""
        zs = _split(1.0, self.kind, self.config)
        ratio = zs[step][0] / zs[0][0]
        return float(np.sqrt(sum((z * ratio) ** 2 * cliques for _, z, _ in self.one_ways)))

    def _fits(self, cliques: Sequence[Clique]) -> bool:
        """Whether the model with ``cliques`` (and the 1-ways, by site when modelled) stays within
        the size cap."""
        site = (self.site,) if self.with_site else ()
        tables = site if self.config["site_tables"] else ()
        model = [site + (a,) for a in [*self.features, self.label]] + [tables + tuple(c) for c in cliques]
        size = private_pgm().junction_tree.hypothetical_model_size(self._domain(), model)
        return float(size) <= self.config["max_model_mb"]

    def _cells(self, clique: Clique) -> int:
        return int(np.prod([mst.compressed_size(a, self.sizes, self.mapping) for a in clique]))

    def _independent(self) -> None:
        """The model of the 1-ways alone, in closed form (no fit to compile): every attribute
        independent given the site when the model carries it (each site's own noisy 1-ways,
        clipped), else of the summed 1-ways. AIM's first round scores against it."""
        def log_share(counts: np.ndarray) -> np.ndarray:
            p = np.clip(counts, 0.0, None) + 1e-3
            return np.log(p / p.sum())

        attrs = [*self.features, self.label]
        if not self.with_site:
            summed = {a: np.sum([parts[a] for *_, parts in self.one_ways], axis=0) for a in attrs}
            self.potentials = {(a,): log_share(mst.merged_counts(summed[a], a, self.mapping)) for a in attrs}
        else:
            self.potentials = {}
            sizes = self._model_sizes()
            for a in attrs:
                table = np.zeros((sizes[self.site], sizes[a]))
                for code, _, parts in self.one_ways:
                    table[code] = log_share(mst.merged_counts(parts[a], a, self.mapping))
                self.potentials[(self.site, a)] = table
            counts = np.zeros(sizes[self.site])
            for code, _, parts in self.one_ways:
                counts[code] = noisy_size(parts)
            self.potentials[(self.site, attrs[0])] += log_share(counts)[:, None]
        self._sampler = None

    def _fit(self, final: bool) -> None:
        """Fit the graphical model to every noisy marginal the sites released so far (warm
        started from the last fit in this process)."""
        mbi = private_pgm()
        measurements = [*self._one_way_measurements(),
                        *(self._table_measurement(clique, rows) for clique, rows in self.measured)]
        iters = int(self.config["iters" if final else "round_iters"])
        fitted = mbi.estimation.MirrorDescent().estimate(self._domain(), measurements,
                                                         known_total=self.total, iters=iters,
                                                         warm_start=self._fitted)
        self._fitted = fitted
        self.potentials = {cl: np.asarray(fitted.potentials[cl].values, dtype=np.float64)
                           for cl in fitted.potentials.cliques}
        self._sampler = None

    def _model_sizes(self) -> dict[str, int]:
        """The model's attributes (the site only when modelled) and their compressed sizes."""
        return {a: mst.compressed_size(a, self.sizes, self.mapping) for a in self.cells.names
                if a != self.site or self.with_site}

    def _domain(self):
        return private_pgm().Domain.fromdict(self._model_sizes())

    def _one_way_measurements(self) -> list:
        parts = len(self.cells.names)
        out = []
        for a in self.cells.names:
            if a == self.site:
                if self.with_site:  # every site's count: rows of sites not in the run stay near 0
                    out.append(self._summed((a,), [(z * np.sqrt(parts), p[a]) for _, z, p in self.one_ways]))
                continue
            cells = self.mapping.get(a)
            rows = []
            for code, z, p in self.one_ways:
                y, weights = (p[a], None) if cells is None else mst.compress_counts(p[a], cells)
                rows.append((code, z * np.sqrt(parts), y, weights))
            out.append(self._measurement((a,), rows))
        return out

    def _table_measurement(self, clique: Clique, rows: Sequence[tuple[int, float, np.ndarray]]):
        """A measured clique: the sum of the sites' tables, or each site's as its row of the
        (site, ...) marginal when the model carries the site and ``site_tables`` is set."""
        if self.with_site and self.config["site_tables"]:
            return self._measurement(clique, [(code, dev, y, None) for code, dev, y in rows])
        return self._summed(clique, [(dev, y) for _, dev, y in rows])

    def _measurement(self, clique: tuple[str, ...], rows: Sequence[tuple[int, float, np.ndarray, Any]]):
        """One mbi measurement of ``clique`` from the sites' noisy tables (code, deviation,
        values, cell weights): with the site attribute, each site's table is the row of its code
        in the (site, ...) marginal, scaled to unit noise; without, the sum."""
        mbi = private_pgm()
        if not self.with_site:
            return self._summed(clique, [(dev, y) for _, dev, y, _ in rows], rows[0][3])
        rows = sorted(rows, key=lambda row: row[0])
        scale = np.array([[1.0 / dev] for _, dev, _, _ in rows])
        cell_weights = rows[0][3] if rows[0][3] is not None else 1.0
        y = np.concatenate([np.asarray(values).ravel() / dev for _, dev, values, _ in rows])
        weights = scale * np.broadcast_to(cell_weights, (1, np.asarray(rows[0][2]).size))
        query = mst.SiteRows(tuple(code for code, *_ in rows), weights)
        return mbi.LinearMeasurement(y, (self.site, *clique), 1.0, query=query)

    def _summed(self, clique: tuple[str, ...], rows: Sequence[tuple[float, np.ndarray]], cell_weights=None):
        mbi = private_pgm()
        y = np.sum([np.asarray(values, dtype=float) for _, values in rows], axis=0)
        std = float(np.sqrt(sum(dev ** 2 for dev, _ in rows)))
        if cell_weights is None:
            return mbi.LinearMeasurement(y, clique, std)
        return mbi.LinearMeasurement(y, clique, std, query=mbi.WeightedQuery(cell_weights))

    # --- sampling -------------------------------------------------------------------------
    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        """``n`` synthetic records (modeled columns, schema order, and the site column when the
        model has it); conditions are met by rejection sampling."""
        if n < 1:
            raise InputError(f"the number of records to sample must be at least 1 (got {n}).")
        if not self.potentials:
            raise InputError("the marginal model is not fitted yet; train it (or load a released one).")
        wanted = parse_conditions(self.schema, conditions or {})
        rng = np.random.default_rng(secrets.randbits(63) if seed is None else seed)
        if self._sampler is None:
            self._sampler = TreeSampler(self._model_sizes(), self.potentials)
        sampler = self._sampler.given(self._evidence(wanted)) if wanted else self._sampler

        def draw(size: int) -> pd.DataFrame:
            frame = self._records(sampler, size, rng)
            return frame if self.with_site else frame.drop(columns=[self.site], errors="ignore")

        return rejection_sample(draw, n, wanted, n * self.config["max_draws_per_record"],
                                conditions or {})

    def _records(self, sampler: TreeSampler, size: int, rng: np.random.Generator) -> pd.DataFrame:
        """``size`` records of ``sampler``, decompressed and decoded through the schema."""
        codes = sampler.sample(size, rng)
        for attr, cells in self.mapping.items():
            codes[attr] = self._decompress(np.asarray(codes[attr]), cells, self.other_weights[attr], rng)
        return self.cells.decode(codes, rng)

    def _evidence(self, wanted: Mapping[str, Any]) -> dict[str, int]:
        """The model cell of each condition: its schema cell, mapped through the compression.
        Sampling from the model given these cells leaves only the within-cell detail (a bin's
        other values, a merged cell's other codes) to rejection sampling."""
        return {name: int(self.mapping[name][cell]) if name in self.mapping else cell
                for name, cell in self.cells.cells_of(wanted).items()}

    @staticmethod
    def _decompress(codes: np.ndarray, cells: np.ndarray, weights: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Compressed codes back to the schema's cells; the merged cell draws one of its cells in
        proportion to their noisy counts (uniformly if the noise left nothing)."""
        codes = codes.astype(np.int64)
        original = np.argsort(cells, kind="stable")  # kept cells in order, then the merged ones
        kept = int(cells.max())
        out = np.where(codes < kept, original[np.clip(codes, 0, max(kept - 1, 0))], -1)
        merged = np.flatnonzero(cells == kept)
        p = weights / weights.sum() if weights.sum() > 0 else np.full(len(merged), 1 / len(merged))
        other = out < 0
        out[other] = rng.choice(merged, int(other.sum()), p=p)
        return out

    # --- one process: the local-only and centralized baselines ----------------------------
    def fit(self, df: pd.DataFrame, steps: int | None = None) -> MarginalSynthesizer:
        """The mechanism on one data holder's records: its releases, then the model."""
        self.plan(len(df))
        return _walk(self, [self], [df])

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        arrays = lambda d: {k: torch.tensor(np.array(v)) for k, v in d.items()}  # noqa: E731
        return {
            "kind": self.kind, "seed": self.seed, "config": self.config,
            "own_one_ways": None if self.own_one_ways is None else arrays(self.own_one_ways),
            "releases_made": self.releases_made,
            "mapping": arrays(self.mapping), "other_weights": arrays(self.other_weights),
            "cliques": [list(c) for c in self.cliques], "chosen": [list(c) for c in self.chosen],
            "measured": [[list(cl), [[code, dev, torch.tensor(y)] for code, dev, y in rows]]
                         for cl, rows in self.measured],
            "one_ways": [[code, noise, arrays(parts)] for code, noise, parts in self.one_ways],
            "potentials": {"|".join(cl): torch.tensor(np.array(v)) for cl, v in self.potentials.items()},
            "total": self.total, "with_site": self.with_site,
            "label_counts": None if self.label_counts is None else self.label_counts.tolist(),
            **self._privacy_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        plain = lambda d: {k: v.numpy() for k, v in d.items()}  # noqa: E731
        self.own_one_ways = None if state["own_one_ways"] is None else plain(state["own_one_ways"])
        self.releases_made = int(state["releases_made"])
        self.mapping, self.other_weights = plain(state["mapping"]), plain(state["other_weights"])
        self.cliques = [tuple(c) for c in state["cliques"]]
        self.chosen = [tuple(c) for c in state["chosen"]]
        self.measured = [(tuple(cl), [(int(code), float(dev), y.numpy()) for code, dev, y in rows])
                         for cl, rows in state["measured"]]
        self._queries, self._fitted = {}, None
        self.one_ways = [(int(code), float(noise), plain(parts)) for code, noise, parts in state["one_ways"]]
        self.potentials = {tuple(k.split("|")): v.numpy() for k, v in state["potentials"].items()}
        self._sampler = None
        self.total, self.with_site = float(state["total"]), bool(state["with_site"])
        self.label_counts = None if state["label_counts"] is None else np.asarray(state["label_counts"])
        self._restore_privacy_state(state)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{FILES['state']}.tmp"
        torch.save(self.state_dict(), tmp)
        tmp.replace(folder / FILES["state"])
        atomic_write_text(folder / FILES["schema"], self.schema.to_yaml())
        meta = {"kind": self.kind, "config": self.config, "epsilon": self.epsilon,
                "delta": self.delta, "epsilon_spent": self.epsilon_spent(),
                "fedsynth_version": __version__, "schema_hash": self.schema.hash}
        atomic_write_text(folder / FILES["meta"], json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_saved(cls, meta: Mapping[str, Any], schema: Schema, state: Mapping[str, Any],
                   ledger: str | Path | Ledger | None = None) -> MarginalSynthesizer:
        model = cls(schema, kind=meta["kind"], epsilon=meta["epsilon"], delta=meta["delta"],
                    config=meta["config"], seed=state["seed"], ledger=ledger)
        model.load_state_dict(state)
        return model


def noisy_size(one_ways: Mapping[str, np.ndarray]) -> float:
    """The number of records, from noisy 1-ways: every attribute's total estimates it with the
    same noise, so their mean has 1/sqrt(attributes) of one total's (post-processing; at 120
    records a site's label total alone came out at 33)."""
    return max(float(np.mean([np.sum(values) for values in one_ways.values()])), 1.0)


def _split(z: float, kind: str, config: Mapping[str, Any]) -> list[Entry]:
    """One Gaussian release of multiplier ``z`` split into the mechanism's releases of the same
    total RDP: MST's three by its shares; AIM's 1-ways, then each round's selection and
    measurement with 1/rounds of the selections' and the measurements' shares."""
    split = [float(x) for x in config["budget_split"]]
    if kind == "aim":
        rounds = int(config["rounds"])
        split = [split[0], *[split[1] / rounds, split[2] / rounds] * rounds]
    shares = np.asarray(split)
    return [(float(z / np.sqrt(share / shares.sum())), 1.0, 1) for share in shares]


def resolve_config(config: Mapping[str, Any] | None, kind: str = "mst") -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise InputError(f"unknown marginal-model config key(s) {unknown}; allowed: "
                         f"{sorted(DEFAULT_CONFIG)}.")
    resolved = {**DEFAULT_CONFIG, **config}
    if resolved["budget_split"] is None:
        resolved["budget_split"] = list(SPLITS[kind])
    if int(resolved["bins"]) < 2 or min(int(resolved[k]) for k in ("iters", "round_iters", "rounds")) < 1:
        raise InputError(f"bins must be >= 2, and iters, round_iters and rounds >= 1 (got "
                         f"{[resolved[k] for k in ('bins', 'iters', 'round_iters', 'rounds')]}).")
    if int(resolved["per_round"]) < 0 or int(resolved["model_samples"]) < 100:
        raise InputError(f"per_round must be >= 0 (0: automatic) and model_samples >= 100 (got "
                         f"{resolved['per_round']}, {resolved['model_samples']}).")
    split = resolved["budget_split"]
    if not (isinstance(split, list) and len(split) == 3 and all(float(x) > 0 for x in split)):
        what = ("pair scores, chosen marginals" if kind == "mst"
                else "all rounds' selection scores, all rounds' measurements")
        raise InputError(f"budget_split must be 3 positive shares (1-ways, {what}), got {split!r}.")
    return json.loads(json.dumps(resolved))


def fit_federated(schema: Schema, parts: Sequence[pd.DataFrame], epsilon: float | None,
                  delta: float = DEFAULT_DELTA, config: Mapping[str, Any] | None = None,
                  noise_seed: int | None = None, kind: str = "mst") -> MarginalSynthesizer:
    """Federated MST or AIM over ``parts`` (one frame per site) in one process: each site's
    releases with its own noise (seeds ``noise_seed + i`` when given), and the coordinator's
    model; what the ``marginals`` stage computes, without Flower (benchmarks, tests)."""
    sites = [MarginalSynthesizer(schema, kind=kind, epsilon=epsilon, delta=delta, config=config,
                                 noise_seed=None if noise_seed is None else noise_seed + i)
             for i in range(len(parts))]
    for site, part in zip(sites, parts, strict=True):
        site.plan(len(part))
    return _walk(MarginalSynthesizer(schema, kind=kind, epsilon=None, config=config), sites, parts)


def _walk(model: MarginalSynthesizer, sites: Sequence[MarginalSynthesizer],
          parts: Sequence[pd.DataFrame]) -> MarginalSynthesizer:
    """Every step of the mechanism: ``model`` asks, each planned site releases from its part, the
    model absorbs (the site and the model may be one object: a one-site fit)."""
    codes = [site.site_code(part) for site, part in zip(sites, parts, strict=True)]
    for step in range(model.steps):
        query = model.query(step)
        model.absorb(step, [Release(code, site.noise_multiplier(step) or 1.0, site.release(part, step, query))
                            for site, part, code in zip(sites, parts, codes, strict=True)])
    return model
