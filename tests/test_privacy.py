"""Accounting, calibration, ledger, DP counts and the DP-SGD trainer (on a tiny model).

``TinyModel`` is shared with test_synthesizer.py.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import BudgetExceededError, InputError
from common.privacy.accountant import (
    DEFAULT_DELTA,
    DEFAULT_MAX_RECORDS,
    PrivacyAccountant,
    calibrate_noise,
    delta_for_bound,
)
from common.privacy.budget import PrivacyBudget, accountant_of
from common.privacy.counts import counts_release, label_distribution, release_label_counts
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.tabular.base import Span, TabularModel
from common.tabular.trainer import Proximal, Trainer, TrainSettings, sample_rate

DELTA = 1e-5


class TinyModel(TabularModel):
    """Deterministic conditional autoencoder-ish MLP: enough to exercise Opacus' ghost clipping
    (Linear and Embedding layers) and the facade's decode path."""

    def __init__(self, spans: list[Span], n_classes: int, hidden: int = 8) -> None:
        super().__init__(spans, n_classes)
        self.embed = nn.Embedding(n_classes, hidden)
        self.net = nn.Sequential(nn.Linear(self.dim + hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, self.dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.net(torch.cat([x, self.embed(y)], 1)) - x) ** 2).mean(1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(len(y), self.dim, generator=generator, device=y.device)
        return self.net(torch.cat([z, self.embed(y)], 1))


def tiny_data(n: int, seed: int = 0, dim: int = 6, classes: int = 3):
    rng = np.random.default_rng(seed)
    spans = [Span(f"c{i}", "numeric", i, 1) for i in range(dim)]
    return spans, rng.uniform(-1, 1, (n, dim)).astype(np.float32), rng.integers(0, classes, n)


def tiny_trainer(n=64, *, noise=1.0, epsilon=50.0, ledger=None, seed=7, batch_size=16, **kw):
    spans, x, y = tiny_data(n)
    torch.manual_seed(0)
    model = TinyModel(spans, 3)
    budget = None if noise is None else PrivacyBudget(epsilon, DELTA, "tiny", ledger)
    settings = TrainSettings(batch_size=batch_size, lr=kw.pop("lr", 1e-2), max_grad_norm=1.0)
    return Trainer(model, x, y, settings, noise_multiplier=noise, budget=budget, device="cpu",
                   seed=seed, **kw)


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- accountant and calibration --------------------------------------------------------------
def test_delta_for_bound() -> None:
    assert delta_for_bound(1_000) == 1e-5
    assert delta_for_bound(1_000_000) == pytest.approx(1e-7)
    assert DEFAULT_DELTA == delta_for_bound(DEFAULT_MAX_RECORDS) == 1e-5
    with pytest.raises(ValueError):
        delta_for_bound(0)


def test_calibrated_noise_is_the_smallest_that_fits() -> None:
    counts = counts_release(0.3, DELTA)
    q, steps = sample_rate(5_000, 128), 400
    sigma = calibrate_noise(3.0, DELTA, q, steps, prior=[counts])
    acc = PrivacyAccountant([counts])
    assert acc.epsilon_after(sigma, q, steps, DELTA) <= 3.0
    assert acc.epsilon_after(sigma * 0.999, q, steps, DELTA) > 3.0
    assert acc.epsilon_after(sigma, q, steps, DELTA) > 2.99
    assert calibrate_noise(3.0, DELTA, q, steps) < sigma  # the prior costs noise


def test_calibration_refuses_a_spent_budget() -> None:
    with pytest.raises(BudgetExceededError, match="already spent"):
        calibrate_noise(0.5, DELTA, 0.1, 10, prior=[(0.5, 1.0, 1)])


def test_accountant_merges_and_round_trips() -> None:
    acc = PrivacyAccountant()
    acc.record(1.0, 0.01, 100)
    acc.record(1.0, 0.01, 50)
    acc.record(2.0, 1.0, 1)
    assert acc.history == [(1.0, 0.01, 150), (2.0, 1.0, 1)]
    again = PrivacyAccountant.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert again.history == acc.history and again.epsilon(DELTA) == acc.epsilon(DELTA)
    single = PrivacyAccountant([(1.0, 0.01, 150)])
    assert 0 < single.epsilon(DELTA) < acc.epsilon(DELTA)


# --- budget and ledger ------------------------------------------------------------------------
def test_full_planned_run_stays_within_budget_then_refuses(tmp_path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    budget = PrivacyBudget(2.0, DELTA, "m", ledger)
    counts = counts_release(0.2, DELTA)
    q, rounds, k = 0.02, 5, 40
    sigma = budget.calibrate(q, rounds * k, reserved=[counts])
    budget.charge(*counts, note="label counts")
    spent = [budget.charge(sigma, q, k, round=r) for r in range(rounds)]
    assert (np.diff(spent) > 0).all() and spent[-1] <= 2.0
    assert spent[-1] > 1.99
    before = (budget.accountant.history, ledger.path.read_bytes())
    with pytest.raises(BudgetExceededError, match="Nothing was spent"):
        budget.charge(sigma, q, 1, round=rounds)
    assert (budget.accountant.history, ledger.path.read_bytes()) == before


def test_ledger_epsilon_matches_accountant_and_survives_restart(tmp_path) -> None:
    path = tmp_path / "site" / "ledger.jsonl"
    budget = PrivacyBudget(10.0, DELTA, "vae", Ledger(path))
    other = PrivacyBudget(10.0, DELTA, "text", Ledger(path))
    budget.charge(*counts_release(1.0, DELTA))
    for r, (sigma, steps) in enumerate([(1.1, 30), (1.1, 20), (0.9, 25)]):
        budget.charge(sigma, 0.05, steps, round=r)
        other.charge(2.0, 0.1, 5, round=r)
    entries = Ledger(path).read("vae")
    assert [e.steps for e in entries] == [1, 30, 20, 25]
    assert [e.round for e in entries] == [None, 0, 1, 2]
    assert entries[-1].epsilon_after == pytest.approx(budget.spent(), rel=1e-12)
    assert epsilon_from_ledger(entries, DELTA) == pytest.approx(budget.spent(), rel=1e-9)
    restarted = PrivacyBudget(10.0, DELTA, "vae", Ledger(path))
    assert restarted.accountant.history == budget.accountant.history
    for line in path.read_text().splitlines():
        assert set(json.loads(line)) >= {"time", "model", "steps", "sample_rate",
                                         "noise_multiplier", "epsilon_after", "delta", "round"}


def test_ledger_entries_are_stamped_with_their_run_and_read_per_run(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    first = PrivacyBudget(10.0, DELTA, "vae", Ledger(path, run="run-1"))
    first.charge(1.0, 0.1, 10)
    second = PrivacyBudget(10.0, DELTA, "vae", Ledger(path, run="run-2"))
    assert second.accountant.history == []  # a model's budget is per run
    second.charge(1.5, 0.1, 5)
    assert [e.run for e in Ledger(path).read()] == ["run-1", "run-2"]
    assert [e.steps for e in Ledger(path).read("vae", run="run-2")] == [5]
    assert PrivacyBudget(10.0, DELTA, "vae", Ledger(path, run="run-1")).accountant.history == [
        (1.0, 0.1, 10)]
    both = accountant_of(Ledger(path).read())
    assert both.history == [(1.0, 0.1, 10), (1.5, 0.1, 5)]
    assert second.lifetime_after() == pytest.approx(both.epsilon(DELTA), rel=1e-12)
    assert second.lifetime_after() > max(first.spent(), second.spent())


def test_lifetime_cap_refuses_a_later_model_or_run_and_writes_nothing(tmp_path) -> None:
    """The cap bounds every release ever made from the data file, all runs and models composed:
    a second model (or run) whose own budget has room is refused at calibrate() and at charge()
    once the composition would pass the cap, and the ledger is left as it was."""
    path = tmp_path / "ledger.jsonl"
    cap = 2.5  # two runs at epsilon 2 compose to about 2.76 under RDP
    q, steps = 0.05, 100
    first = PrivacyBudget(2.0, DELTA, "tabular-vae", Ledger(path, run="run-1", epsilon_cap=cap))
    sigma = first.calibrate(q, steps)
    first.charge(sigma, q, steps)
    assert first.spent() <= cap
    before = path.read_bytes()

    # another model of another run, within its own budget of 2.0 but not within the cap
    ledger = Ledger(path, run="run-2", epsilon_cap=cap)
    second = PrivacyBudget(2.0, DELTA, "text-lora", ledger)
    assert not second.would_exceed(sigma, q, steps)  # its own budget would allow it
    assert second.lifetime_after([(sigma, q, steps)]) > cap
    with pytest.raises(BudgetExceededError, match="lifetime spend.*cap"):
        second.calibrate(q, steps)
    with pytest.raises(BudgetExceededError, match="lifetime spend.*cap.*Nothing was spent"):
        second.charge(sigma, q, steps)
    assert path.read_bytes() == before
    assert second.accountant.history == [] and second.spent() == 0.0

    # a release small enough to keep the composition within the cap still goes through
    small = (50.0, q, 1)
    assert second.lifetime_after([small]) <= cap
    second.charge(*small)
    assert len(Ledger(path).read()) == 2 and Ledger(path).read()[-1].run == "run-2"
    assert second.lifetime_after() <= cap

    # without a cap the same ledger file lets the second model spend its own budget
    uncapped = PrivacyBudget(2.0, DELTA, "text-lora", Ledger(path, run="run-3"))
    uncapped.charge(sigma, q, steps)
    assert uncapped.lifetime_after() > cap


def test_corrupt_ledger_and_lost_ledger_are_refused(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    budget = PrivacyBudget(10.0, DELTA, "vae", Ledger(path))
    budget.charge(1.0, 0.1, 10)
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(InputError, match="line 2"):
        Ledger(path).read()
    fresh = PrivacyBudget(10.0, DELTA, "vae", Ledger(tmp_path / "empty.jsonl"))
    with pytest.raises(InputError, match="ledger"):
        fresh.check_restored(budget.accountant.history)


def test_noisy_counts_are_charged_and_noisy() -> None:
    budget = PrivacyBudget(1e4, DELTA, "m")
    sigma = 5.0
    y = np.repeat(np.arange(4), [400, 200, 3, 0])
    rng = np.random.default_rng(0)
    draws = np.array([release_label_counts(y, 4, budget, sigma, rng) for _ in range(200)])
    assert budget.accountant.history == [(sigma, 1.0, 200)]
    assert [e.note for e in budget.ledger.read()] == ["label counts"] * 200
    assert (draws >= 0).all()
    assert draws[:, 0].mean() == pytest.approx(400, abs=1.5)
    assert draws[:, 0].std() == pytest.approx(sigma, rel=0.2)
    assert (draws[:, 3] == 0).mean() > 0.3  # clipped at 0
    dist = label_distribution(draws[0])
    assert dist.sum() == pytest.approx(1.0) and (dist >= 0).all()
    assert label_distribution(np.zeros(4)).tolist() == [0.25] * 4


# --- trainer ----------------------------------------------------------------------------------
def test_ghost_clipped_step_equals_manual_reference() -> None:
    n, sigma = 12, 0.7
    spans, x, y = tiny_data(n, seed=3)
    torch.manual_seed(1)
    model = TinyModel(spans, 3)
    reference = copy.deepcopy(model)
    per_sample = []
    for i in range(n):  # per-sample gradients by plain autograd
        reference.zero_grad()
        reference(torch.tensor(x[i:i + 1]), torch.tensor(y[i:i + 1])).sum().backward()
        per_sample.append([p.grad.clone() for p in reference.parameters()])
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in gs)) for gs in per_sample])
    clip = float(norms.median())  # half the samples get clipped
    settings = TrainSettings(batch_size=n, lr=1e-3, max_grad_norm=clip)  # q = 1: whole batch
    trainer = Trainer(model, x, y, settings, noise_multiplier=sigma,
                      budget=PrivacyBudget(1e6, DELTA, "tiny"), device="cpu", seed=11)
    noise_gen = torch.Generator().manual_seed(0)
    noise_gen.set_state(trainer.noise_generator.get_state())
    captured = []
    inner = trainer.optimizer.original_optimizer
    inner.register_step_pre_hook(lambda *_: captured.append([p.grad.clone() for p in model.parameters()]))
    trainer.train_steps(1)
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    assert (factors < 1).any() and (factors == 1).any()
    for j, (got, p) in enumerate(zip(captured[0], reference.parameters(), strict=True)):
        clipped_sum = sum(factors[i] * per_sample[i][j] for i in range(n))
        noise = torch.normal(0, sigma * clip, size=p.shape, generator=noise_gen)
        torch.testing.assert_close(got, (clipped_sum + noise) / n, rtol=1e-4, atol=1e-6)


def test_train_steps_runs_exactly_k_steps_and_charges_them() -> None:
    trainer = tiny_trainer(n=40, batch_size=1)  # q = 1/40: many empty Poisson batches
    trainer.train_steps(30, round=0)
    trainer.train_steps(5, round=1)
    steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {35} and trainer.steps_done == 35
    assert trainer.budget.accountant.history == [(1.0, 1 / 40, 35)]
    assert [e.steps for e in trainer.budget.ledger.read()] == [30, 5]


def test_over_budget_steps_change_nothing() -> None:
    trainer = tiny_trainer(noise=2.0, epsilon=2.0)
    sigma, q = trainer.noise_multiplier, trainer.sample_rate
    allowed = 1
    while not trainer.budget.would_exceed(sigma, q, allowed + 1):
        allowed += 1
    assert allowed > 1
    trainer.train_steps(allowed)
    before = params(trainer.model), trainer.optimizer.state_dict(), trainer.budget.spent()
    with pytest.raises(BudgetExceededError):
        trainer.train_steps(1)
    after = params(trainer.model), trainer.optimizer.state_dict(), trainer.budget.spent()
    for a, b in zip(before[0], after[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert before[2] == after[2] and trainer.steps_done == allowed
    assert len(trainer.budget.ledger.read()) == 1


def test_resume_continues_identically(tmp_path) -> None:
    whole = tiny_trainer(ledger=Ledger(tmp_path / "a.jsonl"))
    for r in range(3):
        whole.train_steps(10, round=r)
    first = tiny_trainer(ledger=Ledger(tmp_path / "b.jsonl"))
    first.train_steps(10, round=0)
    torch.save({"model": first.model.state_dict(), "trainer": first.state_dict()},
               tmp_path / "ckpt.pt")
    resumed = tiny_trainer(ledger=Ledger(tmp_path / "b.jsonl"))
    checkpoint = torch.load(tmp_path / "ckpt.pt")
    resumed.model.load_state_dict(checkpoint["model"])
    resumed.load_state_dict(checkpoint["trainer"])
    for r in (1, 2):
        resumed.train_steps(10, round=r)
    for a, b in zip(params(whole.model), params(resumed.model), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.budget.spent() == whole.budget.spent()
    strip = lambda ledger: [{**vars(e), "time": 0} for e in ledger.read()]  # noqa: E731
    assert strip(resumed.budget.ledger) == strip(whole.budget.ledger)


def test_non_private_mode_trains_with_plain_adam() -> None:
    trainer = tiny_trainer(n=256, noise=None, batch_size=64, lr=3e-2)
    assert type(trainer.optimizer) is torch.optim.Adam
    first = trainer.train_steps(5)
    last = trainer.train_steps(100)
    assert last < 0.5 * first


@pytest.mark.parametrize("noise", [1.0, None], ids=["dp", "no-dp"])
def test_proximal_gradient_is_added_after_clipping_and_noise_and_costs_nothing(noise) -> None:
    """FedProx: every step, the gradient Adam receives is the one of the same seeds without the
    term (clipped and noised) plus exactly mu·(w - anchor). Had the term gone into the loss, ghost
    clipping would have scaled it with the records' gradients and the difference would not be
    exact. lr 0 keeps the weights put, so all steps compare, not only the first."""
    mu = 0.3

    def gradients(proximal: bool) -> tuple[list[list[torch.Tensor]], Trainer, list[torch.Tensor]]:
        trainer = tiny_trainer(noise=noise, lr=0.0)
        anchor = [p.detach() + 0.5 for p in trainer.model.parameters()]
        base = trainer.optimizer.original_optimizer if noise else trainer.optimizer
        seen: list[list[torch.Tensor]] = []
        base.register_step_pre_hook(
            lambda *_: seen.append([p.grad.clone() for p in trainer.model.parameters()]))
        trainer.train_steps(5, round=1, proximal=Proximal(mu, anchor) if proximal else None)
        return seen, trainer, anchor

    plain, plain_trainer, _ = gradients(False)
    pulled, pulled_trainer, anchor = gradients(True)
    assert len(plain) == len(pulled) == 5
    for step_plain, step_pulled in zip(plain, pulled, strict=True):
        for g, g_prox, w, a in zip(step_plain, step_pulled, params(pulled_trainer.model), anchor,
                                   strict=True):
            torch.testing.assert_close(g_prox, g + mu * (w - a), rtol=1e-5, atol=1e-7)
    if noise is not None:
        assert pulled_trainer.budget.spent() == plain_trainer.budget.spent()
        strip = lambda t: [{**vars(e), "time": 0} for e in t.budget.ledger.read()]  # noqa: E731
        assert strip(pulled_trainer) == strip(plain_trainer)
