"""The metric library: each metric moves the right way on planted cases.

Simulated hospitals are the ground truth: a copy of the real split must score perfectly, breaking
the joint structure (independent column shuffles, the marginals baseline) must cost Column Pair
Trends and detection but not Column Shapes, and a classifier trained on scrambled labels must fall
to chance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.data import load_site_data, stratified_split
from common.errors import InputError
from common.metrics.baselines import IndependentMarginals
from common.metrics.features import MAX_CATEGORY_CODES, FeatureEncoder
from common.metrics.fidelity import detection_auc, fidelity_metrics, quality_scores, wasserstein_mean
from common.metrics.utility import augmentation_plan, augmented, trtr, tstr, utility_metrics
from common.schema import Schema
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_sites


@pytest.fixture(scope="module")
def sim() -> tuple[Schema, dict[str, pd.DataFrame]]:
    sites = simulate_sites(3, 600, seed=11)
    frame = pd.concat(sites.values(), ignore_index=True)
    return ed_trauma_schema(list(sites)), stratified_split(frame, "mechanism", seed=0)


def shuffled_columns(frame: pd.DataFrame, schema: Schema, seed: int) -> pd.DataFrame:
    """Each modeled column permuted on its own: marginals kept exactly, dependencies destroyed."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for col in schema.modeled_columns:
        out[col.name] = frame[col.name].iloc[rng.permutation(len(frame))].to_numpy()
    return out


def test_a_copy_scores_perfectly_and_unmodeled_columns_are_ignored(sim) -> None:
    schema, split = sim
    real = split["test"]
    copy = real.copy()
    copy["record_id"] = "x"  # identifiers, the site and the narrative are never compared
    copy["narrative"] = "nothing alike"
    copy["hospital"] = real["hospital"].iloc[0]
    scores = fidelity_metrics(real, copy, schema)
    assert scores["column_shapes"] == pytest.approx(1.0, abs=1e-6)
    assert scores["column_pair_trends"] == pytest.approx(1.0, abs=1e-6)
    assert scores["detection_auc"] == pytest.approx(0.5, abs=0.05)
    assert scores["wasserstein_mean"] == 0.0
    # Two real splits of one population cannot be told apart either.
    assert detection_auc(real, split["holdout"], schema) == pytest.approx(0.5, abs=0.07)


def test_shuffling_columns_breaks_pair_trends_not_shapes(sim) -> None:
    schema, split = sim
    real = split["test"]
    scores = quality_scores(real, shuffled_columns(real, schema, seed=1), schema)
    assert scores["column_shapes"] == pytest.approx(1.0, abs=1e-6)
    assert scores["column_pair_trends"] < 0.85  # a copy scores 1.0
    assert detection_auc(real, shuffled_columns(real, schema, seed=1), schema) > 0.8


def test_shifted_numeric_raises_wasserstein(sim) -> None:
    schema, split = sim
    real = split["test"]
    older = real.copy()
    older["age"] = (real["age"] + 20).clip(upper=105)
    n_numeric = sum(c.is_numeric for c in schema.modeled_columns)
    # Age alone moved, by at most 20/105 of its range; the other numeric columns by nothing.
    assert 0.5 * 20 / 105 / n_numeric < wasserstein_mean(real, older, schema) <= 20 / 105 / n_numeric


def test_wasserstein_scales_by_schema_bounds(schema, good_csv) -> None:
    real = load_site_data(good_csv, schema)
    synth = real.copy()
    real["age"], synth["age"] = pd.array([0] * 3, dtype="Int64"), pd.array([105] * 3, dtype="Int64")
    # age spans its whole public range (distance 1); sbp and temp are unchanged (0).
    assert wasserstein_mean(real, synth, schema) == pytest.approx(1 / 3)
    synth["temp"] = np.nan  # a column present on one side only counts the maximum, 1
    assert wasserstein_mean(real, synth, schema) == pytest.approx(2 / 3)


def test_tstr_on_a_copy_of_train_equals_trtr_and_scrambled_labels_fall_to_chance(sim) -> None:
    schema, split = sim
    train, test = split["train"], split["test"]
    ceiling = trtr(train, test, schema)
    assert ceiling.macro_f1 > 0.3
    assert set(ceiling.per_class_recall) == set(test["mechanism"].astype(str))
    assert tstr(train.copy(), test, schema) == ceiling
    scrambled = train.copy()
    scrambled["mechanism"] = train["mechanism"].sample(frac=1, random_state=0).to_numpy()
    assert tstr(scrambled, test, schema).macro_f1 < min(0.15, ceiling.macro_f1 / 3)


def test_augmentation_tops_rare_classes_up_to_the_median(sim) -> None:
    schema, split = sim
    labels = ["fall"] * 10 + ["cut_pierce"] * 6 + ["firearm"] * 2 + ["drowning"]
    frame = pd.DataFrame({"mechanism": pd.Categorical(labels, categories=schema.label.categories)})
    assert augmentation_plan(frame, schema) == {"firearm": 2, "drowning": 3}  # median of 10,6,2,1 = 4

    train, test = split["train"], split["test"]
    asked: list[tuple[str, int]] = []

    def sampler(label: str, n: int) -> pd.DataFrame:
        asked.append((label, n))
        return train[train["mechanism"] == label].sample(n, replace=True, random_state=0)

    augmented(train, test, schema, sampler)
    assert dict(asked) == augmentation_plan(train, schema) and asked
    metrics = utility_metrics(train, test, train, schema, sampler=sampler)
    assert metrics["tstr_macro_f1"] == metrics["trtr_macro_f1"]
    assert 0 < metrics["augmented_macro_f1"] <= 1


def test_independent_marginals_keep_shapes_but_lose_trends(sim) -> None:
    schema, split = sim
    train, test = split["train"], split["test"]
    baseline = IndependentMarginals(schema).fit(train)
    synth = baseline.sample(len(test), seed=0)
    assert list(synth.columns) == [c.name for c in schema.modeled_columns]
    assert synth.dtypes.equals(train[synth.columns].dtypes)
    marginal, real = quality_scores(test, synth, schema), quality_scores(test, split["holdout"], schema)
    assert marginal["column_shapes"] > 0.9
    assert marginal["column_pair_trends"] < real["column_pair_trends"] - 0.08
    assert detection_auc(test, synth, schema) > 0.8
    rare = baseline.sample(50, conditions={"mechanism": "firearm"}, seed=1)
    assert (rare["mechanism"] == "firearm").all()
    without = IndependentMarginals(schema).fit(train[train["mechanism"] != "firearm"])
    with pytest.raises(InputError, match="no training record"):
        without.sample(5, conditions={"mechanism": "firearm"})


def test_long_code_lists_are_pooled_for_the_classifier() -> None:
    codes = [f"p{i}" for i in range(1000)]
    schema = Schema.from_dict({"name": "products", "columns": [
        {"name": "product", "type": "categorical", "categories": codes},
        {"name": "mechanism", "type": "categorical", "role": "label", "categories": ["a", "b"]}]})
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"product": pd.Categorical(rng.choice(codes[:20], 400), categories=codes),
                         "mechanism": pd.Categorical(rng.choice(["a", "b"], 400))})
    synth = real.copy()
    synth["product"] = pd.Categorical(rng.choice(codes, 400), categories=codes)  # ~330 distinct
    encoded = FeatureEncoder(schema.modeled_columns).fit(real).transform(synth)
    assert len(encoded["product"].cat.categories) <= MAX_CATEGORY_CODES
    assert detection_auc(real, synth, schema) > 0.8  # more than 255 distinct codes: still runs


def test_trtr_is_fitted_once_per_split_content(sim, monkeypatch) -> None:
    import common.metrics.utility as utility

    schema, split = sim
    fits = []
    real_fit = utility.train_and_score
    monkeypatch.setattr(utility, "train_and_score", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    monkeypatch.setattr(utility, "_TRTR", {})
    first = trtr(split["train"], split["test"], schema, seed=3)
    assert trtr(split["train"].copy(), split["test"].copy(), schema, seed=3) == first
    assert len(fits) == 1  # the same contents: the ceiling is not fitted again
    changed = split["train"].iloc[::-1]  # same rows, another order: another fit
    trtr(changed, split["test"], schema, seed=3)
    trtr(split["train"], split["test"], schema, seed=4)
    assert len(fits) == 3
