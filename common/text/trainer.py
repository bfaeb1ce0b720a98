"""DP-SGD on the LoRA adapter: the tabular ``Trainer`` with Opacus' hooks mode and a text loss.

Everything privacy-relevant is inherited unchanged: Poisson batches of rate ``q`` iterated
directly (exactly k steps per call, empty batches become noise-only steps), the budget charged
for the k steps before any training, seeded or OS-entropy noise, and the resumable state. Two
things differ. Per-sample gradients come from Opacus' hooks (``grad_sample_mode="hooks"``), which
for adapter-sized parameters cost nothing over ghost clipping and stay exact for LoRA on
``nn.Linear``. The rows are token matrices (``common.text.tokens``), stored by the parent as
float32, exact for token ids below 2**24, and each example's loss is its mean negative
log-likelihood over its own target tokens.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from common.privacy.budget import PrivacyBudget
from common.tabular.trainer import Proximal, Trainer, TrainSettings
from common.text.lora import trainable_adapter
from common.text.tokens import TokenPairs, target_nll

_EXACT_FLOAT_IDS = 2 ** 24


class LoraTrainer(Trainer):
    """Trains the trainable adapter parameters of ``model`` on ``pairs``."""

    def __init__(self, model: torch.nn.Module, pairs: TokenPairs, pad_id: int,
                 settings: TrainSettings, *, noise_multiplier: float | None = None,
                 budget: PrivacyBudget | None = None, device: str = "auto",
                 seed: int | None = None) -> None:
        if pairs.tokens.max(initial=0) >= _EXACT_FLOAT_IDS:
            raise ValueError("token ids of 2**24 and above do not survive the float32 row store")
        self.prompt_width = pairs.prompt_width
        self.pad_id = pad_id
        super().__init__(model, pairs.tokens, np.zeros(len(pairs), dtype=np.int64), settings,
                         noise_multiplier=noise_multiplier, budget=budget, device=device, seed=seed)

    def _make_private(self, optimizer: torch.optim.Optimizer, noise_multiplier: float):
        loader = DataLoader(TensorDataset(self.x, self.y), batch_size=self.settings.batch_size)
        with warnings.catch_warnings():  # "secure RNG off": torchcsprng is not available here
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        _, dp_optimizer, dp_loader = engine.make_private(
            module=self.model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=self.settings.max_grad_norm,
            poisson_sampling=True, grad_sample_mode="hooks", wrap_model=False,
            noise_generator=self.noise_generator)
        if dp_loader.sample_rate != self.sample_rate:
            raise RuntimeError(f"Opacus samples at {dp_loader.sample_rate}, accounting assumes "
                               f"{self.sample_rate}: the privacy accounting would be wrong")
        return dp_optimizer, None

    def _step(self, proximal: Proximal | None) -> float | None:
        """One optimizer step; returns the batch's mean loss, None for an empty batch."""
        if proximal is not None:  # the parent anchors every parameter, frozen base ones included
            raise ValueError("FedProx is not supported for the LoRA adapter yet")
        index = torch.as_tensor(self._next_batch(), dtype=torch.int64, device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if len(index) == 0:
            self._empty_step()
            return None
        nll, count = target_nll(self.model, self.x[index].long(), self.prompt_width, self.pad_id)
        loss = (nll / count.clamp(min=1)).mean()
        with warnings.catch_warnings():  # the token rows need no gradient; torch notes it every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        self._optimizer_step(None)
        return loss.item()

    def _empty_step(self) -> None:
        """No example drawn: zero gradients (and, under DP, zero per-sample gradients), so the
        step adds only noise, as DP-SGD prescribes."""
        for p in trainable_adapter(self.model).values():
            p.grad = torch.zeros_like(p)
            if self.private:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self._optimizer_step(None)
