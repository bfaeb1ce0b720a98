"""Private evolution: the vote histogram's sensitivity, the spend before the reply, the stage over
the in-process Grid, and the public warm start's refusals and shipped adapter."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from common.errors import InputError
from common.privacy.ledger import Ledger
from common.run_plan import ModelSpec, PlanRefused
from common.schema import Schema
from common.stages.models import TextFamily
from common.stages.private_evolution import PrivateEvolutionCoordinator
from common.text.narrative_model import NarrativeModel, resolve_config
from common.text.private_evolution import CandidatePool, record_keys, vote_histogram
from common.text.public_corpus import PublicCorpus, note_hash
from common.text.serialize import EXAMPLE_COLUMN
from common.text.warm_start import SHIPPED, warm_key
from server.federation import run_federation
from simulation.pipeline import check_public_corpus
from simulation.profiles import PROFILES
from tests.flower_helpers import site_entries
from tests.test_federation import MARGINAL_RUNS, _grid, _settings

PE = {"base": "tiny", "fields": ["mechanism", "age", "sex", "body_region"], "max_target_tokens": 32,
      "sampling": {"max_new_tokens": 12, "batch_size": 16, "retries": 0},
      "pe": {"rounds": 2, "share": 1.0, "candidates": 3, "pool_records": 120}}


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_removing_one_note_moves_one_bin_by_at_most_one() -> None:
    rng = np.random.default_rng(0)
    private, candidates = _unit(rng, 200), _unit(rng, 30)
    keys = [f"k{i % 4}" for i in range(200)]
    candidate_keys = [f"k{i % 5}" for i in range(30)]  # k4 has candidates, no notes; none abstain
    full = vote_histogram(private, keys, candidates, candidate_keys)
    assert full.sum() == 200
    for drop in range(0, 200, 7):
        keep = [i for i in range(200) if i != drop]
        fewer = vote_histogram(private[keep], [keys[i] for i in keep], candidates, candidate_keys)
        moved = np.abs(full - fewer)
        assert moved.max() == 1 and moved.sum() == 1  # L1 = L2 = 1: what the accountant assumes


def test_a_note_without_candidates_of_its_key_abstains() -> None:
    rng = np.random.default_rng(1)
    votes = vote_histogram(_unit(rng, 10), ["a"] * 5 + ["b"] * 5, _unit(rng, 3), ["a", "a", "c"])
    assert votes.sum() == 5 and votes[2] == 0


def test_pool_keeps_per_key_rewrites_the_weak_half_and_exports_voted_examples() -> None:
    records = pd.DataFrame({"mechanism": ["fall"] * 5 + ["cut_pierce"] * 2, "age": range(7)})
    pool = CandidatePool.draw(records, ["mechanism"], per_key=4)
    assert pool.keys == ["fall"] * 4 + ["cut_pierce"] * 2
    pool.texts = [f"note {i}" for i in range(6)]
    pool.votes = [5.0, -1.0, 3.0, 0.5, 2.0, 7.0]
    assert sorted(pool.weak_and_strong()) == [(1, 2), (3, 0), (4, 5)]  # best weak with best strong
    assert pool.examples() == {"fall": [("note 0", 5.0), ("note 2", 3.0), ("note 3", 0.5)],
                               "cut_pierce": [("note 4", 2.0), ("note 5", 7.0)]}


def _site_records(sites) -> tuple[Schema, pd.DataFrame]:
    schema_path, configs = sites
    schema = Schema.load(schema_path)
    frame = pd.read_csv(next(iter(configs.values())).data_path)
    return schema, frame


def test_votes_are_charged_to_the_ledger_before_the_noise_is_drawn(sites, monkeypatch) -> None:
    schema, records = _site_records(sites)
    ledger = Ledger()
    model = NarrativeModel(schema, epsilon=2.0, config=PE, ledger=ledger, noise_seed=3)
    model.plan(len(records), 0)
    candidates = records["narrative"].head(12).tolist()
    keys = record_keys(records.head(12), model.checker.columns)
    seen: list[int] = []
    real_rng = np.random.default_rng

    class Spy:
        def __init__(self, seed):
            self.rng = real_rng(seed)

        def normal(self, *args, **kwargs):
            seen.append(len(ledger.read()))  # the charge is already in the ledger
            return self.rng.normal(*args, **kwargs)

    monkeypatch.setattr("common.text.narrative_model.np.random.default_rng", Spy)
    noisy = model.release_votes(records, candidates, keys, round=1)
    assert seen == [1] and ledger.read()[0].note == "PE votes 1/2"
    plain = NarrativeModel(schema, epsilon=None, config=PE)
    plain.plan(len(records), 0)
    exact = plain.release_votes(records, candidates, keys, 1)
    assert exact.sum() > 0 and not np.allclose(noisy, exact)  # the histogram is noised
    model.release_votes(records, candidates, keys, round=2)
    assert model.epsilon_spent() == pytest.approx(2.0, rel=1e-3)  # the two rounds spend the share
    with pytest.raises(InputError, match="not one of the planned rounds"):
        model.release_votes(records, candidates, keys, round=3)


def _template_writer(schema: Schema):
    """Notes that pass the gate (the tiny test model writes noise): the record's words, numbered."""
    mechanism, region = schema["mechanism"].synonyms, schema["body_region"].synonyms
    counter = iter(range(10 ** 6))

    def write(self, frame: pd.DataFrame) -> list[str | None]:
        rows = frame.to_dict("records")
        return [f"PT {mechanism[r['mechanism']][0]} {region[r['body_region']][0]} "
                f"{'LIKE ' if isinstance(r.get(EXAMPLE_COLUMN), str) else ''}{next(counter)}"
                for r in rows]
    return write


def test_the_pe_stage_votes_at_every_site_and_sets_the_release_examples(tmp_path, sites, monkeypatch,
                                                                         server_identity) -> None:
    schema_path, configs = sites
    schema = Schema.load(schema_path)
    monkeypatch.setattr(PrivateEvolutionCoordinator, "_write", _template_writer(schema))
    grid = _grid(configs)
    settings = _settings(tmp_path, schema_path, kind="mst", tabular_config=MARGINAL_RUNS["mst"][0],
                         text_config=PE, synthetic_records=120,
                         narrated_records=20)
    assert [s.type for s in settings.plan.stages] == ["marginals", "pe"]
    result = run_federation(grid, settings)
    votes = [m for m in grid.messages if m.metadata.message_type == "query.pe"]
    assert len(votes) == 2 * len(configs)
    first, second = (json.loads(str(m.content["values"]["json"])) for m in votes[::len(configs)][:2])
    assert first["keys"] == second["keys"]  # the same candidates, the weak half rewritten
    assert first["texts"] != second["texts"]
    for config in configs.values():
        notes = [e.note for e in site_entries(config) if e.model == "text-lora"]
        assert notes == ["PE votes 1/2", "PE votes 2/2"]
    model = NarrativeModel.load(result.model_dir)
    assert model.examples and all(w > 0 for pool in model.examples.values() for _, w in pool)
    chosen = model.with_examples(pd.read_parquet(settings.run_dir / "synthetic.parquet").head(40), seed=0)
    assert chosen[EXAMPLE_COLUMN].notna().any()


def test_a_site_refuses_a_warm_start_on_its_own_notes(sites) -> None:
    schema, records = _site_records(sites)
    corpus = {"name": "leaked.csv", "sha256": "0" * 64,
              "note_hashes": sorted({note_hash(records["narrative"][3].lower() + "  ")})}
    spec = ModelSpec("text", "lora", {**PE, "public_corpus": corpus})
    with pytest.raises(PlanRefused, match="1 of this site's .* public corpus 'leaked.csv'"):
        TextFamily().records(records, schema, spec)
    clean = ModelSpec("text", "lora", {**PE, "public_corpus": {**corpus, "note_hashes": ["f" * 16]}})
    assert len(TextFamily().records(records, schema, clean)) == len(records)


def test_simulate_refuses_the_warm_start_on_the_corpus_itself() -> None:
    corpus = PublicCorpus.default()
    with pytest.raises(InputError, match="--public-corpus none"):
        check_public_corpus({"V": corpus.path}, corpus.schema, corpus)


def test_the_shipped_warm_start_matches_its_manifest_and_the_quick_profile() -> None:
    """The file is what the manifest's command made from today's corpus and quick profile:
    a changed corpus, recipe or LoRA setting without a rebuilt file fails here."""
    key = warm_key(PublicCorpus.default(), resolve_config(PROFILES["quick"].text_config))
    manifest = json.loads((SHIPPED / f"{key[:16]}.json").read_text(encoding="utf-8"))
    data = (SHIPPED / manifest["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert manifest["key"] == key and manifest["command"] == "fedsynth warm-start --ship"
    assert len(data) < 4_000_000
