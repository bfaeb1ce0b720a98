"""Generation and the consistency gate (tiny Gemma 3), and the facade's save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import InputError
from common.text.base_models import load_base_model
from common.text.consistency import ConsistencyChecker
from common.text.generate import SamplingSettings, gate, generate_texts
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site, simulate_sites

torch.set_num_threads(1)
SCHEMA = ed_trauma_schema(["A"])
CONFIG = {"base": "tiny", "fields": ["mechanism", "age", "sex", "body_region"], "batch_size": 8,
          "max_target_tokens": 48, "sampling": {"max_new_tokens": 16, "batch_size": 4, "retries": 2}}


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return simulate_site("urban_trauma", 24, 8, "A")


# --- the checker ------------------------------------------------------------------------------
def test_checker_passes_real_notes_and_rejects_swapped_ones() -> None:
    sites = simulate_sites(2, 400, 1)
    frame = pd.concat(sites.values(), ignore_index=True)
    checker = ConsistencyChecker(ed_trauma_schema(list(sites)))
    assert checker.columns == ["mechanism", "body_region"]
    rows = frame.to_dict("records")
    assert all(checker.consistent(r, r["narrative"]) for r in rows)
    shuffled = np.random.default_rng(0).permutation(len(rows))
    for r, j in zip(rows, shuffled, strict=True):
        other = rows[j]
        same = (other["mechanism"], other["body_region"]) == (r["mechanism"], r["body_region"])
        assert checker.consistent(r, other["narrative"]) == same


def test_checker_words_and_verdicts() -> None:
    checker = ConsistencyChecker(SCHEMA)
    fall_head = {"mechanism": "fall", "body_region": "head"}
    assert checker.check(fall_head, "80YOF S/P GLF AT HOME, +LOC, DX SCALP LAC") == {
        "mechanism": True, "body_region": True}
    assert checker.check(fall_head, "GSW TO SCALP, SHOT WITH HANDGUN") == {
        "mechanism": False, "body_region": True}  # a planted inconsistent narrative
    assert checker.check(fall_head, "FELL ON GLASS, CUT SCALP, GLASS IN WOUND")["mechanism"] is False
    assert checker.check(fall_head, "FELL ONTO GLASS, LAC SCALP")["mechanism"] is True
    assert checker.mentions("mechanism", "box cutter; cutter") == {"cut_pierce": 1}  # whole words
    assert checker.check({"mechanism": "fall", "body_region": None}, "FELL")["body_region"] is True
    with pytest.raises(InputError, match="no 'synonyms'"):
        ConsistencyChecker(SCHEMA, ["sex"])


# --- the gate ---------------------------------------------------------------------------------
def test_gate_rewrites_a_planted_inconsistent_narrative_then_flags() -> None:
    rows = [{"mechanism": "fall", "body_region": "head"},
            {"mechanism": "firearm", "body_region": "thorax"},
            {"mechanism": "pedestrian", "body_region": "lower_extremity"}]
    good = {0: "S/P GLF, DX SCALP LAC", 1: "GSW TO CHEST", 2: "PED VS AUTO, DX TIBIA FX"}
    planted = "DOG BITE TO HAND"  # agrees with none of them
    calls: list[list[int]] = []

    def write(indices: list[int]) -> list[str]:
        calls.append(indices)
        attempt = len(calls)
        # record 0 is fixed on the second try; record 2 never is
        return [good[i] if (i == 1 or (i == 0 and attempt > 1)) else planted for i in indices]

    result = gate(rows, write, ConsistencyChecker(SCHEMA), retries=3)
    assert calls == [[0, 1, 2], [0, 2], [2], [2]]
    assert result.texts == [good[0], good[1], planted]
    assert result.flagged == [False, False, True]
    assert result.attempts == [2, 1, 4]


# --- generation -------------------------------------------------------------------------------
def test_batched_generation_equals_one_by_one() -> None:
    model, tokenizer = load_base_model("tiny", schema=SCHEMA)
    prompts = ["mechanism: fall", "mechanism: firearm\nage: 23\nsex: M\nbody region: thorax", "x"]
    settings = SamplingSettings(temperature=0.0, max_new_tokens=10, batch_size=3)
    batched, n_tokens = generate_texts(model, tokenizer, prompts, settings)
    single = [generate_texts(model, tokenizer, [p], settings)[0][0] for p in prompts]
    assert batched == single and 0 < n_tokens <= 30


def test_sample_writes_every_narrative_with_flags_reproducibly(records) -> None:
    model = NarrativeModel(SCHEMA, epsilon=None, config=CONFIG, device="cpu")
    synthetic = records.drop(columns=["narrative"]).head(5)
    first = model.sample(synthetic, seed=3)
    assert list(first.columns) == [*synthetic.columns, "narrative", FLAG_COLUMN]
    assert first["narrative"].notna().all()
    assert first[FLAG_COLUMN].all()  # an untrained tiny model writes noise: every note is flagged
    assert model.last_sample_stats["attempts"] == 5 * (1 + CONFIG["sampling"]["retries"])
    pd.testing.assert_frame_equal(first, model.sample(synthetic, seed=3))


def test_save_and_load_round_trip(records, tmp_path) -> None:
    model = NarrativeModel(SCHEMA, epsilon=None, config=CONFIG, device="cpu", max_grad_norm=0.7)
    model.train_steps(records, 3)
    weights = model.get_weights()
    assert weights and all(".lora_B." in name for name in weights)  # FFA-LoRA: B only, by name
    assert all(np.abs(w).sum() > 0 for w in weights.values())
    model.save(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()
    meta = json.loads((tmp_path / "model" / "narrative.json").read_text())
    assert meta["config"]["base"] == "tiny" and meta["schema_hash"] == SCHEMA.hash
    assert meta["max_grad_norm"] == 0.7 and "dp_seed" not in meta["config"]
    assert "noise_seed" not in meta  # a known seed would let anyone remove the noise
    loaded = NarrativeModel.load(tmp_path / "model", device="cpu")
    assert loaded.max_grad_norm == 0.7 and loaded.noise_seed is None
    loaded_weights = loaded.get_weights()
    assert set(loaded_weights) == set(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(loaded_weights[name], array)
    synthetic = records.drop(columns=["narrative"]).head(3)
    pd.testing.assert_frame_equal(model.sample(synthetic, seed=1), loaded.sample(synthetic, seed=1))


def test_config_errors_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown narrative config"):
        NarrativeModel(SCHEMA, config={"base": "tiny", "lora_rank": 4})
    with pytest.raises(InputError, match="unknown narrative sampling"):
        NarrativeModel(SCHEMA, config={"base": "tiny", "sampling": {"top_k": 5}})
    with pytest.raises(InputError, match="unknown base model"):
        NarrativeModel(SCHEMA, config={"base": "gpt-4"})
    with pytest.raises(InputError, match="config.json"):
        NarrativeModel(SCHEMA, config={"base": "local:/nonexistent/medgemma"})


def test_narratives_are_one_printable_line() -> None:
    """The tiny model samples arbitrary bytes: NUL or CR in a released CSV broke pandas' reader."""
    from common.text.generate import one_line

    assert one_line(" 45YOM\x00FELL\r\nDX\u200b HIP  FX\t") == "45YOM FELL DX HIP FX"
