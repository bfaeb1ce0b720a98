"""DP-SGD on the LoRA adapter (tiny Gemma 3): exact per-sample gradients, the DP step, empty
Poisson batches, and the text budget in the site's ledger across rounds and restarts."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from common.errors import BudgetExceededError, InputError
from common.privacy.budget import PrivacyBudget
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.privacy.signal import MAX_NOISE_PER_BATCH, noise_per_batch
from common.tabular.trainer import TrainSettings
from common.text.base_models import load_base_model
from common.text.lora import LoraSettings, add_lora, get_adapter_weights, trainable_adapter
from common.text.narrative_model import NarrativeModel
from common.text.serialize import RecordSerializer
from common.text.tokens import PAD, encode_pairs, target_nll
from common.text.trainer import LoraTrainer
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site

torch.set_num_threads(1)
SCHEMA = ed_trauma_schema(["A"])
DELTA = 1e-5
# 32 records and a few steps of batch 8: sigma/B ~ 0.2, far above the default refusal (0.01);
# these tests check the privacy plumbing, not learning, so they turn the check off.
CONFIG = {"base": "tiny", "fields": ["mechanism", "age", "sex"], "batch_size": 8,
          "max_target_tokens": 64, "max_noise_per_batch": None}
NOISE_SEED = 4  # the data holder's privacy setting, passed beside the config


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return simulate_site("community", 32, 5, "A")


def adapted_model(records: pd.DataFrame, n: int):
    """Tiny model with random B (so gradients see a non-trivial adapter) and n encoded rows."""
    base, tokenizer = load_base_model("tiny", schema=SCHEMA)
    model = add_lora(base, LoraSettings(target_modules=("q_proj", "v_proj", "down_proj")))
    with torch.no_grad():
        for p in trainable_adapter(model).values():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    serializer = RecordSerializer(SCHEMA, ["mechanism", "age"])
    rows = records.head(n).to_dict("records")
    pairs = encode_pairs(tokenizer, [serializer.prompt(r) for r in rows],
                         [r["narrative"] for r in rows], 40)
    return model, tokenizer, pairs


def per_example_gradients(model, pairs, pad_id) -> list[list[torch.Tensor]]:
    """Plain autograd on each example alone, without any padding."""
    out = []
    for row in pairs.tokens:
        kept = torch.as_tensor(row[row != PAD])[None]
        prompt_width = pairs.prompt_width - int((row[:pairs.prompt_width] == PAD).sum())
        nll, count = target_nll(model, kept, prompt_width, pad_id)
        out.append(list(torch.autograd.grad((nll / count).sum(),
                                            list(trainable_adapter(model).values()))))
    return out


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_hooks_per_sample_gradients_equal_per_example_autograd(records) -> None:
    model, tokenizer, pairs = adapted_model(records, 6)
    lengths = (pairs.tokens != PAD).sum(1)
    assert len(set(lengths.tolist())) > 1  # the batch needs padding on both sides
    reference = per_example_gradients(copy.deepcopy(model), pairs, tokenizer.pad_token_id)
    trainer = LoraTrainer(model, pairs, tokenizer.pad_token_id, TrainSettings(batch_size=6),
                          noise_multiplier=1.0, budget=PrivacyBudget(1e6, DELTA, "t"), device="cpu",
                          seed=0)
    nll, count = target_nll(trainer.model, torch.as_tensor(pairs.tokens), pairs.prompt_width,
                            tokenizer.pad_token_id)
    (nll / count).mean().backward()  # the trainer's loss: mean over the batch of per-example means
    for j, p in enumerate(trainable_adapter(model).values()):
        assert p.grad_sample.shape == (6, *p.shape)
        for i in range(6):
            torch.testing.assert_close(p.grad_sample[i], reference[i][j], rtol=1e-4, atol=1e-7)


def test_dp_step_clips_each_example_and_adds_calibrated_noise(records) -> None:
    n, sigma = 6, 0.8
    model, tokenizer, pairs = adapted_model(records, n)
    reference = per_example_gradients(copy.deepcopy(model), pairs, tokenizer.pad_token_id)
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in gs)) for gs in reference])
    clip = float(norms.median())
    trainer = LoraTrainer(model, pairs, tokenizer.pad_token_id,
                          TrainSettings(batch_size=n, lr=1e-3, max_grad_norm=clip),  # q = 1
                          noise_multiplier=sigma, budget=PrivacyBudget(1e6, DELTA, "t"),
                          device="cpu", seed=9)
    noise = torch.Generator().manual_seed(0)
    noise.set_state(trainer.noise_generator.get_state())
    captured = []
    params = list(trainable_adapter(model).values())
    trainer.optimizer.original_optimizer.register_step_pre_hook(
        lambda *_: captured.append([p.grad.clone() for p in params]))
    trainer.train_steps(1)
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    assert (factors < 1).any() and (factors == 1).any()
    for j, (got, p) in enumerate(zip(captured[0], params, strict=True)):
        clipped = sum(factors[i] * reference[i][j] for i in range(n))
        expected = (clipped + torch.normal(0, sigma * clip, size=p.shape, generator=noise)) / n
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_empty_poisson_batches_are_noise_only_steps(records) -> None:
    model, tokenizer, pairs = adapted_model(records, 20)
    trainer = LoraTrainer(model, pairs, tokenizer.pad_token_id, TrainSettings(batch_size=1),
                          noise_multiplier=1.0, budget=PrivacyBudget(1e6, DELTA, "t"), device="cpu",
                          seed=2)  # q = 1/20: about a third of the batches are empty
    before = get_adapter_weights(model)
    trainer.train_steps(12)
    assert trainer.steps_done == 12
    assert trainer.budget.accountant.history == [(1.0, 1 / 20, 12)]
    after = get_adapter_weights(model)
    assert set(after) == set(before) and len(before) > 0
    assert all(not np.allclose(before[name], after[name]) for name in before)


def test_text_budget_holds_across_rounds_and_restarts(records, tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    tabular = PrivacyBudget(3.0, DELTA, "tabular-vae", Ledger(path))
    tabular.charge(2.0, 0.1, 40, round=0)
    rounds, k, epsilon = 3, 3, 1.5

    whole = NarrativeModel(SCHEMA, epsilon=epsilon, delta=DELTA, config=CONFIG, device="cpu",
                           ledger=tmp_path / "whole.jsonl", noise_seed=NOISE_SEED)
    whole.plan(len(records), rounds * k)
    for r in range(rounds):
        whole.train_steps(records, k, round=r)

    site = NarrativeModel(SCHEMA, epsilon=epsilon, delta=DELTA, config=CONFIG, device="cpu",
                          ledger=path, noise_seed=NOISE_SEED)
    sigma = site.plan(len(records), rounds * k)
    assert sigma == whole.plan(len(records), rounds * k)
    site.train_steps(records, k, round=0)
    torch.save(site.state_dict(), tmp_path / "text.pt")
    del site  # the site process restarts

    restarted = NarrativeModel(SCHEMA, epsilon=epsilon, delta=DELTA, config=CONFIG, device="cpu",
                               ledger=path, noise_seed=NOISE_SEED)
    restarted.load_state_dict(torch.load(tmp_path / "text.pt", weights_only=True))
    spent = [restarted.train_steps(records, k, round=r) for r in range(1, rounds)]
    assert spent[0] < spent[1] <= epsilon and spent[1] > 0.99 * epsilon
    restarted_weights, whole_weights = restarted.get_weights(), whole.get_weights()
    assert set(restarted_weights) == set(whole_weights)
    for name, array in whole_weights.items():
        np.testing.assert_array_equal(restarted_weights[name], array)  # the restart changed nothing

    text_entries = Ledger(path).read("text-lora")
    assert [(e.round, e.steps) for e in text_entries] == [(0, k), (1, k), (2, k)]
    planned = NarrativeModel.planned_releases(CONFIG, epsilon, DELTA, len(records), rounds * k)
    assert planned == [(sigma, 1 / np.ceil(len(records) / CONFIG["batch_size"]), rounds * k)]
    assert {(e.noise_multiplier, e.sample_rate) for e in text_entries} == {planned[0][:2]}
    assert sum(e.steps for e in text_entries) == planned[0][2]  # the plan, split into rounds
    assert epsilon_from_ledger(text_entries, DELTA) == pytest.approx(spent[-1], rel=1e-9)
    assert Ledger(path).read("tabular-vae")[0].epsilon_after == tabular.spent()  # untouched

    with pytest.raises(BudgetExceededError, match="text-lora"):
        restarted.train_steps(records, 1, round=rounds)
    assert len(Ledger(path).read("text-lora")) == rounds

    lost = NarrativeModel(SCHEMA, epsilon=epsilon, delta=DELTA, config=CONFIG, device="cpu",
                          ledger=tmp_path / "empty.jsonl")
    lost.load_state_dict(torch.load(tmp_path / "text.pt", weights_only=True))
    with pytest.raises(InputError, match="ledger"):
        lost.train_steps(records, k, round=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"config": {**CONFIG, "dp_seed": 4}}, "unknown narrative config"),  # privacy: not config
    ({"config": {**CONFIG, "max_grad_norm": 1.0}}, "unknown narrative config"),
    ({"config": CONFIG, "max_grad_norm": -1.0}, "max_grad_norm"),
])
def test_privacy_settings_are_constructor_arguments_not_config(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        NarrativeModel(SCHEMA, device="cpu", **kwargs)


def test_clipping_bound_reaches_the_trainer_and_noise_seed_fixes_the_run(records) -> None:
    def trained(noise_seed: int | None, max_grad_norm: float = 1.0) -> NarrativeModel:
        model = NarrativeModel(SCHEMA, epsilon=2.0, config=CONFIG, device="cpu",
                               noise_seed=noise_seed, max_grad_norm=max_grad_norm)
        model.plan(len(records), 2)
        model.train_steps(records, 2)
        return model

    def same(a: NarrativeModel, b: NarrativeModel) -> bool:
        wa, wb = a.get_weights(), b.get_weights()
        return set(wa) == set(wb) and all(np.array_equal(wa[n], wb[n]) for n in wa)

    first = trained(NOISE_SEED, max_grad_norm=0.5)
    assert first.delta == 1e-5  # the public default, not derived from the 32 records
    assert first._trainer.settings.max_grad_norm == 0.5 and first.state_dict()["max_grad_norm"] == 0.5
    assert same(first, trained(NOISE_SEED, max_grad_norm=0.5))
    assert not same(first, trained(NOISE_SEED + 1, max_grad_norm=0.5))
    assert not same(trained(None), trained(None))  # OS entropy


# --- logical batches in physical batches; sigma/B ------------------------------------------
def embedding_batch_sizes(model) -> list[int]:
    """The rows of every forward pass, recorded at the input embedding."""
    sizes: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: sizes.append(len(args[0])))
    return sizes


@pytest.mark.parametrize("private", [True, False])
def test_physical_batches_give_the_one_batch_update(records, private) -> None:
    """One logical Poisson batch in physical batches of 3 makes the same (noisy) step as in one
    physical batch: same batch, same noise, one optimizer step."""
    model, tokenizer, pairs = adapted_model(records, 20)
    trained, sizes = {}, {}
    for physical in (None, 3):
        copy_ = copy.deepcopy(model)
        sizes[physical] = embedding_batch_sizes(copy_)
        dp = {"noise_multiplier": 0.7, "budget": PrivacyBudget(1e6, DELTA, "t")} if private else {}
        trainer = LoraTrainer(copy_, pairs, tokenizer.pad_token_id,
                              TrainSettings(batch_size=10, lr=1e-2, max_grad_norm=0.05),  # q = 1/2
                              device="cpu", seed=7, physical_batch_size=physical, **dp)
        trainer.train_steps(1)
        adam = trainer.optimizer.original_optimizer if private else trainer.optimizer
        assert {float(s["step"]) for s in adam.state.values()} == {1.0}  # one optimizer step
        if private:
            assert trainer.budget.accountant.history == [(0.7, 0.5, 1)]
        trained[physical] = get_adapter_weights(copy_)
    logical = sizes[None][0]
    assert len(sizes[None]) == 1 and logical > 6  # the seed draws a batch that needs splitting
    assert sum(sizes[3]) == logical and max(sizes[3]) <= 3 and len(sizes[3]) == -(-logical // 3)
    before = get_adapter_weights(model)
    for name, array in trained[None].items():
        assert not np.allclose(array, before[name])  # the step moved every B
        np.testing.assert_allclose(trained[3][name], array, rtol=1e-5, atol=1e-7)


def test_empty_logical_batches_stay_noise_only_steps_with_physical_batches(records) -> None:
    model, tokenizer, pairs = adapted_model(records, 20)
    sizes = embedding_batch_sizes(model)
    trainer = LoraTrainer(model, pairs, tokenizer.pad_token_id, TrainSettings(batch_size=2),
                          noise_multiplier=1.0, budget=PrivacyBudget(1e6, DELTA, "t"), device="cpu",
                          seed=3, physical_batch_size=1)  # q = 1/10: batches of 0, 1, 2, 3 rows
    generator = torch.Generator()
    generator.set_state(trainer.sample_generator.get_state())  # the batches the trainer will draw
    sampled = UniformWithReplacementSampler(num_samples=20, sample_rate=0.1, generator=generator)
    logical = [len(b) for b in sampled]  # one pass: 10 batches
    assert 0 in logical and max(logical) > 1
    before = get_adapter_weights(model)
    trainer.train_steps(10)
    assert trainer.steps_done == 10 and sizes == [1] * sum(logical)
    adam = trainer.optimizer.original_optimizer
    assert {float(s["step"]) for s in adam.state.values()} == {10.0}
    after = get_adapter_weights(model)
    assert all(not np.allclose(before[name], after[name]) for name in before)


def test_a_logical_batch_that_fails_half_way_leaves_no_clipped_sum(records, monkeypatch) -> None:
    model, tokenizer, pairs = adapted_model(records, 20)
    trainer = LoraTrainer(model, pairs, tokenizer.pad_token_id, TrainSettings(batch_size=20),
                          noise_multiplier=1.0, budget=PrivacyBudget(1e6, DELTA, "t"), device="cpu",
                          seed=0, physical_batch_size=4)  # q = 1: 5 physical batches
    backward, calls = trainer._backward, []

    def out_of_memory(chunk, size):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise torch.OutOfMemoryError("simulated")
        return backward(chunk, size)

    monkeypatch.setattr(trainer, "_backward", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.train_steps(1)
    assert calls == [4, 4, 4] and trainer.optimizer._step_skip_queue == []
    assert all(p.summed_grad is None and p.grad_sample is None for p in trainer.optimizer.params)


def test_a_plan_whose_noise_swamps_the_gradient_is_refused() -> None:
    strict = {**CONFIG, "max_noise_per_batch": MAX_NOISE_PER_BATCH}
    model = NarrativeModel(SCHEMA, epsilon=3.0, delta=DELTA, config=strict, device="cpu")
    assert model.config["max_noise_per_batch"] == 0.01 and model.noise_per_batch is None
    with pytest.raises(InputError, match=r"sigma/B = 0\.\d+ .*batch_size.*max_noise_per_batch"):
        model.plan(640, 4)  # the old quick profile: 4 steps of batch 8, sigma/B ~ 0.08
    assert model._plan is None and model.noise_per_batch is None  # nothing planned
    with pytest.raises(InputError, match="no privacy plan"):
        model.train_steps(pd.DataFrame(), 1)

    wide = NarrativeModel(SCHEMA, epsilon=3.0, delta=DELTA, device="cpu",
                          config={**strict, "batch_size": 1024})
    sigma = wide.plan(3200, 8)  # a site's notes in logical batches of 800: sigma/B ~ 0.002
    assert wide.noise_per_batch == pytest.approx(sigma / 800) and wide.noise_per_batch < 0.01
    assert noise_per_batch(sigma, 3200, 1024) == wide.noise_per_batch

    off = NarrativeModel(SCHEMA, epsilon=3.0, delta=DELTA, config=CONFIG, device="cpu")
    off.plan(640, 4)  # max_noise_per_batch None: the check is off
    assert off.noise_per_batch == pytest.approx(0.08, abs=0.005)
