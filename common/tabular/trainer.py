"""DP-SGD for the tabular generators: Opacus ghost clipping, Poisson sampling, exact step counts.

The model's forward already returns the per-sample loss, so the criterion handed to Opacus only
reduces that vector; Opacus' ghost-clipping wrapper calls it with ``reduction="none"``, computes
per-sample gradient norms without materialising per-sample gradients, and clips in a second
backward pass. ``wrap_model=False`` keeps the model itself (no ``_module.`` prefix in its state).

Batches are drawn by Opacus' Poisson sampler (each row independently with probability ``q``)
iterated directly, so ``train_steps(k)`` runs exactly k steps whatever the epoch boundaries, and a
restored sampler state continues the same stream. An empty Poisson batch is a legitimate draw: it
becomes a noise-only step, as in DP-SGD.

The optimizer is Adam applied to the clipped, noised gradient: post-processing, so the guarantee is
DP-SGD's. FedProx's proximal term mu/2·||w - anchor||² enters the same way, as the gradient
mu·(w - anchor) added after clipping and noise: it reads no record (the anchor is the DP global
model), so it costs no privacy. As a loss term it would be wrong: ghost clipping bounds per-sample
norms computed from layer activations, and a gradient straight from the parameters would escape
it. Privacy: each call charges the budget for its k steps *before* training (check, ledger,
accountant), so no update can exist that the ledger does not already account for.
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.privacy.budget import PrivacyBudget
from common.tabular.base import TabularModel


@dataclass(frozen=True)
class TrainSettings:
    """Fixed in configuration, never tuned on private data."""

    batch_size: int = 256
    lr: float = 1e-3
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class Proximal:
    """FedProx's pull of the local weights toward ``anchor`` (the global model) with strength ``mu``."""

    mu: float
    anchor: list[torch.Tensor]


def sample_rate(n_records: int, batch_size: int) -> float:
    """The Poisson rate Opacus derives from a loader of ``batch_size``: 1/len(loader), i.e.
    1/ceil(n/B); equal to B/n when B divides n."""
    return 1.0 / math.ceil(n_records / batch_size)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class PerSampleLoss(nn.Module):
    """Criterion over a loss vector the model already computed; Opacus sets ``reduction``."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.reduction == "none" else getattr(loss, self.reduction)()


class Trainer:
    """Trains ``model`` on encoded rows ``(x, y)``: DP-SGD when ``noise_multiplier`` is given, else
    plain Adam on the same Poisson batches (baselines, benchmarks).

    ``seed`` seeds batch sampling, DP noise and the model's own randomness (VAE reparameterisation,
    diffusion timesteps). With ``seed=None`` they come from OS entropy and are
    never saved: a known seed would let anyone who sees an update recompute and remove its noise.
    """

    def __init__(self, model: TabularModel, x: np.ndarray, y: np.ndarray, settings: TrainSettings,
                 *, noise_multiplier: float | None = None, budget: PrivacyBudget | None = None,
                 device: str = "auto", seed: int | None = None) -> None:
        if (noise_multiplier is None) != (budget is None):
            raise ValueError("DP training needs both a noise multiplier and a budget")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.settings = settings
        self.noise_multiplier = noise_multiplier
        self.budget = budget
        self.seed = seed
        self.x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        self.y = torch.as_tensor(y, dtype=torch.int64, device=self.device)
        self.sample_rate = sample_rate(len(self.x), settings.batch_size)
        self.steps_done = 0
        base_seed = secrets.randbits(63) if seed is None else seed
        self.sample_generator = torch.Generator().manual_seed(base_seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(base_seed + 1)
        self.model_generator = torch.Generator().manual_seed(base_seed + 2)  # VAE/DDPM noise
        self._sampler = UniformWithReplacementSampler(num_samples=len(self.x),
                                                      sample_rate=self.sample_rate,
                                                      generator=self.sample_generator)
        self._batches = iter(self._sampler)
        self.model.train()  # Opacus attaches its hooks in training mode (sample() leaves eval)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        if noise_multiplier is None:
            self.optimizer, self.criterion = optimizer, PerSampleLoss()
        else:
            self.optimizer, self.criterion = self._make_private(optimizer, noise_multiplier)

    @property
    def private(self) -> bool:
        return self.noise_multiplier is not None

    def _make_private(self, optimizer: torch.optim.Optimizer, noise_multiplier: float):
        loader = DataLoader(TensorDataset(self.x, self.y), batch_size=self.settings.batch_size)
        with warnings.catch_warnings():  # "secure RNG off": torchcsprng is not available here
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        _, dp_optimizer, criterion, dp_loader = engine.make_private(
            module=self.model, optimizer=optimizer, criterion=PerSampleLoss(), data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=self.settings.max_grad_norm,
            poisson_sampling=True, grad_sample_mode="ghost", wrap_model=False,
            noise_generator=self.noise_generator)
        if dp_loader.sample_rate != self.sample_rate:
            raise RuntimeError(f"Opacus samples at {dp_loader.sample_rate}, accounting assumes "
                               f"{self.sample_rate}: the privacy accounting would be wrong")
        return dp_optimizer, criterion

    def train_steps(self, k: int, round: int | None = None, proximal: Proximal | None = None) -> float:
        """Run exactly ``k`` optimizer steps (charging the budget first in DP mode), with FedProx's
        proximal gradient when ``proximal`` is given.

        Returns the mean training loss: for local logs only, it is not differentially private.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.private:
            self.budget.charge(self.noise_multiplier, self.sample_rate, k, round=round)
        self.model.train()
        losses = [loss for loss in (self._step(proximal) for _ in range(k)) if loss is not None]
        self.steps_done += k
        return float(np.mean(losses)) if losses else float("nan")

    def _step(self, proximal: Proximal | None) -> float | None:
        """One optimizer step; returns the batch's mean loss, None for an empty batch."""
        index = torch.as_tensor(self._next_batch(), dtype=torch.int64, device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if len(index) == 0:
            for p in self.model.parameters():
                p.grad = torch.zeros_like(p)
            self._optimizer_step(proximal)
            return None
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.model_generator)))
            loss = self.criterion(self.model(self.x[index], self.y[index]))
        with warnings.catch_warnings():  # the rows need no gradient; torch notes it every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        self._optimizer_step(proximal)
        return loss.item()

    def _optimizer_step(self, proximal: Proximal | None) -> None:
        """What ``DPOptimizer.step`` does, with the proximal gradient added in between: ghost
        clipping clipped in ``backward``, ``pre_step`` adds the noise and averages, then Adam."""
        if self.private and not self.optimizer.pre_step():
            return  # Opacus skips a step only while accumulating virtual batches: never here
        if proximal is not None:
            with torch.no_grad():
                for p, anchor in zip(self.model.parameters(), proximal.anchor, strict=True):
                    p.grad.add_(p - anchor, alpha=proximal.mu)
        (self.optimizer.original_optimizer if self.private else self.optimizer).step()

    def _next_batch(self) -> list[int]:
        try:
            return next(self._batches)
        except StopIteration:  # the sampler yields 1/q batches per pass; passes are independent
            self._batches = iter(self._sampler)
            return next(self._batches)

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimizer, step count and (seeded runs only) RNG state; the model is the caller's."""
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict(),
                                 "steps_done": self.steps_done}
        if self.seed is not None:
            state["rng"] = {"sample": self.sample_generator.get_state(),
                            "noise": self.noise_generator.get_state(),
                            "model": self.model_generator.get_state()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_done = int(state["steps_done"])
        if self.seed is not None and "rng" in state:
            self.sample_generator.set_state(state["rng"]["sample"])
            self.noise_generator.set_state(state["rng"]["noise"])
            self.model_generator.set_state(state["rng"]["model"])
            self._batches = iter(self._sampler)
