"""TVAE-style conditional variational autoencoder over encoded rows (Xu et al., 2019).

The encoder sees the row and the label, the decoder sees the latent code and the label, so
``sample(y)`` draws records of a chosen class. The label enters as a one-hot concatenated to the
input rather than through an ``nn.Embedding`` shared by encoder and decoder: a parameter used twice
in one forward is rejected by Opacus' ghost clipping, and a one-hot into a Linear is the same thing
as an embedding added to the first layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Span, TabularModel
from .label_stats import conditional_init
from .nn_blocks import MLP, SpanLayout


class TabularVAE(TabularModel):
    """Conditional VAE; ``forward`` returns the per-sample negative ELBO (reconstruction + beta*KL).

    Likelihood: a Gaussian per numeric column with a mean and a scale predicted by the decoder
    (TVAE learns the scale too; predicting it keeps every parameter inside an ``nn.Linear``); a
    categorical per discrete span (categorical columns and missing indicators alike). Missing values
    add no reconstruction term. ``beta`` defaults to 0.5, TVAE's ``loss_factor=2``: with full weight
    on the KL the latent code is ignored for longer, and the columns' joint structure comes late.
    """

    def __init__(
        self,
        spans: list[Span],
        n_classes: int,
        *,
        latent_dim: int = 32,
        hidden: Sequence[int] = (128, 128),
        beta: float = 0.5,
        min_sigma: float = 0.01,
    ) -> None:
        super().__init__(spans, n_classes)
        self.layout = SpanLayout(spans)
        self.latent_dim = latent_dim
        self.beta = beta
        self.min_sigma = min_sigma
        n_num, n_disc = self.layout.n_numeric, self.layout.n_discrete_cols
        self.encoder = MLP(self.dim + n_classes, hidden, 2 * latent_dim)
        self.decoder = MLP(latent_dim + n_classes, list(reversed(hidden)), 2 * n_num + n_disc)
        # A direct label -> output path: per-class column marginals need no hidden layer, and
        # under DP-SGD this is where the label's signal survives the noise. Zero until
        # ``init_from_label_tables`` puts the DP class-conditional marginals there.
        self.label_out = nn.Linear(n_classes, 2 * n_num + n_disc, bias=False)
        nn.init.zeros_(self.label_out.weight)

    @torch.no_grad()
    def init_from_label_tables(self, tables: np.ndarray) -> None:
        """Start the label path at the (noisy) class-conditional marginals of ``label_stats``:
        the decoder's output then begins at p(column | label), and training learns the rest."""
        means, scales, log_probs = conditional_init(tables, self.spans, self.min_sigma)
        raw_sigma = np.log(np.expm1(np.maximum(scales - self.min_sigma, 1e-4)))  # softplus^-1
        weight = np.concatenate([means, raw_sigma, log_probs], axis=1).T
        self.label_out.weight.copy_(torch.as_tensor(weight, dtype=self.label_out.weight.dtype))

    def _decode(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent code -> (numeric means, numeric scales, per-span log-probabilities)."""
        n_num, n_disc = self.layout.n_numeric, self.layout.n_discrete_cols
        onehot = self._onehot(y, z)
        out = self.decoder(torch.cat([z, onehot], dim=1)) + self.label_out(onehot)
        mean, raw_sigma, logits = out.split([n_num, n_num, n_disc], dim=1)
        # A floor keeps the Gaussian NLL bounded when a column is (nearly) constant.
        sigma = self.min_sigma + F.softplus(raw_sigma)
        return mean, sigma, self.layout.log_softmax(logits)

    def _onehot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.n_classes).to(like.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss [B]; the reparameterisation noise comes from the global RNG."""
        mu, logvar = self.encoder(torch.cat([x, self._onehot(y, x)], dim=1)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        mean, sigma, log_probs = self._decode(z, y)
        observed = self.layout.numeric(self.layout.present(x))
        nll_num = (0.5 * ((self.layout.numeric(x) - mean) / sigma) ** 2 + sigma.log()) * observed
        # One cross-entropy per span; a missing categorical is an all-zero span, so it adds nothing.
        nll_disc = -(self.layout.discrete(x) * log_probs)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)
        return nll_num.sum(dim=1) + nll_disc.sum(dim=1) + self.beta * kl.sum(dim=1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode z ~ N(0, I); numerics get their Gaussian noise and categories are drawn from the
        softmax (not argmax) so that the samples keep the data's diversity."""
        z = torch.randn(len(y), self.latent_dim, generator=generator, device=y.device)
        mean, sigma, log_probs = self._decode(z, y)
        numeric = mean + sigma * torch.randn(mean.shape, generator=generator, device=y.device)
        return self.layout.assemble(numeric, self.layout.sample_onehot(log_probs, generator))
