"""DP-SGD on the LoRA adapter: the tabular ``Trainer`` with Opacus' hooks mode and a text loss,
and logical batches of any size in physical batches that fit memory.

Everything privacy-relevant is inherited unchanged: Poisson batches of rate ``q`` iterated
directly (exactly k steps per call, empty batches become noise-only steps), the budget charged
for the k steps before any training, seeded or OS-entropy noise, and the resumable state. Two
things differ. Per-sample gradients come from Opacus' hooks (``grad_sample_mode="hooks"``), which
for adapter-sized parameters cost nothing over ghost clipping and stay exact for LoRA on
``nn.Linear``. The rows are token matrices (``common.text.tokens``), stored by the parent as
float32, exact for token ids below 2**24, and each example's loss is its mean negative
log-likelihood over its own target tokens.

Physical batches (``physical_batch_size``). DP-SGD only learns when the logical batch is large
(the averaged gradient carries noise of std sigma*C/B, ``common.privacy.signal``), and a logical
batch of hundreds of notes does not fit a 27B model's activations. Each logical Poisson batch is
therefore cut into physical batches of at most ``physical_batch_size`` rows with Opacus' own
protocol, the one its ``BatchMemoryManager`` runs: before every physical batch but the last,
``optimizer.signal_skip_step(do_skip=True)``; after each backward pass ``pre_step()`` clips that
batch's per-sample gradients and adds them to ``p.summed_grad``, then (skipped) returns False and
``zero_grad()`` drops the per-sample gradients but keeps the clipped sum; the last physical batch
(no skip signal) adds the noise once, divides by the expected batch size once and takes the one
optimizer step. The split is ``BatchSplittingSampler``'s (``np.array_split`` into
ceil(n/physical) near-equal parts). So the update is the one-physical-batch update up to float
summation order (tested), with the noise of one step, and nothing about sampling or accounting
changes: physical batches are invisible to privacy.

Why not ``BatchMemoryManager`` itself: it wraps a ``DataLoader`` and is iterated per *physical*
batch, the logical boundaries visible only inside the optimizer's skip queue. This trainer counts
*logical* steps (``train_steps(k)`` runs exactly k noisy steps, charged before training), draws
each logical batch from the Poisson sampler on demand (``_next_batch``), so the sampler's RNG
state saved between calls always sits at a logical boundary and a restart resumes the same
stream, and it also runs without DP (baselines), where there is no ``DPOptimizer`` to signal.
Splitting each drawn logical batch ourselves keeps all three; the skip/accumulate/step
mechanism is Opacus'. Without DP the physical batches are plain gradient accumulation of the
logical batch's mean loss.
"""

from __future__ import annotations

import math
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
    """Trains the trainable adapter parameters of ``model`` on ``pairs``; ``physical_batch_size``
    (None: no split) caps the rows of one forward/backward pass, not the logical batch."""

    def __init__(self, model: torch.nn.Module, pairs: TokenPairs, pad_id: int,
                 settings: TrainSettings, *, noise_multiplier: float | None = None,
                 budget: PrivacyBudget | None = None, device: str = "auto",
                 seed: int | None = None, physical_batch_size: int | None = None) -> None:
        if pairs.tokens.max(initial=0) >= _EXACT_FLOAT_IDS:
            raise ValueError("token ids of 2**24 and above do not survive the float32 row store")
        if physical_batch_size is not None and (isinstance(physical_batch_size, bool)
                                                or not isinstance(physical_batch_size, int)
                                                or physical_batch_size < 1):
            raise ValueError(f"physical_batch_size must be an int >= 1 or None, "
                             f"got {physical_batch_size!r}")
        self.prompt_width = pairs.prompt_width
        self.pad_id = pad_id
        self.physical_batch_size = physical_batch_size
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

    def physical_batches(self, index: list[int]) -> list[list[int]]:
        """The logical batch ``index`` cut as Opacus' ``BatchSplittingSampler`` cuts it."""
        if self.physical_batch_size is None or len(index) <= self.physical_batch_size:
            return [list(index)]
        parts = np.array_split(np.asarray(index, dtype=np.int64),
                               math.ceil(len(index) / self.physical_batch_size))
        return [p.tolist() for p in parts]

    def _step(self, proximal: Proximal | None) -> float | None:
        """One optimizer step on one logical batch, in physical batches; returns the logical
        batch's mean loss, None for an empty batch."""
        if proximal is not None:  # the parent anchors every parameter, frozen base ones included
            raise ValueError("FedProx is not supported for the LoRA adapter yet")
        index = self._next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        if len(index) == 0:
            self._empty_step()
            return None
        *accumulated, last = self.physical_batches(index)
        loss_sum = 0.0
        try:
            for chunk in accumulated:
                loss_sum += self._backward(chunk, len(index))
                if self.private:
                    self.optimizer.signal_skip_step(do_skip=True)
                    if self.optimizer.pre_step():  # clips and adds to p.summed_grad; no step
                        raise RuntimeError("Opacus stepped inside a logical batch")
                    self.optimizer.zero_grad(set_to_none=True)  # per-sample grads go, sum stays
            loss_sum += self._backward(last, len(index))
            if self.private and not self.optimizer.pre_step():  # noise, 1/B, then Adam: once
                raise RuntimeError("Opacus skipped the last physical batch of a logical batch")
        except BaseException:
            self._discard_partial_step()
            raise
        (self.optimizer.original_optimizer if self.private else self.optimizer).step()
        return loss_sum / len(index)

    def _discard_partial_step(self) -> None:
        """A logical batch that failed half-way (out of memory, say) leaves no clipped sum or
        skip signal behind: carried into the next step, its examples could count twice there
        (a sensitivity of 2C that the accounting does not cover)."""
        if self.private:
            self.optimizer._step_skip_queue.clear()  # Opacus keeps the signals here (1.6)
            for p in self.optimizer.params:
                p.summed_grad = None
        self.optimizer.zero_grad(set_to_none=True)

    def _backward(self, chunk: list[int], logical_size: int) -> float:
        """Forward and backward on one physical batch; returns its summed per-example loss.

        Under DP the loss is the physical batch's mean: Opacus' hooks rescale by the batch they
        see (``loss_reduction="mean"``), so the per-sample gradients are exact whatever the
        split. Without DP it is the physical batch's share of the logical mean, so the gradients
        the physical batches accumulate are the logical batch's."""
        rows = self.x[torch.as_tensor(chunk, dtype=torch.int64, device=self.device)].long()
        nll, count = target_nll(self.model, rows, self.prompt_width, self.pad_id)
        per_example = nll / count.clamp(min=1)
        loss = per_example.mean() if self.private else per_example.sum() / logical_size
        with warnings.catch_warnings():  # the token rows need no gradient; torch notes it every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        return float(per_example.detach().sum())

    def _empty_step(self) -> None:
        """No example drawn: zero gradients (and, under DP, zero per-sample gradients), so the
        step adds only noise, as DP-SGD prescribes."""
        for p in trainable_adapter(self.model).values():
            p.grad = torch.zeros_like(p)
            if self.private:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self._optimizer_step(None)
