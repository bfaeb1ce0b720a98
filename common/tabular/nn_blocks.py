"""Building blocks shared by the tabular generators: the MLP trunk and span-wise bookkeeping.

Everything here is either a layer Opacus supports in hooks *and* ghost-clipping modes (``nn.Linear``)
or parameter-free tensor code, so a model assembled from it gets exact per-sample gradients and
gradient norms without custom grad samplers.

Both models treat a missing-indicator span like any categorical span (two classes,
[present, missing]). The encoder stores a missing value as zeros in its value span (0 for a numeric,
an all-zero block for a categorical), so losses are masked by the "present" indicator and sampled
value spans are zeroed where the sampled indicator says missing, exactly as the encoder would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Span


class MLP(nn.Sequential):
    """Linear/ReLU stack ending in a plain Linear: the trunk of TVAE and of TabDDPM's denoiser.

    No normalisation and no dropout: BatchNorm mixes samples (breaks per-sample gradients) and the
    DP noise already regularises; ReLU is not in-place, which Opacus' hooks need.
    """

    def __init__(self, d_in: int, hidden: Sequence[int], d_out: int) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(d_in, width), nn.ReLU()]
            d_in = width
        layers.append(nn.Linear(d_in, d_out))
        super().__init__(*layers)


class SpanLayout:
    """Where an encoded row's numeric and discrete (categorical + missing) columns live.

    Models work on two packed views of a row: ``numeric(x)`` ([B, n_numeric], one column per numeric
    span) and ``discrete(x)`` ([B, n_discrete_cols], the one-hot spans back to back, in span order);
    ``assemble`` writes the two views back into the encoder's layout.
    """

    def __init__(self, spans: Sequence[Span]) -> None:
        self.dim = max((s.stop for s in spans), default=0)
        numeric = [s for s in spans if s.kind == "numeric"]
        discrete = [s for s in spans if s.kind != "numeric"]
        if any(s.width != 1 for s in numeric):
            raise ValueError("numeric spans must have width 1")
        present_col = {s.column: s.start for s in spans if s.kind == "missing"}
        # For every encoded column, the column holding its "present" flag; ``dim`` points at a
        # constant-one pad (non-nullable columns and the indicators themselves).
        self.present_of = [self.dim] * self.dim
        for s in spans:
            if s.kind != "missing":
                self.present_of[s.start : s.stop] = [present_col.get(s.column, self.dim)] * s.width
        self.num_index = [s.start for s in numeric]
        self.disc_index = [i for s in discrete for i in range(s.start, s.stop)]
        self.disc_widths = [s.width for s in discrete]

    @property
    def n_numeric(self) -> int:
        return len(self.num_index)

    @property
    def n_discrete_cols(self) -> int:
        return len(self.disc_index)

    @property
    def n_discrete_spans(self) -> int:
        return len(self.disc_widths)

    def numeric(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.num_index]

    def discrete(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.disc_index]

    def present(self, x: torch.Tensor) -> torch.Tensor:
        """[B, dim] mask: 1 where a column's value is observed (always, for non-nullable columns)."""
        padded = torch.cat([x, x.new_ones(len(x), 1)], dim=1)
        return padded[:, self.present_of]

    def per_span(self, fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """Apply ``fn`` to each discrete span of a packed [B, n_discrete_cols] tensor."""
        if not self.disc_widths:
            return t
        return torch.cat([fn(part) for part in t.split(self.disc_widths, dim=1)], dim=1)

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Normalise packed logits (or unnormalised log-probabilities) within each span."""
        return self.per_span(lambda part: F.log_softmax(part, dim=1), logits)

    def log_k(self) -> torch.Tensor:
        """[n_discrete_cols]: log of the number of classes of the span each column belongs to."""
        return torch.tensor([float(w) for w in self.disc_widths for _ in range(w)]).log()

    def sample_onehot(self, log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Draw one category per span (Gumbel-max, so it works in log space) as packed one-hots."""
        u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=log_probs.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-20)))  # u == 0 would give +inf noise
        noisy = log_probs + gumbel
        return self.per_span(lambda part: F.one_hot(part.argmax(dim=1), part.shape[1]).to(part.dtype), noisy)

    def assemble(self, numeric: torch.Tensor, discrete: torch.Tensor) -> torch.Tensor:
        """Packed views -> encoded rows; numerics clamped to [-1, 1], value spans zeroed where missing."""
        out = numeric.new_zeros(len(numeric), self.dim)
        out[:, self.disc_index] = discrete
        out[:, self.num_index] = numeric.clamp(-1.0, 1.0)
        return out * self.present(out)
