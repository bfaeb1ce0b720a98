"""TabDDPM-style diffusion over encoded rows (Kotelnikov et al., 2023).

Numeric columns follow Gaussian diffusion (epsilon prediction); each categorical or missing-indicator
span follows multinomial diffusion (Hoogeboom et al., 2021), q(x_t | x_0) = Cat(abar_t x_0 +
(1 - abar_t) / K), computed in log space. One MLP denoiser sees the noisy row, a sinusoidal timestep
embedding and a label embedding, and predicts the numeric noise and the x_0 logits of every span.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import Span, TabularModel
from .nn_blocks import MLP, SpanLayout


def beta_schedule(kind: Literal["cosine", "linear"], timesteps: int) -> torch.Tensor:
    """float64 betas. Cosine (Nichol & Dhariwal) is TabDDPM's default; linear is rescaled from the
    classic 1,000-step range so that short chains still end near pure noise."""
    if kind == "cosine":
        s = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
        abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    if kind == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {kind!r}: use 'cosine' or 'linear'")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, [B] -> [B, dim] (dim even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Denoiser(nn.Module):
    """TabDDPM's MLPDiffusion: proj(x_t) + time_mlp(sinusoid(t)) + silu(label_embedding(y)) -> MLP."""

    def __init__(self, d_in: int, d_out: int, n_classes: int, dim_t: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.dim_t = dim_t
        self.proj = nn.Linear(d_in, dim_t)
        self.time_mlp = nn.Sequential(nn.Linear(dim_t, dim_t), nn.SiLU(), nn.Linear(dim_t, dim_t))
        self.label_embedding = nn.Embedding(n_classes, dim_t)
        self.mlp = MLP(dim_t, hidden, d_out)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.dim_t)) + F.silu(self.label_embedding(y))
        return self.mlp(self.proj(x_t) + emb)


class TabDDPM(TabularModel):
    """Mixed Gaussian + multinomial diffusion; ``forward`` is the per-sample loss at one random t.

    Loss = masked epsilon MSE averaged over numeric columns + multinomial KL averaged over discrete
    spans. As in TabDDPM, the KL of the sampled step is multiplied by T (divided by p(t) = 1/T), an
    unbiased estimate of the categorical variational bound, which keeps it on the scale of the MSE.
    """

    def __init__(
        self,
        spans: list[Span],
        n_classes: int,
        *,
        timesteps: int = 100,
        schedule: Literal["cosine", "linear"] = "cosine",
        hidden: Sequence[int] = (256, 256),
        dim_t: int = 128,
    ) -> None:
        super().__init__(spans, n_classes)
        self.layout = SpanLayout(spans)
        self.timesteps = timesteps
        n_num, n_disc = self.layout.n_numeric, self.layout.n_discrete_cols
        self.denoiser = Denoiser(n_num + n_disc, n_num + n_disc, n_classes, dim_t, hidden)

        betas = beta_schedule(schedule, timesteps)
        log_alpha = torch.log1p(-betas)
        log_abar = torch.cumsum(log_alpha, dim=0)
        abar = log_abar.exp()
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        constants = {
            "sqrt_abar": abar.sqrt(),
            "sqrt_1m_abar": (1 - abar).sqrt(),
            "log_alpha": log_alpha,
            "log_1m_alpha": betas.log(),
            "log_abar": log_abar,
            "log_1m_abar": torch.log(-torch.expm1(log_abar)),
            # Gaussian posterior q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, var).
            "post_c0": betas * abar_prev.sqrt() / (1 - abar),
            "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
            "post_std": (betas * (1 - abar_prev) / (1 - abar)).sqrt(),
            "log_k": self.layout.log_k(),
        }
        # Non-persistent: derived from the config, so they stay out of state dicts and FL updates.
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)

    def _q_xt(self, log_x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log q(x_t | x_0) = log(abar_t x_0 + (1 - abar_t) / K), per packed discrete column."""
        return torch.logaddexp(log_x0 + self.log_abar[t, None], self.log_1m_abar[t, None] - self.log_k)

    def _q_posterior(self, log_x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised per span.

        q(x_t | x_{t-1}) = alpha_t [x_t = x_{t-1}] + (1 - alpha_t) / K is symmetric, so as a function
        of x_{t-1} it is the vector alpha_t x_t + (1 - alpha_t) / K. At t = 0, x_{-1} means x_0 itself.
        """
        prev = torch.where((t == 0)[:, None], log_x0, self._q_xt(log_x0, (t - 1).clamp(min=0)))
        log_x_t = x_t.clamp(min=1e-30).log()
        step = torch.logaddexp(log_x_t + self.log_alpha[t, None], self.log_1m_alpha[t, None] - self.log_k)
        return self.layout.log_softmax(prev + step)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss [B]; timesteps, Gaussian noise and x_t's categories use the global RNG."""
        layout = self.layout
        t = torch.randint(0, self.timesteps, (len(x),), device=x.device)
        x_num, x_disc = layout.numeric(x), layout.discrete(x)
        eps = torch.randn_like(x_num)
        x_num_t = self.sqrt_abar[t, None] * x_num + self.sqrt_1m_abar[t, None] * eps
        log_x0 = x_disc.clamp(min=1e-30).log()
        x_disc_t = layout.sample_onehot(self._q_xt(log_x0, t), None)

        out = self.denoiser(torch.cat([x_num_t, x_disc_t], dim=1), t, y)
        eps_hat, logits = out.split([layout.n_numeric, layout.n_discrete_cols], dim=1)
        # Missing values (numeric 0, all-zero categorical span) are placeholders: no loss on them.
        present = layout.present(x)
        mse = ((eps - eps_hat) ** 2 * layout.numeric(present)).sum(dim=1) / max(layout.n_numeric, 1)

        # At t = 0 the true posterior is x_0 itself, so this KL is the decoder NLL -log p(x_0 | x_1).
        log_true = self._q_posterior(log_x0, x_disc_t, t)
        log_model = self._q_posterior(layout.log_softmax(logits), x_disc_t, t)
        kl = (log_true.exp() * (log_true - log_model) * layout.discrete(present)).sum(dim=1)
        return mse + self.timesteps * kl / max(layout.n_discrete_spans, 1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the full reverse chain from N(0, I) numerics and uniform categories."""
        layout, n = self.layout, len(y)
        x_num = torch.randn(n, layout.n_numeric, generator=generator, device=y.device)
        uniform = -self.log_k.expand(n, -1)
        x_disc = layout.sample_onehot(uniform, generator)
        for step in reversed(range(self.timesteps)):
            t = torch.full((n,), step, device=y.device, dtype=torch.long)
            eps_hat, logits = self.denoiser(torch.cat([x_num, x_disc], dim=1), t, y).split(
                [layout.n_numeric, layout.n_discrete_cols], dim=1
            )
            # Predict x_0, clip it to the data range, then take the Gaussian posterior mean.
            x0_hat = ((x_num - self.sqrt_1m_abar[step] * eps_hat) / self.sqrt_abar[step]).clamp(-1.0, 1.0)
            x_num = self.post_c0[step] * x0_hat + self.post_ct[step] * x_num
            if step > 0:
                noise = torch.randn(x_num.shape, generator=generator, device=y.device)
                x_num = x_num + self.post_std[step] * noise
            x_disc = layout.sample_onehot(self._q_posterior(layout.log_softmax(logits), x_disc, t), generator)
        return layout.assemble(x_num, x_disc)
