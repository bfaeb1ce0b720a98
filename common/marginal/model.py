"""MarginalSynthesizer: federated MST on private-pgm (``mbi``), one facade for both sides.

At a site it makes the mechanism's three Gaussian releases (``release_one_ways``,
``release_scores``, ``release_tables``), each charged to the site's ledger before it is computed,
with noise planned once for all three from the site's share (``plan``). At the coordinator it turns
the releases into a graphical model (``after_one_ways``, ``choose_cliques``, ``after_tables``),
fitted with mbi's mirror descent, and samples records that decode through the schema
(``common.marginal.cells``). ``fit(df)`` runs both halves in one process: the local-only and
centralized baselines. ``save``/``load`` write the same ``tabular.json`` / ``tabular.pt`` files as
``TabularSynthesizer`` (no pickle: the fitted potentials as plain arrays).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.errors import InputError
from common.fileio import atomic_write_text
from common.marginal import mst
from common.marginal.cells import DEFAULT_BINS, Cells
from common.marginal.pgm import private_pgm
from common.marginal.sampler import TreeSampler
from common.privacy.accountant import DEFAULT_DELTA, Entry, calibrate_noise
from common.privacy.ledger import Ledger
from common.privacy.planned import PlannedBudget
from common.schema import Schema
from common.tabular.conditions import parse_conditions, rejection_sample
from common.version import __version__

RELEASES = ("1-way marginals", "pair scores", "chosen marginals")
DEFAULT_CONFIG: dict[str, Any] = {
    "bins": DEFAULT_BINS,     # equal-width bins of a number over its public bounds
    "iters": 2000,            # mirror-descent iterations of the fit
    "site_attribute": True,   # model the schema's site column (one site code per site)
    "site_tables": False,     # also each site's chosen marginals as rows of (site, ...) ones
    "budget_split": [1, 1, 1],  # zCDP shares of the three releases: MST's thirds (0.2/0.1/0.7
                                # scored no better, benchmarks/RESULTS.md 2026-12-01)
    "label_pairs": True,      # the label with every feature, always; False: the label in the tree
    "max_model_mb": 16.0,     # junction-tree size cap (mbi's measure); above it, no site attribute
    "max_draws_per_record": 200,  # rejection sampling gives up beyond this many candidates/record
}
FILES = {"state": "tabular.pt", "schema": "schema.yaml", "meta": "tabular.json"}


@dataclass(frozen=True)
class Release:
    """One site's release at one step, as the coordinator holds it: the site's code in the site
    column (-1: none), its noise multiplier (a function of its share and delta alone), the parts."""

    code: int
    noise: float
    parts: Any  # {attribute: 1-way} at the first step, [table per clique] at the third


class MarginalSynthesizer(PlannedBudget):
    """Federated MST over ``schema`` under (``epsilon``, ``delta``)-DP (the privacy settings are the
    data holder's, as for ``TabularSynthesizer``); ``epsilon=None`` at the coordinator."""

    def __init__(self, schema: Schema, kind: str = "mst", epsilon: float | None = 3.0,
                 delta: float = DEFAULT_DELTA, config: Mapping[str, Any] | None = None,
                 device: str = "cpu", seed: int = 0, ledger: str | Path | Ledger | None = None,
                 name: str | None = None, noise_seed: int | None = None,
                 max_grad_norm: float = 1.0) -> None:
        self.schema, self.kind, self.seed = schema, kind, seed
        self.model_name = name or f"tabular-{kind}"
        self.config = resolve_config(config)
        self.device = device
        self._init_privacy(epsilon, delta, noise_seed, max_grad_norm, ledger)
        self.cells = Cells(schema, self.config["bins"])
        self.sizes = self.cells.shape
        self.label = schema.label.name
        self.site = next((a.name for a in self.cells.attributes if a.kind == "site"), None)
        self.features = [a.name for a in self.cells.attributes if a.kind not in ("label", "site")]
        self.own_one_ways: dict[str, np.ndarray] | None = None  # this site's first release
        self.releases_made = 0
        # the coordinator's half: the compression, the per-site 1-ways, the model
        self.mapping: dict[str, np.ndarray] = {}
        self.one_ways: list[tuple[int, float, dict[str, np.ndarray]]] = []  # (code, noise, 1-ways)
        self.other_weights: dict[str, np.ndarray] = {}  # how a merged cell decodes
        self.cliques: list[tuple[str, ...]] = []
        self.potentials: dict[tuple[str, ...], np.ndarray] = {}
        self.total = 1.0
        self.with_site = False
        self.label_counts: np.ndarray | None = None
        self._sampler: TreeSampler | None = None  # built from the potentials on first use

    # --- the plan -------------------------------------------------------------------------
    @staticmethod
    def planned_releases(config: Mapping[str, Any] | None, epsilon: float, delta: float) -> list[Entry]:
        """The three Gaussian releases (sampling rate 1). A Gaussian release's RDP is
        alpha / (2 z^2) exactly, so releases with multipliers z / sqrt(share) compose to one
        release of multiplier z: calibrate that one, then split it by ``budget_split``."""
        return _split(calibrate_noise(epsilon, delta, 1.0, 1), resolve_config(config))

    def plan(self, n_records: int, planned_steps: int = 0) -> float | None:
        """Calibrate the three releases' noise once (the steps are DP-SGD's: none); returns the
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
                self._plan["noise_multipliers"] = [e[0] for e in _split(z, self.config)]
                self._plan["noise_multiplier"] = z
        return self.noise_multiplier(0)

    def noise_multiplier(self, release: int) -> float | None:
        """The multiplier of release ``release`` (0, 1, 2): a function of the share and delta."""
        zs = self._plan["noise_multipliers"] if self._plan else None
        return None if zs is None else zs[release]

    def _release(self, exact: np.ndarray, sensitivity: float, note: str) -> np.ndarray:
        """The Gaussian mechanism on ``exact`` (L2 ``sensitivity``), charged first."""
        self._require_plan()
        if not self.private:
            return exact
        z = self.noise_multiplier(RELEASES.index(note))
        self.budget.charge(z, 1.0, 1, note=note)
        seed = None if self.noise_seed is None else [self.noise_seed, self.releases_made]
        self.releases_made += 1
        return exact + np.random.default_rng(seed).normal(0.0, z * sensitivity, exact.shape)

    # --- the site's releases --------------------------------------------------------------
    def release_one_ways(self, records: pd.DataFrame) -> dict[str, np.ndarray]:
        """Every attribute's noisy 1-way marginal, kept for scoring pairs later."""
        codes = self.cells.encode(records)
        names = self.cells.names
        exact = np.concatenate([mst.table(codes, (a,), self.sizes) for a in names])
        noisy = self._release(exact, np.sqrt(len(names)), "1-way marginals")
        self.own_one_ways = dict(zip(names, np.split(noisy, np.cumsum([self.sizes[a] for a in names])[:-1]),
                                     strict=True))
        return dict(self.own_one_ways)

    def site_code(self, records: pd.DataFrame) -> int:
        """This site's code in the schema's site column when all its records share one, else -1
        (a consortium fact, not a statistic of the records)."""
        if self.site is None:
            return -1
        codes = np.unique(self.cells.encode(records)[self.site])
        return int(codes[0]) if len(codes) == 1 else -1

    def release_scores(self, records: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                       mapping: Mapping[str, np.ndarray]) -> np.ndarray:
        """The pairs' noisy distances from independence under this site's own noisy 1-ways."""
        if self.own_one_ways is None:
            raise InputError("the site scores pairs only after it released its 1-way marginals.")
        codes = self.cells.encode(records)
        exact = mst.pair_scores(codes, pairs, self.sizes, mapping, self.own_one_ways)
        return self._release(exact, np.sqrt(max(len(pairs), 1)), "pair scores")

    def release_tables(self, records: pd.DataFrame, cliques: Sequence[tuple[str, ...]],
                       mapping: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The chosen marginals, noisy, on the compressed cells."""
        codes = self.cells.encode(records)
        exact = [mst.table(codes, cl, self.sizes, mapping) for cl in cliques]
        noisy = self._release(np.concatenate(exact), np.sqrt(len(cliques)), "chosen marginals")
        return np.split(noisy, np.cumsum([len(e) for e in exact])[:-1])

    # --- the coordinator's half -----------------------------------------------------------
    def after_one_ways(self, releases: Sequence[Release]) -> dict[str, np.ndarray]:
        """Keep the sites' 1-ways (each ``Release`` with the site's code, -1 if none, and its noise
        multiplier), compress small cells of their sum, and decide whether the model carries the
        site attribute. Returns the compression every site measures on next."""
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
        return dict(self.mapping)

    def candidates(self) -> list[tuple[str, str]]:
        """The pairs scored: the features' (the label's pairs are measured anyway), or every
        attribute's but the site's when the label is in the tree like any column."""
        return mst.candidate_pairs(self.features if self.config["label_pairs"]
                                   else [self.label, *self.features])

    def choose_cliques(self, scores: np.ndarray) -> list[tuple[str, ...]]:
        """A maximum spanning tree by the summed noisy scores (and the label with every feature
        when ``label_pairs``); the site attribute stays only if the model fits the size cap."""
        nodes = self.features if self.config["label_pairs"] else [self.label, *self.features]
        tree = mst.spanning_tree(nodes, self.candidates(), scores)
        stars = [(self.label, a) for a in self.features] if self.config["label_pairs"] else []
        self.cliques = stars + tree
        if self.with_site and self._model_mb() > self.config["max_model_mb"]:
            self.with_site = False
        return list(self.cliques)

    def after_tables(self, releases: Sequence[Release]) -> None:
        """Fit the graphical model to every noisy marginal the sites released."""
        mbi = private_pgm()
        measurements = [*self._one_way_measurements(), *self._table_measurements(releases)]
        fitted = mbi.estimation.MirrorDescent().estimate(self._domain(), measurements,
                                                         known_total=self.total,
                                                         iters=int(self.config["iters"]))
        self.potentials = {cl: np.asarray(fitted.potentials[cl].values, dtype=np.float64)
                           for cl in fitted.potentials.cliques}
        self._sampler = None

    def _model_sizes(self) -> dict[str, int]:
        """The model's attributes (the site only when modelled) and their compressed sizes."""
        return {a: mst.compressed_size(a, self.sizes, self.mapping) for a in self.cells.names
                if a != self.site or self.with_site}

    def _domain(self):
        return private_pgm().Domain.fromdict(self._model_sizes())

    def _model_mb(self) -> float:
        site = (self.site,) if self.with_site else ()
        tables = site if self.config["site_tables"] else ()
        cliques = [site + (a,) for a in self.features + [self.label]] + [tables + cl for cl in self.cliques]
        return float(private_pgm().junction_tree.hypothetical_model_size(self._domain(), cliques))

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

    def _table_measurements(self, releases: Sequence[Release]) -> list:
        parts = len(self.cliques)
        rows = [[(r.code, r.noise * np.sqrt(parts), r.parts[i], None) for r in releases]
                for i in range(len(self.cliques))]
        if self.with_site and self.config["site_tables"]:
            return [self._measurement(clique, row) for clique, row in zip(self.cliques, rows, strict=True)]
        return [self._summed(clique, [(dev, y) for _, dev, y, _ in row])
                for clique, row in zip(self.cliques, rows, strict=True)]

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
        sampler = self._sampler.given(self._evidence(wanted, rng)) if wanted else self._sampler

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

    def _evidence(self, wanted: Mapping[str, Any], rng: np.random.Generator) -> dict[str, int]:
        """The model cell of each condition: a record with the wanted values, encoded through
        the schema's cells like any record, then mapped through the compression. Sampling from
        the model given these cells leaves only the within-cell detail (a bin's other values, a
        merged cell's other codes) to rejection sampling."""
        template = self._records(self._sampler, 1, rng)
        if self.site is not None and self.site not in template:  # unmodelled: any code encodes
            template[self.site] = pd.Categorical.from_codes([0], categories=self.schema[self.site].categories)
        for name, value in wanted.items():
            template[name] = pd.Series([value], dtype=template[name].dtype)
        codes = self.cells.encode(template)
        return {name: int(self.mapping[name][codes[name][0]]) if name in self.mapping else int(codes[name][0])
                for name in wanted}

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
        """MST on one data holder's records: its three releases, then the model."""
        self.plan(len(df))
        code, noise = self.site_code(df), [self.noise_multiplier(i) or 1.0 for i in range(3)]
        mapping = self.after_one_ways([Release(code, noise[0], self.release_one_ways(df))])
        cliques = self.choose_cliques(self.release_scores(df, self.candidates(), mapping))
        self.after_tables([Release(code, noise[2], self.release_tables(df, cliques, mapping))])
        return self

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        arrays = lambda d: {k: torch.tensor(np.array(v)) for k, v in d.items()}  # noqa: E731
        return {
            "kind": self.kind, "seed": self.seed, "config": self.config,
            "own_one_ways": None if self.own_one_ways is None else arrays(self.own_one_ways),
            "releases_made": self.releases_made,
            "mapping": arrays(self.mapping), "other_weights": arrays(self.other_weights),
            "cliques": [list(c) for c in self.cliques],
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


def _split(z: float, config: Mapping[str, Any]) -> list[Entry]:
    """One Gaussian release of multiplier ``z`` split into three of the same total RDP."""
    shares = np.asarray(config["budget_split"], dtype=float)
    return [(float(z / np.sqrt(share / shares.sum())), 1.0, 1) for share in shares]


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise InputError(f"unknown marginal-model config key(s) {unknown}; allowed: "
                         f"{sorted(DEFAULT_CONFIG)}.")
    resolved = {**DEFAULT_CONFIG, **config}
    if int(resolved["bins"]) < 2 or int(resolved["iters"]) < 1:
        raise InputError(f"bins must be >= 2 and iters >= 1 (got {resolved['bins']}, {resolved['iters']}).")
    split = resolved["budget_split"]
    if not (isinstance(split, list) and len(split) == len(RELEASES) and all(float(x) > 0 for x in split)):
        raise InputError(f"budget_split must be {len(RELEASES)} positive shares (1-ways, pair "
                         f"scores, chosen marginals), got {split!r}.")
    return json.loads(json.dumps(resolved))


def fit_federated(schema: Schema, parts: Sequence[pd.DataFrame], epsilon: float | None,
                  delta: float = DEFAULT_DELTA, config: Mapping[str, Any] | None = None,
                  noise_seed: int | None = None) -> MarginalSynthesizer:
    """Federated MST over ``parts`` (one frame per site) in one process: each site's three
    releases with its own noise (seeds ``noise_seed + i`` when given), and the coordinator's model;
    what the ``mst`` stage computes, without Flower (benchmarks, tests)."""
    sites = [MarginalSynthesizer(schema, epsilon=epsilon, delta=delta, config=config,
                                 noise_seed=None if noise_seed is None else noise_seed + i)
             for i in range(len(parts))]
    for site, part in zip(sites, parts, strict=True):
        site.plan(len(part))
    codes = [site.site_code(part) for site, part in zip(sites, parts, strict=True)]
    model = MarginalSynthesizer(schema, epsilon=None, config=config)
    mapping = model.after_one_ways([Release(c, s.noise_multiplier(0) or 1.0, s.release_one_ways(p))
                                    for s, p, c in zip(sites, parts, codes, strict=True)])
    scores = np.sum([s.release_scores(p, model.candidates(), mapping)
                     for s, p in zip(sites, parts, strict=True)], axis=0)
    cliques = model.choose_cliques(scores)
    model.after_tables([Release(c, s.noise_multiplier(2) or 1.0, s.release_tables(p, cliques, mapping))
                        for s, p, c in zip(sites, parts, codes, strict=True)])
    return model
