"""TabularSynthesizer: budget over a whole (federated) run, persistence, weights, sampling.

Runs on the tiny model of test_privacy.py so that these tests check the facade, not a generator.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import BudgetExceededError, InputError
from common.privacy.accountant import DEFAULT_DELTA
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.tabular import synthesizer as synth_module
from common.tabular.synthesizer import TabularSynthesizer
from tests.test_encoding import random_frame, small_schema
from tests.test_privacy import TinyModel

CONFIG = {"batch_size": 32, "steps": 20, "lr": 1e-2, "model": {"hidden": 8}}
NOISE_SEED = 5  # a privacy setting of the data holder, never part of the config
N = 200


@pytest.fixture(autouse=True)
def tiny_kind(monkeypatch) -> None:
    monkeypatch.setitem(synth_module.MODEL_CLASSES, "tiny", f"{TinyModel.__module__}:TinyModel")


@pytest.fixture(scope="module")
def schema():
    return small_schema()


@pytest.fixture(scope="module")
def frame(schema) -> pd.DataFrame:
    return random_frame(schema, N, seed=0)


def make(schema, ledger=None, **kw) -> TabularSynthesizer:
    return TabularSynthesizer(schema, kind="tiny", epsilon=kw.pop("epsilon", 2.0),
                              config={**CONFIG, **kw.pop("config", {})}, device="cpu",
                              ledger=ledger, noise_seed=kw.pop("noise_seed", NOISE_SEED), **kw)


def entries(ledger: Ledger) -> list[dict]:
    return [{**vars(e), "time": None} for e in ledger.read()]


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Named weights: the same names, and every array equal."""
    return set(a) == set(b) and all(np.array_equal(a[name], b[name]) for name in a)


def test_fit_spends_the_budget_counts_included(schema, frame) -> None:
    synth = make(schema).fit(frame)
    assert synth.delta == DEFAULT_DELTA == 1e-5  # a public default, never from the record count
    spent = synth.epsilon_spent()
    assert 1.98 < spent <= 2.0
    counts, training = synth.ledger.read()
    assert (counts.sample_rate, counts.steps, counts.note) == (1.0, 1, "label counts")
    assert 0.19 < counts.epsilon_after <= 0.2  # counts_fraction 0.1 of epsilon
    assert training.steps == CONFIG["steps"] and training.sample_rate == 1 / np.ceil(N / 32)
    assert epsilon_from_ledger(synth.ledger.read(), synth.delta) == pytest.approx(spent, rel=1e-9)
    assert (synth.label_counts >= 0).all() and synth.label_counts.shape == (5,)


def test_federated_rounds_stay_in_budget_and_refuse_beyond(schema, frame) -> None:
    synth = make(schema)
    rounds, k = 4, 5
    sigma = synth.plan(N, rounds * k)
    synth.release_label_counts(frame, round=0)
    first = synth.release_label_counts(frame)
    np.testing.assert_array_equal(first, synth.label_counts)  # one release, not a fresh draw
    spent = [synth.train_steps(frame, k, round=r) for r in range(rounds)]
    assert (np.diff(spent) > 0).all() and 1.98 < spent[-1] <= 2.0
    assert {e.noise_multiplier for e in synth.ledger.read()[1:]} == {sigma}
    weights, ledger = synth.get_weights(), entries(synth.ledger)
    with pytest.raises(BudgetExceededError, match="Nothing was spent"):
        synth.train_steps(frame, k, round=rounds)
    assert entries(synth.ledger) == ledger and synth.epsilon_spent() == spent[-1]
    assert same_weights(weights, synth.get_weights())


def test_plan_is_fixed_for_the_whole_run(schema, frame) -> None:
    synth = make(schema)
    with pytest.raises(InputError, match="plan"):
        synth.train_steps(frame, 1)
    synth.plan(N, 10)
    assert synth.plan(N, 10) == synth.plan(N, 10)
    with pytest.raises(InputError, match="already planned"):
        synth.plan(N, 20)
    with pytest.raises(InputError, match="same training split"):
        synth.train_steps(frame.iloc[:100], 1)


def test_resume_from_saved_folder_matches_uninterrupted_run(schema, frame, tmp_path) -> None:
    whole = make(schema, ledger=tmp_path / "whole.jsonl")
    whole.plan(N, 15)
    whole.release_label_counts(frame)
    for r in range(3):
        whole.train_steps(frame, 5, round=r)

    first = make(schema, ledger=tmp_path / "site.jsonl")
    first.plan(N, 15)
    first.release_label_counts(frame)
    first.train_steps(frame, 5, round=0)
    first.save(tmp_path / "ckpt")
    del first
    # as a site resumes: the facade built with its own privacy settings (the noise seed is never
    # saved), then the saved state
    resumed = make(schema, ledger=tmp_path / "site.jsonl")
    resumed.load_state_dict(torch.load(tmp_path / "ckpt" / "tabular.pt", map_location="cpu",
                                       weights_only=True))
    for r in (1, 2):
        resumed.train_steps(frame, 5, round=r)

    assert resumed.epsilon_spent() == whole.epsilon_spent()
    assert entries(resumed.ledger) == entries(whole.ledger)
    assert same_weights(whole.get_weights(), resumed.get_weights())


def test_loaded_folder_resumes_the_spend_without_a_saved_noise_seed(schema, frame, tmp_path) -> None:
    """``load`` restores weights, plan and spend, but never the noise seed (nor the RNG state of
    a seeded run): training on continues the ledger exactly, with fresh noise."""
    first = make(schema, ledger=tmp_path / "site.jsonl")
    first.plan(N, 15)
    first.release_label_counts(frame)
    first.train_steps(frame, 5, round=0)
    first.save(tmp_path / "ckpt")
    assert "noise_seed" not in (tmp_path / "ckpt" / "tabular.json").read_text()
    shutil.copy(tmp_path / "site.jsonl", tmp_path / "copy.jsonl")  # two continuations compared
    loaded = TabularSynthesizer.load(tmp_path / "ckpt", device="cpu", ledger=tmp_path / "copy.jsonl")
    assert loaded.noise_seed is None and loaded.max_grad_norm == first.max_grad_norm
    assert same_weights(loaded.get_weights(), first.get_weights())
    first.train_steps(frame, 5, round=1)
    loaded.train_steps(frame, 5, round=1)
    assert loaded.epsilon_spent() == first.epsilon_spent()
    assert entries(loaded.ledger) == entries(first.ledger)
    assert not same_weights(loaded.get_weights(), first.get_weights())


def test_checkpoint_trains_on_only_with_its_ledger(schema, frame, tmp_path) -> None:
    synth = make(schema, ledger=tmp_path / "ledger.jsonl")
    synth.plan(N, 20)
    synth.release_label_counts(frame)
    synth.train_steps(frame, 10)
    synth.save(tmp_path / "model")
    elsewhere = TabularSynthesizer.load(tmp_path / "model", ledger=tmp_path / "other.jsonl")
    assert elsewhere.epsilon_spent() == synth.epsilon_spent()
    assert len(elsewhere.sample(5, seed=0)) == 5  # sampling needs no ledger
    with pytest.raises(InputError, match="ledger"):
        elsewhere.train_steps(frame, 1)
    assert Ledger(tmp_path / "other.jsonl").read() == []


def test_released_folder_samples_like_the_original(schema, frame, tmp_path) -> None:
    synth = make(schema).fit(frame)
    synth.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"tabular.pt", "schema.yaml",
                                                                "tabular.json"}
    loaded = TabularSynthesizer.load(tmp_path / "model", device="cpu")
    assert loaded.epsilon_spent() == synth.epsilon_spent()
    pd.testing.assert_frame_equal(loaded.sample(50, seed=3), synth.sample(50, seed=3))
    with pytest.raises(InputError, match="missing"):
        TabularSynthesizer.load(tmp_path / "nowhere")


def test_weights_round_trip_for_aggregation(schema, frame) -> None:
    trained = make(schema).fit(frame)
    fresh = make(schema, seed=1)
    weights = trained.get_weights()
    assert set(weights) == set(trained.model.state_dict())  # by the torch state_dict's names
    assert not same_weights(weights, fresh.get_weights())
    fresh.set_weights(weights)
    fresh.set_label_counts(trained.label_counts)
    assert same_weights(fresh.get_weights(), weights)
    pd.testing.assert_frame_equal(fresh.sample(40, seed=9), trained.sample(40, seed=9))
    with pytest.raises(ValueError, match="shape"):
        fresh.set_weights({name: w[..., :1] for name, w in weights.items()})
    renamed = {f"x.{name}": w for name, w in weights.items()}
    with pytest.raises(ValueError, match="expected the arrays"):
        fresh.set_weights(renamed)
    missing = dict(list(weights.items())[1:])
    with pytest.raises(ValueError, match="expected the arrays"):
        fresh.set_weights(missing)
    assert same_weights(fresh.get_weights(), weights)  # a refused update changes nothing


def test_samples_are_typed_in_bounds_and_follow_noisy_counts(schema, frame) -> None:
    synth = make(schema).fit(frame)
    synth.set_label_counts([600.0, 300.0, 100.0, 0.0, 0.0])
    out = synth.sample(2000, seed=0)
    assert list(out.columns) == [c.name for c in schema.modeled_columns] and len(out) == 2000
    for name in out.columns:
        assert out[name].dtype == frame[name].dtype, name
        col = schema[name]
        if col.is_numeric:
            assert out[name].min() >= col.min and out[name].max() <= col.max
    shares = out["mechanism"].value_counts(normalize=True)
    assert shares["fall"] == pytest.approx(0.6, abs=0.05) and shares["burn"] == 0


def test_conditional_sampling(schema, frame) -> None:
    synth = make(schema).fit(frame)
    out = synth.sample(100, conditions={"mechanism": "drowning", "sex": "F", "intubated": "yes"},
                       seed=1)
    assert len(out) == 100
    assert (out["mechanism"] == "drowning").all() and (out["sex"] == "F").all()
    assert out["intubated"].eq(True).all()
    missing = synth.sample(20, conditions={"region": None}, seed=2)
    assert missing["region"].isna().all()


@pytest.mark.parametrize("conditions, message", [
    ({"colour": "red"}, r"unknown condition column 'colour'.*'mechanism'"),
    ({"note": "x"}, "modeled columns"),
    ({"sex": "X"}, r"allowed values: \['F', 'M', 'U'\]"),
    ({"mechanism": "meteor"}, "drowning"),
    ({"age": 500}, r"\[0, 110\]"),
    ({"age": None}, "non-nullable"),
])
def test_bad_conditions_raise_input_error(schema, frame, conditions, message) -> None:
    synth = make(schema)
    with pytest.raises(InputError, match=message):
        synth.sample(5, conditions=conditions)


def test_too_rare_condition_gives_up_with_a_clear_error(schema) -> None:
    synth = make(schema, config={"max_draws_per_record": 3})
    with pytest.raises(InputError, match="too rare"):
        synth.sample(10, conditions={"temp": 37.123456})


def test_non_private_baseline(schema, frame) -> None:
    synth = TabularSynthesizer(schema, kind="tiny", epsilon=None, config=CONFIG, device="cpu")
    synth.fit(frame)
    assert synth.epsilon_spent() is None and synth.ledger.read() == []
    expected = frame["mechanism"].value_counts().reindex(schema.label.categories).to_numpy()
    np.testing.assert_array_equal(synth.label_counts, expected)
    assert type(synth._trainer.optimizer) is torch.optim.Adam


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "gan"}, "unknown generator"),
    ({"config": {"epochs": 3}}, "unknown tabular config"),
    ({"config": {"counts_fraction": 1.5}}, "counts_fraction"),
    ({"config": {"dp_seed": 5}}, "unknown tabular config"),  # privacy settings: not config
    ({"config": {"max_grad_norm": 1.0}}, "unknown tabular config"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
])
def test_bad_settings_raise_input_error(schema, kwargs, message) -> None:
    kind = kwargs.pop("kind", "tiny")
    with pytest.raises(InputError, match=message):
        TabularSynthesizer(schema, kind=kind, **kwargs)


@pytest.mark.parametrize("kind, model", [
    ("vae", {"latent_dim": 4, "hidden": (16,)}),
    ("ddpm", {"timesteps": 8, "hidden": (16,), "dim_t": 8}),
])
def test_real_generators_train_under_dp_and_sample(schema, frame, kind, model, tmp_path) -> None:
    synth = TabularSynthesizer(schema, kind=kind, epsilon=2.0, device="cpu",
                               config={**CONFIG, "model": model})
    synth.fit(frame)
    assert 1.98 < synth.epsilon_spent() <= 2.0
    synth.save(tmp_path / kind)
    out = TabularSynthesizer.load(tmp_path / kind, device="cpu").sample(
        30, conditions={"mechanism": "burn"}, seed=0)
    assert len(out) == 30 and (out["mechanism"] == "burn").all()


@pytest.mark.parametrize("kind, model", [
    ("vae", {"latent_dim": 4, "hidden": (16,)}),
    ("ddpm", {"timesteps": 8, "hidden": (16,), "dim_t": 8}),
])
def test_noise_seed_makes_training_reproducible(schema, frame, kind, model) -> None:
    """The noise seed covers the models' own randomness (VAE reparameterisation, diffusion
    timesteps) as well as batches and DP noise: two seeded fits agree exactly, another seed does
    not, and without one (the default) the noise comes from OS entropy and no RNG state is kept."""
    def fit(noise_seed: int | None, global_seed: int) -> TabularSynthesizer:
        torch.manual_seed(global_seed)  # the global RNG must not matter
        synth = TabularSynthesizer(schema, kind=kind, epsilon=2.0, device="cpu",
                                   config={**CONFIG, "model": model}, noise_seed=noise_seed)
        return synth.fit(frame)

    first, again, other = fit(5, 1), fit(5, 2), fit(6, 1)
    assert same_weights(first.get_weights(), again.get_weights())
    assert not same_weights(first.get_weights(), other.get_weights())
    unseeded = [fit(None, 1) for _ in range(2)]
    assert not same_weights(unseeded[0].get_weights(), unseeded[1].get_weights())
    assert "rng" in first.state_dict()["trainer"]
    assert "rng" not in unseeded[0].state_dict()["trainer"]  # a saved state would reveal the noise


@pytest.mark.parametrize("config", [{}, {"counts_fraction": 0.3}], ids=["default", "counts-0.3"])
def test_planned_releases_are_what_plan_and_training_record(schema, frame, config) -> None:
    """``planned_releases`` (no model built) is exactly what ``fit`` then writes to the ledger:
    the label counts, then the calibrated DP-SGD steps."""
    steps = CONFIG["steps"]
    planned = TabularSynthesizer.planned_releases("tiny", {**CONFIG, **config}, 2.0, DEFAULT_DELTA,
                                                  N, steps)
    synth = make(schema, config=config).fit(frame, steps)
    recorded = [(e.noise_multiplier, e.sample_rate, e.steps) for e in synth.ledger.read()]
    assert recorded == [tuple(r) for r in planned]
    assert planned[-1][0] == synth.plan(N, steps)  # the plan's noise multiplier
    assert TabularSynthesizer.planned_releases("tiny", CONFIG, 2.0, DEFAULT_DELTA, 10 * N,
                                               steps)[-1][1] < planned[-1][1]  # more records: smaller q


def test_small_budget_releases_counts_and_trains(schema, frame) -> None:
    """epsilon 1 with the default 10% for the counts: a 0.1 release needs RDP orders near 200."""
    synth = make(schema, epsilon=1.0, config={"counts_fraction": 0.1}).fit(frame)
    counts, training = synth.ledger.read()
    assert 0.099 < counts.epsilon_after <= 0.1
    assert 0.99 < synth.epsilon_spent() <= 1.0 and training.steps == CONFIG["steps"]


def test_sampling_before_training_leaves_the_model_trainable(schema, frame) -> None:
    synth = make(schema)
    synth.plan(N, 10)
    synth.release_label_counts(frame)
    assert len(synth.sample(5, seed=0)) == 5  # puts the model in eval mode
    assert synth.train_steps(frame, 10) <= 2.0
