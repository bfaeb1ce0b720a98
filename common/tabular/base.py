"""What every tabular generator shares: the encoded layout and the model protocol.

The encoder (``common.encoding``) turns a typed frame into a float matrix whose layout is a list of
``Span``s; the label is not in the matrix but passed as a class index ``y`` so that every model is
conditional on it (rare mechanisms can be oversampled). A model only needs to know the spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

SpanKind = Literal["numeric", "categorical", "missing"]


@dataclass(frozen=True)
class Span:
    """A block of encoded columns.

    numeric: width 1, value in [-1, 1] (0 where missing); categorical: one-hot over the schema's
    categories; missing: one-hot [present, missing] for a nullable column (``column`` names it).
    """

    column: str
    kind: SpanKind
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width


class TabularModel(nn.Module):
    """A conditional generator over encoded rows.

    ``forward(x, y)`` returns the per-sample training loss (shape [B]) so that Opacus' ghost
    clipping can treat the model output as the loss; ``sample(y, generator)`` returns encoded rows.
    Modules must be Opacus-compatible: no BatchNorm, no in-place ops.
    """

    def __init__(self, spans: list[Span], n_classes: int) -> None:
        super().__init__()
        self.spans = list(spans)
        self.n_classes = n_classes
        self.dim = max((s.stop for s in spans), default=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError
