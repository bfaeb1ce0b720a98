"""The marginal model (federated MST on private-pgm): schema-only cells, each release's
sensitivity as the accountant assumes it, the ledger before every release, federated vs central
at equal noise, and a planted dependency found and reproduced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import BudgetExceededError
from common.marginal import aim, mst
from common.marginal.cells import Cells
from common.marginal.model import MarginalSynthesizer, Query, Release, fit_federated
from common.metrics.fidelity import quality_scores
from common.privacy.accountant import PrivacyAccountant, calibrate_noise
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.schema import Schema
from tests.test_encoding import random_frame, small_schema

FAST = {"iters": 300}


@pytest.fixture(scope="module")
def schema() -> Schema:
    return small_schema()


def _dependent_frame(schema: Schema, n: int, seed: int) -> pd.DataFrame:
    """Random records in which region is a function of sex and the label of age: two planted
    dependencies."""
    frame = random_frame(schema, n, seed)
    frame["region"] = pd.Categorical(frame["sex"].map({"F": "head", "M": "torso", "U": "limb"}),
                                     categories=["head", "torso", "limb"])
    bands = np.digitize(frame["age"].astype(float).to_numpy(), [22, 44, 66, 88])
    frame["mechanism"] = pd.Categorical(np.array(["fall", "mvc", "assault", "burn", "drowning"])[bands],
                                        categories=list(schema.label.categories))
    return frame


def test_cells_are_the_schemas_and_decode_inside_it(schema) -> None:
    cells = Cells(schema, bins=8)
    assert cells.shape == {"age": 8, "sbp": 9, "los_hours": 9, "temp": 8, "arrival": 9, "sex": 3,
                           "intubated": 3, "region": 4, "mechanism": 5}
    frame = random_frame(schema, 300, seed=1)
    codes = cells.encode(frame)
    assert all(0 <= c.min() and c.max() < cells.shape[a] for a, c in codes.items())
    decoded = cells.decode(codes, np.random.default_rng(0))
    for col in schema.modeled_columns:
        values = decoded[col.name].dropna()
        if col.categories:
            assert values.astype(str).isin(col.categories).all(), col.name
        elif col.type == "datetime":
            assert values.between(pd.Timestamp(col.min), pd.Timestamp(col.max)).all(), col.name
        elif col.is_numeric:
            assert values.astype(float).between(col.min, col.max).all(), col.name
        assert col.nullable or decoded[col.name].notna().all(), col.name
    again = cells.encode(decoded)  # a decoded value stays in the cell it was drawn from
    assert all((again[a] == codes[a]).all() for a in codes)
    assert decoded["age"].dtype == "Int64" and decoded["arrival"].dtype == "datetime64[ns]"


def test_each_release_moves_by_at_most_its_sensitivity(schema) -> None:
    """Remove one record: each 1-way count moves by at most 1 (one per attribute, so L2
    sqrt(attributes)), each pair score by at most 1, each chosen table's cells by at most 1."""
    frame = _dependent_frame(schema, 400, seed=2)
    exact = MarginalSynthesizer(schema, epsilon=None, config=FAST)
    exact.plan(len(frame))
    full, less = exact.release(frame, 0, Query()), None
    for drop in range(0, 400, 37):
        fewer = frame.drop(index=frame.index[drop])
        model = MarginalSynthesizer(schema, epsilon=None, config=FAST)
        model.plan(len(fewer))
        less = model.release(fewer, 0, Query())
        diffs = np.concatenate([full[a] - less[a] for a in full])
        assert np.abs(diffs).max() == 1 and np.linalg.norm(diffs) <= np.sqrt(len(full)) + 1e-9
        pairs = exact.candidates()
        mapping = {"age": np.minimum(np.arange(exact.sizes["age"]), 5)}
        own = dict(full)  # the scores are computed against the site's own (released) 1-ways
        moved = (mst.pair_scores(exact.cells.encode(frame), pairs, exact.sizes, mapping, own)
                 - mst.pair_scores(exact.cells.encode(fewer), pairs, exact.sizes, mapping, own))
        assert np.abs(moved).max() <= 1 + 1e-9
        triples = [("mechanism", "age", "sex"), ("sex", "region")]  # AIM's, against a model's rows
        cells = [int(np.prod([mst.compressed_size(a, exact.sizes, mapping) for a in cl])) for cl in triples]
        rows = [np.random.default_rng(i).dirichlet(np.ones(c)) for i, c in enumerate(cells)]
        moved = (aim.model_scores(exact.cells.encode(frame), triples, exact.sizes, mapping, rows, 399.5)
                 - aim.model_scores(exact.cells.encode(fewer), triples, exact.sizes, mapping, rows, 399.5))
        assert np.abs(moved).max() <= 1 + 1e-9
        cliques = [("mechanism", "age"), ("sex", "region")]
        tables = [mst.table(exact.cells.encode(f), cl, exact.sizes, mapping) for f in (frame, fewer)
                  for cl in cliques]
        assert all(np.abs(tables[i] - tables[i + 2]).sum() == 1 for i in range(2))


PLANS = {  # uneven shares: each release its own multiplier
    "mst": ({**FAST, "budget_split": [0.2, 0.1, 0.7]}, [0.2, 0.1, 0.7],
            ["1-way marginals", "pair scores", "chosen marginals"]),
    "aim": ({**FAST, "budget_split": [0.2, 0.1, 0.7], "rounds": 2, "model_samples": 1000},
            [0.2, 0.05, 0.35, 0.05, 0.35], ["1-way marginals", "selection scores 1/2",
                                            "measured marginals 1/2", "selection scores 2/2",
                                            "measured marginals 2/2"]),
}


@pytest.mark.parametrize("kind", sorted(PLANS))
def test_every_release_is_in_the_ledger_before_it_is_drawn(schema, tmp_path, monkeypatch, kind) -> None:
    """Every release (MST's three, AIM's 1-ways and two rounds of two) is charged (its noise
    planned once from the budget and split by the zCDP shares) before its noise is drawn; the
    ledger's epsilon recomputed from its entries alone equals the budget; one more release is
    refused, spending nothing."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    config, split, notes = PLANS[kind]
    model = MarginalSynthesizer(schema, kind=kind, epsilon=2.0, delta=1e-5, ledger=ledger, config=config)
    frame, drawn = _dependent_frame(schema, 500, seed=3), []
    original = np.random.default_rng

    class Watch:
        """numpy's generator, noting how many ledger entries exist when noise is drawn."""

        def __init__(self, seed=None):
            self.generator = original(seed)

        def normal(self, *args, **kwargs):
            drawn.append(len(ledger.read()))
            return self.generator.normal(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.generator, name)

    monkeypatch.setattr(np.random, "default_rng", Watch)
    model.fit(frame)
    monkeypatch.undo()
    entries = ledger.read()
    assert drawn == list(range(1, len(notes) + 1))  # the k-th draw happens after the k-th charge
    assert [e.note for e in entries] == notes
    # one Gaussian release of multiplier z, split: release i gets z / sqrt(share_i), so the
    # 1/z_i^2 (each release's zCDP rho, times 2) add up to the one release's 1/z^2
    z, shares = calibrate_noise(2.0, 1e-5, 1.0, 1), np.array(split)
    assert [e.noise_multiplier for e in entries] == pytest.approx(list(z / np.sqrt(shares)))
    assert all(e.sample_rate == 1.0 and e.steps == 1 for e in entries)
    assert sum(e.noise_multiplier ** -2 for e in entries) == pytest.approx(z ** -2)
    assert epsilon_from_ledger(entries, 1e-5) == pytest.approx(2.0, abs=1e-4)
    assert PrivacyAccountant(MarginalSynthesizer.planned_releases(kind, config, 2.0, 1e-5)).epsilon(1e-5) == \
        pytest.approx(epsilon_from_ledger(entries, 1e-5), rel=1e-9)
    before = ledger.path.read_bytes()
    with pytest.raises(BudgetExceededError):
        model.release(_dependent_frame(schema, 50, seed=4), 0, Query())
    assert ledger.path.read_bytes() == before


def test_federated_mst_on_iid_sites_matches_central_mst_at_the_same_noise(schema) -> None:
    """Three IID sites each add their own noise; a central curator adding the same total noise
    (sqrt(3) times a site's deviation) gets the same model up to the noise draws."""
    train, test = _dependent_frame(schema, 3000, seed=5), _dependent_frame(schema, 1000, seed=6)
    parts = [train.iloc[i::3].reset_index(drop=True) for i in range(3)]
    federated = fit_federated(schema, parts, epsilon=3.0, config=FAST, noise_seed=10)
    site_z = calibrate_noise(3.0, 1e-5, 1.0, 1)  # before the split into the three releases
    central_epsilon = _epsilon_for_noise(site_z / np.sqrt(3))
    central = MarginalSynthesizer(schema, epsilon=central_epsilon, config=FAST, noise_seed=20).fit(train)
    site = MarginalSynthesizer(schema, epsilon=3.0, config=FAST)
    site.plan(len(parts[0]))
    assert [central.noise_multiplier(i) for i in range(3)] == \
        pytest.approx([site.noise_multiplier(i) / np.sqrt(3) for i in range(3)], rel=1e-3)
    got = {name: quality_scores(test, m.sample(1500, seed=1), schema)["column_pair_trends"]
           for name, m in (("federated", federated), ("central", central))}
    assert abs(got["federated"] - got["central"]) < 0.05, got
    untrained = quality_scores(test, random_frame(schema, 1500, seed=7), schema)["column_pair_trends"]
    assert min(got.values()) > untrained + 0.05, (got, untrained)


def _epsilon_for_noise(z: float) -> float:
    lo, hi = 0.01, 100.0
    for _ in range(60):  # the accountant's epsilon falls as z grows: bisect on the epsilon
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if calibrate_noise(mid, 1e-5, 1.0, 1) > z else (lo, mid)
    return hi


@pytest.mark.parametrize("kind", ["mst", "aim"])
def test_a_planted_dependency_is_found_and_reproduced(schema, kind) -> None:
    """region is a function of sex, the label of age: MST's tree and AIM's rounds measure both
    pairs (or a clique holding them), and the samples keep them."""
    train = _dependent_frame(schema, 2000, seed=8)
    model = MarginalSynthesizer(schema, kind=kind, epsilon=3.0, config=FAST, noise_seed=30).fit(train)
    assert any({"sex", "region"} <= set(cl) for cl in model.cliques), model.cliques
    assert any({"mechanism", "age"} <= set(cl) for cl in model.cliques), model.cliques
    sample = model.sample(2000, seed=2)
    agree = (sample["region"].astype(str) == sample["sex"].map({"F": "head", "M": "torso", "U": "limb"})
             .astype(str)).mean()
    assert agree > 0.85, agree  # independent columns would agree about 1/3 of the time
    assert sample["mechanism"].isin(schema.label.categories).all()
    drowning = model.sample(50, conditions={"mechanism": "drowning"}, seed=3)
    assert (drowning["mechanism"] == "drowning").all() and (drowning["age"] >= 80).mean() > 0.8


def test_a_saved_model_loads_and_samples_the_same(schema, tmp_path) -> None:
    from common.stages.models import TabularFamily

    model = MarginalSynthesizer(schema, epsilon=3.0, config=FAST, noise_seed=1).fit(
        _dependent_frame(schema, 800, seed=9))
    model.save(tmp_path / "model")
    loaded = TabularFamily.load(tmp_path / "model")
    assert isinstance(loaded, MarginalSynthesizer) and loaded.cliques == model.cliques
    pd.testing.assert_frame_equal(loaded.sample(200, seed=4), model.sample(200, seed=4))


def test_the_tree_sampler_matches_the_model_exactly() -> None:
    """Belief propagation gives the exact marginals of the model (brute force over the joint of
    a small model with a loop and a chain), and its samples follow them."""
    import itertools

    from common.marginal.sampler import TreeSampler

    rng = np.random.default_rng(0)
    sizes = {"a": 3, "b": 2, "c": 4, "d": 2, "e": 3}
    cliques = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("e",)]
    potentials = {cl: rng.normal(0, 1.5, [sizes[x] for x in cl]) for cl in cliques}
    names = list(sizes)
    joint = np.zeros([sizes[x] for x in names])
    for index in itertools.product(*(range(sizes[x]) for x in names)):
        cell = dict(zip(names, index, strict=True))
        joint[index] = np.exp(sum(t[tuple(cell[x] for x in cl)] for cl, t in potentials.items()))
    joint /= joint.sum()
    sampler = TreeSampler(sizes, potentials)
    for node, marginal in sampler.marginals.items():
        exact = joint.sum(axis=tuple(i for i, x in enumerate(names) if x not in node))
        np.testing.assert_allclose(np.transpose(marginal, [node.index(x) for x in names if x in node]),
                                   exact, atol=1e-12)
    codes = sampler.sample(200_000, np.random.default_rng(1))
    counts = np.zeros([sizes[x] for x in names])
    np.add.at(counts, tuple(codes[x] for x in names), 1)
    assert 0.5 * np.abs(counts / counts.sum() - joint).sum() < 0.02
    # given evidence, the same exactness for the conditional: the joint restricted to c = 3
    given = sampler.given({"c": 3})
    conditional = np.where((np.arange(4) == 3)[None, None, :, None, None], joint, 0.0)
    conditional /= conditional.sum()
    for node, marginal in given.marginals.items():
        exact = conditional.sum(axis=tuple(i for i, x in enumerate(names) if x not in node))
        np.testing.assert_allclose(np.transpose(marginal, [node.index(x) for x in names if x in node]),
                                   exact, atol=1e-12)
    assert set(given.sample(1000, np.random.default_rng(2))["c"]) == {3}


def test_a_rare_condition_is_sampled_from_the_exact_conditional(schema) -> None:
    """A label value the model almost never draws: rejection sampling alone gives up within its
    200 draws per record, the conditioned model delivers, and keeps the planted dependency."""
    frame = _dependent_frame(schema, 1500, seed=11)
    frame.loc[frame.index[:1490], "mechanism"] = "fall"  # 10 records of the other classes
    model = MarginalSynthesizer(schema, epsilon=None, config=FAST).fit(frame)
    unconditioned = model.sample(20_000, seed=1)["mechanism"].value_counts(normalize=True)
    rare = unconditioned.idxmin()
    assert unconditioned[rare] < 1 / 200  # what rejection sampling could not meet
    drawn = model.sample(300, conditions={"mechanism": rare}, seed=2)
    assert len(drawn) == 300 and set(drawn["mechanism"]) == {rare}
    assert (drawn["region"].astype(str) == drawn["sex"].map({"F": "head", "M": "torso", "U": "limb"})
            .astype(str)).mean() > 0.9
    older = model.sample(100, conditions={"age": 80}, seed=3)  # a number: its bin, then rejection
    assert set(older["age"]) == {80}


def test_aims_selection_pays_for_cells_and_keeps_the_cap() -> None:
    """At equal noisy scores the clique with fewer cells wins (its measurement adds less error);
    a clique inside an earlier pick is skipped, and nothing that breaks the cap is picked."""
    candidates = [("a", "b"), ("a", "b", "c"), ("c", "d"), ("b", "d")]
    scores = np.array([100.0, 500.0, 100.0, 100.0])
    cells = [4, 40, 400, 20]
    picked = aim.select(candidates, scores, cells, deviation=1.0, k=2, fits=lambda picks: True)
    assert picked == [("a", "b", "c"), ("b", "d")]  # (a, b) lies inside (a, b, c); (c, d) costs most
    capped = aim.select(candidates, scores, cells, deviation=1.0, k=3,
                        fits=lambda picks: all(len(c) < 3 for c in picks))
    assert capped == [("a", "b"), ("b", "d"), ("c", "d")]
    # with more noise, the big triple no longer pays for its 40 cells
    assert aim.select(candidates, scores, cells, deviation=20.0, k=1, fits=lambda p: True) == [("a", "b")]


def test_a_restarted_aim_coordinator_asks_what_it_would_have_asked(schema) -> None:
    """AIM's coordinator checkpointed after round 1 and loaded into a fresh model asks the same
    round-2 query (the same candidates and model distributions, sampled from the saved
    potentials), and its picks are measured, not asked again."""
    config = {**FAST, "rounds": 2, "round_iters": 100, "model_samples": 1000}
    parts = [_dependent_frame(schema, 300, seed=s) for s in (11, 12)]
    sites = [MarginalSynthesizer(schema, kind="aim", epsilon=3.0, config=config, noise_seed=s)
             for s in (1, 2)]
    for site, part in zip(sites, parts, strict=True):
        site.plan(len(part))
    model = MarginalSynthesizer(schema, kind="aim", epsilon=None, config=config, seed=5)
    for step in range(3):  # the 1-ways, round 1's scores and its measurements
        query = model.query(step)
        model.absorb(step, [Release(-1, site.noise_multiplier(step), site.release(part, step, query))
                            for site, part in zip(sites, parts, strict=True)])
    restarted = MarginalSynthesizer(schema, kind="aim", epsilon=None, config=config, seed=5)
    restarted.load_state_dict(model.state_dict())
    again, first = restarted.query(3), model.query(3)
    assert again.cliques == first.cliques and len(first.cliques) > 0
    assert all(np.array_equal(a, b) for a, b in zip(again.model, first.model, strict=True))
    assert set(restarted.cliques) == set(model.cliques) and not set(again.cliques) & set(model.cliques)
