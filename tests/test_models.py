"""The two tabular generators: Opacus-exact per-sample gradients, ghost-clipping DP steps, learning,
and the sampling contract. Tiny models and toy data with a known class dependency keep it fast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule, PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.tabular.base import Span, TabularModel
from common.tabular.ddpm import TabDDPM, beta_schedule
from common.tabular.nn_blocks import SpanLayout
from common.tabular.vae import TabularVAE

SPANS = [
    Span("age", "numeric", 0, 1),
    Span("age", "missing", 1, 2),
    Span("region", "categorical", 3, 3),
    Span("sex", "categorical", 6, 2),
    Span("sex", "missing", 8, 2),
    Span("gcs", "numeric", 10, 1),
]
DIM = 11
N_CLASSES = 3
DISCRETE = [s for s in SPANS if s.kind != "numeric"]
NUMERIC = [s for s in SPANS if s.kind == "numeric"]
TINY = {
    TabularVAE: {"latent_dim": 4, "hidden": (16,)},
    TabDDPM: {"timesteps": 10, "hidden": (16,), "dim_t": 8},
}
SMALL = {
    TabularVAE: {"latent_dim": 8, "hidden": (64, 64)},
    TabDDPM: {"timesteps": 50, "hidden": (64, 64), "dim_t": 32},
}
MODELS = [TabularVAE, TabDDPM]


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class y drives region (80% region == y), age (mean rises with y) and age missingness (y == 2);
    gcs follows age; sex is noise and missing 10% of the time. Missing values encode as zeros."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    age = (-0.5 + 0.5 * y + 0.15 * torch.randn(n, generator=g)).clamp(-1, 1)
    age_missing = torch.rand(n, generator=g) < 0.05 + 0.4 * (y == 2)
    region = torch.where(torch.rand(n, generator=g) < 0.8, y, torch.randint(0, 3, (n,), generator=g))
    sex = torch.randint(0, 2, (n,), generator=g)
    sex_missing = torch.rand(n, generator=g) < 0.1
    gcs = (0.8 * age + 0.1 * torch.randn(n, generator=g)).clamp(-1, 1)
    x = torch.cat(
        [
            (age * ~age_missing)[:, None],
            F.one_hot(age_missing.long(), 2),
            F.one_hot(region, 3),
            F.one_hot(sex, 2) * ~sex_missing[:, None],
            F.one_hot(sex_missing.long(), 2),
            gcs[:, None],
        ],
        dim=1,
    ).float()
    return x, y


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    if len(a) == 0 or len(b) == 0:
        return 2.0  # the widest possible gap on [-1, 1]
    q = torch.linspace(0.005, 0.995, 100)
    return (torch.quantile(a, q) - torch.quantile(b, q)).abs().mean().item()


def fidelity_gap(real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes of (mean total variation of each discrete span's conditional marginal +
    mean Wasserstein-1 of each numeric's conditional marginal over present values). 0 is perfect."""
    layout = SpanLayout(SPANS)
    gaps = []
    for c in range(N_CLASSES):
        r, f = real[y == c], fake[y == c]
        tv = [
            (r[:, s.start : s.stop].mean(0) - f[:, s.start : s.stop].mean(0)).abs().sum() / 2
            for s in DISCRETE
        ]
        pr, pf = layout.present(r).bool(), layout.present(f).bool()
        w1 = [wasserstein_1d(r[pr[:, s.start], s.start], f[pf[:, s.start], s.start]) for s in NUMERIC]
        gaps.append(float(sum(tv)) / len(tv) + sum(w1) / len(w1))
    return sum(gaps) / len(gaps)


def train(model: TabularModel, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> TabularModel:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=g)
        loss = model(x[idx], y[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


class PerSampleLoss(nn.Module):
    """The criterion ghost clipping needs: the model output already is the per-sample loss."""

    reduction = "mean"

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.reduction == "none" else loss.mean()


@pytest.fixture(scope="module")
def toy() -> dict[str, torch.Tensor]:
    x, y = toy_data(3000, seed=0)
    x_test, y_test = toy_data(1500, seed=1)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


@pytest.fixture(scope="module", params=MODELS, ids=lambda c: c.__name__)
def trained(request: pytest.FixtureRequest, toy: dict[str, torch.Tensor]) -> tuple[TabularModel, float]:
    """(trained model, fidelity gap of the same model before training)."""
    torch.manual_seed(0)
    model = request.param(SPANS, N_CLASSES, **SMALL[request.param])
    fake = model.sample(toy["y_test"], torch.Generator().manual_seed(0))
    before = fidelity_gap(toy["x_test"], fake, toy["y_test"])
    torch.manual_seed(0)
    return train(model, toy["x"], toy["y"], steps=400, lr=3e-3), before


@pytest.mark.parametrize("cls", MODELS)
def test_opacus_per_sample_gradients_are_exact(cls: type[TabularModel]) -> None:
    """Hooks-mode per-sample gradients and ghost-mode per-sample norms equal per-example autograd.

    Same seed for every pass, so each draws the same timesteps and noise; the per-example reference
    is the gradient of loss[i] alone, which also catches any mixing between samples."""
    torch.manual_seed(0)
    model = cls(SPANS, N_CLASSES, **TINY[cls])
    x, y = toy_data(8, seed=2)
    params = list(model.parameters())

    torch.manual_seed(1)
    loss = model(x, y)
    assert loss.shape == (8,)
    per_example = [torch.autograd.grad(loss[i], params, retain_graph=True) for i in range(len(x))]
    expected = [torch.stack(g) for g in zip(*per_example, strict=True)]

    hooks = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    torch.manual_seed(1)
    hooks(x, y).sum().backward()
    for p, want in zip(hooks.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad_sample, want, atol=1e-5, rtol=1e-4)

    ghost = GradSampleModuleFastGradientClipping(
        copy.deepcopy(model), loss_reduction="sum", max_grad_norm=1e6
    )
    torch.manual_seed(1)
    ghost(x, y).sum().backward()
    expected_norms = torch.cat([g.flatten(1) for g in expected], dim=1).norm(dim=1)
    torch.testing.assert_close(ghost.get_norm_sample(), expected_norms, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", MODELS)
def test_ghost_clipping_dp_steps_run(cls: type[TabularModel]) -> None:
    """The trainer's path: ghost clipping with hooks on the model itself (``wrap_model=False``);
    sampling between steps must neither fail nor leave activations behind for the next step."""
    torch.manual_seed(0)
    x, y = toy_data(256, seed=3)
    model = cls(SPANS, N_CLASSES, **TINY[cls])
    before = [p.detach().clone() for p in model.parameters()]
    _, opt, criterion, loader = PrivacyEngine().make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=PerSampleLoss(),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=64),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
        wrap_model=False,
    )
    for (xb, yb), _ in zip(loader, range(2), strict=False):
        loss = criterion(model(xb, yb))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        opt.zero_grad()
        assert model.sample(yb[:4], torch.Generator().manual_seed(0)).isfinite().all()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("cls", MODELS)
def test_forward_handles_an_empty_batch(cls: type[TabularModel]) -> None:
    """Poisson sampling can draw an empty batch."""
    model = cls(SPANS, N_CLASSES, **TINY[cls])
    assert model(torch.zeros(0, DIM), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_models_learn_the_toy_distribution(
    trained: tuple[TabularModel, float], toy: dict[str, torch.Tensor]
) -> None:
    model, before = trained
    fake = model.sample(toy["y_test"], torch.Generator().manual_seed(0))
    after = fidelity_gap(toy["x_test"], fake, toy["y_test"])
    assert after < 0.5 * before, (before, after)
    assert after < 0.15, (before, after)


def test_conditional_sampling_reproduces_the_class_dependency(trained: tuple[TabularModel, float]) -> None:
    model, _ = trained
    gen = torch.Generator().manual_seed(1)
    rows = {c: model.sample(torch.full((500,), c), gen) for c in range(N_CLASSES)}
    for c, x in rows.items():
        assert x[:, 3 + c].mean() > 0.65, (c, x[:, 3:6].mean(0))  # P(region = c | y = c), truly 0.87
        age_gcs = x[x[:, 1] == 1][:, [0, 10]]
        assert torch.corrcoef(age_gcs.T)[0, 1] > 0.3  # a pair trend within the class, truly 0.77
    present_age = [x[x[:, 1] == 1, 0].mean().item() for x in rows.values()]
    assert present_age[0] + 0.3 < present_age[1] < present_age[2] - 0.3, present_age  # truly -0.5, 0, 0.5
    assert rows[2][:, 2].mean() > rows[0][:, 2].mean() + 0.2  # age missing: truly 0.45 vs 0.05


@pytest.mark.parametrize("cls", MODELS)
def test_sample_contract(cls: type[TabularModel]) -> None:
    torch.manual_seed(0)
    model = cls(SPANS, N_CLASSES, **TINY[cls])
    y = torch.arange(200) % N_CLASSES
    x = model.sample(y, torch.Generator().manual_seed(7))
    assert x.shape == (200, DIM)
    assert x[:, [0, 10]].abs().max() <= 1.0
    for s in DISCRETE:
        block = x[:, s.start : s.stop]
        assert ((block == 0) | (block == 1)).all()
    for s in (SPANS[1], SPANS[2], SPANS[4]):  # indicators and non-nullable categories: one-hot
        assert (x[:, s.start : s.stop].sum(1) == 1).all()
    # Missing values encode as zeros in their value span, present categories as one-hot.
    assert (x[x[:, 2] == 1, 0] == 0).all()
    assert torch.equal(x[:, 6:8].sum(1), x[:, 8])
    assert 0 < x[:, 9].sum() < 200
    assert torch.equal(x, model.sample(y, torch.Generator().manual_seed(7)))
    assert not torch.equal(x, model.sample(y, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("kinds", [("numeric",), ("categorical", "missing")], ids=["numeric", "discrete"])
def test_layouts_with_one_kind_of_column(cls: type[TabularModel], kinds: tuple[str, ...]) -> None:
    spans = [s for s in SPANS if s.kind in kinds]
    model = cls(spans, N_CLASSES, **TINY[cls])
    x, y = toy_data(16, seed=4)
    assert model(x[:, : model.dim], y).isfinite().all()
    assert model.sample(y, torch.Generator().manual_seed(0)).shape == (16, model.dim)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_beta_schedules_end_in_noise(kind: str) -> None:
    abar = torch.cumprod(1 - beta_schedule(kind, 100), dim=0)
    assert (abar[1:] < abar[:-1]).all() and abar[0] > 0.99 and abar[-1] < 1e-3
