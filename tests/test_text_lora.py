"""FFA-LoRA on the tiny Gemma 3: only B travels, and FedAvg of B is exactly FedAvg of the updates."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from common.errors import InputError
from common.tabular.trainer import TrainSettings
from common.text.base_models import load_base_model
from common.text.lora import (
    LoraSettings,
    add_lora,
    get_adapter_weights,
    set_adapter_weights,
    trainable_adapter,
)
from common.text.serialize import RecordSerializer
from common.text.tokens import encode_pairs
from common.text.trainer import LoraTrainer
from server.aggregate import weighted_average
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site

torch.set_num_threads(1)
SCHEMA = ed_trauma_schema(["A"])
SETTINGS = LoraSettings(r=4, alpha=8.0, target_modules=("q_proj", "v_proj"), seed=11)


def site_model(settings: LoraSettings = SETTINGS):
    base, tokenizer = load_base_model("tiny", schema=SCHEMA)
    return add_lora(base, settings), tokenizer


def train_site(model, tokenizer, profile: str, seed: int, steps: int = 4) -> int:
    """A few plain Adam steps on one simulated hospital; returns its record count."""
    records = simulate_site(profile, 24, seed, "A")
    serializer = RecordSerializer(SCHEMA, ["mechanism", "body_region"])
    pairs = encode_pairs(tokenizer, [serializer.prompt(r) for r in records.to_dict("records")],
                         list(records.narrative), 48)
    LoraTrainer(model, pairs, tokenizer.pad_token_id, TrainSettings(batch_size=8, lr=5e-2),
                device="cpu", seed=seed).train_steps(steps)
    return len(records)


def lora_layers(model) -> dict:
    return {name: m for name, m in model.named_modules() if hasattr(m, "get_delta_weight")}


def test_only_b_travels_and_a_comes_from_the_shared_seed() -> None:
    (one, _), (two, _) = site_model(), site_model()
    travelling = list(trainable_adapter(one))
    assert travelling and all(".lora_B." in name for name in travelling)
    assert len(travelling) == 2 * 2  # q_proj and v_proj in each of 2 layers
    assert all(p.abs().sum() == 0 for p in trainable_adapter(one).values())  # B starts at zero
    sent = get_adapter_weights(one)  # what leaves the site: peft's names, without the adapter's
    assert sorted(sent) == sorted(name.replace(".default.", ".") for name in travelling)
    assert all(".lora_B." in name and ".default." not in name for name in sent)
    assert all(sent[name.replace(".default.", ".")].shape == tuple(p.shape)
               for name, p in trainable_adapter(one).items())
    a_one = {n: p for n, p in one.named_parameters() if ".lora_A." in n}
    a_two = dict(two.named_parameters())
    assert a_one and all(not p.requires_grad for p in a_one.values())
    for name, p in a_one.items():
        torch.testing.assert_close(p, a_two[name], rtol=0, atol=0)
    other_seed = add_lora(load_base_model("tiny", schema=SCHEMA)[0], LoraSettings(seed=12))
    assert not torch.equal(next(p for n, p in other_seed.named_parameters() if ".lora_A." in n),
                           next(iter(a_one.values())))


def test_fedavg_of_b_equals_the_average_of_the_sites_updates() -> None:
    sites = [site_model() for _ in range(3)]
    counts = [train_site(m, tok, profile, seed) for (m, tok), profile, seed
              in zip(sites, ["urban_trauma", "rural", "paediatric"], [1, 2, 3], strict=True)]
    updates = [get_adapter_weights(m) for m, _ in sites]
    assert all(set(u) == set(updates[0]) for u in updates)
    assert all(np.abs(u).sum() > 0 for u in updates[0].values())
    first = next(iter(updates[0]))
    assert not np.allclose(updates[0][first], updates[1][first])
    weights = [c * w for c, w in zip(counts, [1.0, 2.0, 3.0], strict=True)]  # unequal on purpose
    global_model, tokenizer = site_model()
    set_adapter_weights(global_model, weighted_average(updates, weights))
    share = np.asarray(weights) / sum(weights)
    for name, layer in lora_layers(global_model).items():
        expected = sum(s * lora_layers(m)[name].get_delta_weight("default")
                       for s, (m, _) in zip(share, sites, strict=True))
        torch.testing.assert_close(layer.get_delta_weight("default"), expected.float(),
                                   rtol=1e-5, atol=1e-7)
    # ... so the global adapter is the base model with the averaged update added to each weight
    base, _ = load_base_model("tiny", schema=SCHEMA)
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for name, module in merged.named_modules():
            key = f"base_model.model.{name}"
            if key in lora_layers(global_model):
                module.weight += sum(s * lora_layers(m)[key].get_delta_weight("default")
                                     for s, (m, _) in zip(share, sites, strict=True))
    ids = torch.as_tensor([tokenizer("45YOM FELL AT HOME, DX HIP FX").input_ids])
    global_model.eval()
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(global_model(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-4)


def test_plain_lora_sends_a_too_and_its_average_is_not_exact() -> None:
    plain = LoraSettings(r=4, alpha=8.0, ffa=False, seed=11)
    sites = [site_model(plain) for _ in range(2)]
    for (m, tok), seed in zip(sites, [1, 2], strict=True):
        train_site(m, tok, "community", seed, steps=6)
    names = list(trainable_adapter(sites[0][0]))
    assert {".lora_A." in n for n in names} == {True, False}
    global_model, _ = site_model(plain)
    set_adapter_weights(global_model, weighted_average([get_adapter_weights(m) for m, _ in sites],
                                                       [1.0, 1.0]))
    name, layer = next(iter(lora_layers(global_model).items()))
    mean_update = sum(lora_layers(m)[name].get_delta_weight("default") for m, _ in sites) / 2
    assert not torch.allclose(layer.get_delta_weight("default"), mean_update, atol=1e-6)


def test_set_weights_checks_names_and_shapes_and_round_trips() -> None:
    model, _ = site_model()
    weights = get_adapter_weights(model)
    assert len(weights) == 4
    with pytest.raises(ValueError, match="expected the adapter arrays"):
        set_adapter_weights(model, dict(list(weights.items())[:-1]))
    with pytest.raises(ValueError, match="expected the adapter arrays"):
        set_adapter_weights(model, {name.replace("lora_B", "lora_A"): w for name, w in weights.items()})
    with pytest.raises(ValueError, match="expected shape"):
        set_adapter_weights(model, {name: w.T for name, w in weights.items()})
    rng = np.random.default_rng(0)
    new = {name: rng.normal(size=w.shape).astype(w.dtype) for name, w in weights.items()}
    set_adapter_weights(model, new)
    got = get_adapter_weights(model)
    assert set(got) == set(new)
    for name, array in new.items():
        np.testing.assert_allclose(got[name], array, rtol=1e-6)


def test_conv1d_targets_are_refused() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))
    with pytest.raises(InputError, match="Conv1D"):
        add_lora(gpt2, LoraSettings(target_modules=("c_attn",)))
    with pytest.raises(InputError, match="no module"):
        add_lora(load_base_model("tiny", schema=SCHEMA)[0], LoraSettings(target_modules=("query_key_value",)))
