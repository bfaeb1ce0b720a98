"""Memorisation guards: canary planting, exposure, the n-gram scan, and the test that matters:
without DP a planted canary is memorised (high exposure); with DP at the default epsilon it is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from common.metrics.text import ngram_overlap
from common.text.canary import Canary, exposure, log_perplexities, plant, random_secret
from common.text.narrative_model import NarrativeModel
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site

torch.set_num_threads(1)
SCHEMA = ed_trauma_schema(["A"])
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_plant_puts_each_canary_in_distinct_rows() -> None:
    rng = np.random.default_rng(0)
    canaries = [Canary(random_secret(rng)) for _ in range(3)]
    texts = [f"NOTE {i}" for i in range(10)]
    planted, rows = plant(texts, canaries, copies=2, rng=rng)
    flat = [r for rs in rows for r in rs]
    assert len(set(flat)) == 6
    for canary, where in zip(canaries, rows, strict=True):
        for r in where:
            assert planted[r] == f"NOTE {r} CALLBACK NUMBER {canary.secret}"
    assert sum(p != t for p, t in zip(planted, texts, strict=True)) == 6
    with pytest.raises(ValueError, match="need as many"):
        plant(texts, canaries, copies=4, rng=rng)


def test_exposure_ranks_the_canary_among_candidates() -> None:
    canary = Canary("123456789")
    rng = np.random.default_rng(0)
    first = exposure(lambda cs: np.array([0.0 if c == canary else 1.0 for c in cs]), canary, 255, rng)
    assert first == pytest.approx(8.0)  # ranked first of 256
    last = exposure(lambda cs: np.array([9.0 if c == canary else 1.0 for c in cs]), canary, 255, rng)
    assert last == pytest.approx(0.0)
    tied = exposure(lambda cs: np.ones(len(cs)), canary, 255, rng)
    assert tied == pytest.approx(8 - np.log2(1 + 127.5))


def test_log_perplexity_is_in_bits_over_the_target() -> None:
    model = NarrativeModel(SCHEMA, epsilon=None, config={"base": "tiny"}, device="cpu")
    scores = log_perplexities(model.model, model.tokenizer, ["p", "p"], ["AB", "AB CD EF GH"], 32)
    assert scores.shape == (2,) and 0 < scores[0] < scores[1]  # longer text, more bits
    vocab_bits = np.log2(len(model.tokenizer))
    n_tokens = len(model.tokenizer("AB", add_special_tokens=False).input_ids) + 1  # + end of turn
    assert scores[0] == pytest.approx(n_tokens * vocab_bits, rel=0.2)  # untrained: near uniform


def test_ngram_scan_returns_counts_only() -> None:
    training = ["45YOM S/P GLF AT HOME DX L HIP FX ADMITTED TO FLOOR",
                "22YOF CUT HAND ON GLASS AT WORK DX LAC D/C HOME"]
    generated = ["80YOF s/p glf at home dx l hip fx admitted to ward",  # 8 words shared, any case
                 "22YOF CUT HAND ON GLASS AT WORK",  # only 7 words
                 "PED VS AUTO"]
    assert ngram_overlap(generated, training) == {"generated": 3, "with_overlap": 1,
                                                  "shared_ngrams": 3}
    assert ngram_overlap(generated, training, n=7)["with_overlap"] == 2


@pytest.fixture(scope="module")
def planted_site() -> tuple[pd.DataFrame, pd.DataFrame, list[Canary], list[list[int]]]:
    """64 records of one site; 3 canaries, each in 2 training narratives."""
    real = simulate_site("rural", 64, 0, "A")
    rng = np.random.default_rng(0)
    canaries = [Canary(random_secret(rng)) for _ in range(3)]
    texts, rows = plant(list(real["narrative"]), canaries, copies=2, rng=rng)
    return real, real.assign(narrative=texts), canaries, rows


def mean_exposure(epsilon: float | None, site) -> float:
    real, train, canaries, rows = site
    config = {"base": "tiny", "max_noise_per_batch": None, "fields": ["mechanism"],
              "lr": 2e-2, "batch_size": 16,
              "lora": {"target_modules": ALL_LINEAR}}
    model = NarrativeModel(SCHEMA, epsilon=epsilon, config=config, device="cpu", noise_seed=5)
    model.fit(train, steps=100)
    return float(np.mean([model.canary_exposure(real.iloc[r[0]].to_dict(), real["narrative"].iloc[r[0]],
                                                canary, n_candidates=127, seed=1)
                          for canary, r in zip(canaries, rows, strict=True)]))


@pytest.mark.integration  # ~30-50 s on 2 cores: two tiny-model trainings of 100 steps
def test_canaries_are_memorised_without_dp_and_not_with_it(planted_site) -> None:
    """Exposure is at most log2(128) = 7 bits here; a model that never saw the canaries scores
    1.44 bits on average. Same data, steps, learning rate and seeds; only DP differs."""
    without_dp = mean_exposure(None, planted_site)
    with_dp = mean_exposure(3.0, planted_site)  # NarrativeModel's default epsilon
    print(f"canary exposure: without DP {without_dp:.2f} bits, with DP (epsilon 3) {with_dp:.2f} bits")
    assert without_dp > 6.0
    assert with_dp < 3.0


@pytest.mark.integration  # ~30 s on 2 cores: tiny-model candidates, one vote round, 3 exposures
def test_private_evolution_does_not_expose_the_canaries_even_without_noise(planted_site) -> None:
    """What private evolution releases (vote histograms over the coordinator's own candidates,
    then the voted candidates as style examples) carries no private text: with the planted notes
    voting without any noise, and the voted example in every prompt, exposure stays at chance
    (a model trained on them without DP scores above 6 bits in the test above)."""
    from common.text.private_evolution import CandidatePool
    from common.text.serialize import EXAMPLE_COLUMN

    real, train, canaries, rows = planted_site
    config = {"base": "tiny", "fields": ["mechanism"], "lora": {"target_modules": ALL_LINEAR},
              "sampling": {"max_new_tokens": 16, "batch_size": 16, "retries": 0},
              "pe": {"rounds": 1, "share": 1.0, "candidates": 4, "pool_records": 64}}
    model = NarrativeModel(SCHEMA, epsilon=None, config=config, device="cpu")
    pool = CandidatePool.draw(real.drop(columns="narrative"), model.checker.columns, per_key=4)
    pool.texts = model.sample(pool.frame(), seed=0)["narrative"].tolist()  # the coordinator's own
    model.plan(len(train), 0)
    pool.votes = model.release_votes(train, pool.texts, pool.keys, round=1).tolist()
    model.examples = pool.examples()
    assert model.examples  # the planted site's notes did vote
    exposures = []
    for canary, r in zip(canaries, rows, strict=True):
        record = model.with_examples(real.iloc[[r[0]]], seed=0).iloc[0].to_dict()
        assert isinstance(record[EXAMPLE_COLUMN], str) and canary.text not in record[EXAMPLE_COLUMN]
        exposures.append(model.canary_exposure(record, real["narrative"].iloc[r[0]], canary,
                                               n_candidates=127, seed=1))
    print(f"canary exposure after private evolution (no noise): {np.mean(exposures):.2f} bits")
    assert float(np.mean(exposures)) < 3.0
