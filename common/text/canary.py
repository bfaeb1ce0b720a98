"""Memorisation guards: canary exposure (Carlini et al., The Secret Sharer, 2019) and an n-gram scan.

Exposure: a canary ``PREFIX SECRET`` with a random SECRET is planted in some training narratives.
After training, the model's log-perplexity of the planted narrative is ranked among the same
narrative with random candidate secrets; exposure = log2(candidates + 1) - log2(rank), in bits.
A model that never saw the canary ranks it uniformly (expected exposure 1/ln 2 = 1.44 bits); a
model that memorised it ranks it first (log2(candidates + 1) bits, the most this estimate shows).

The n-gram scan (``common.metrics.text.ngram_overlap``) runs at the site, with the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.text.tokens import encode_pairs, target_nll

CANARY_PREFIX = "CALLBACK NUMBER"


@dataclass(frozen=True)
class Canary:
    secret: str
    prefix: str = CANARY_PREFIX

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret}"

    def with_secret(self, secret: str) -> Canary:
        return Canary(secret, self.prefix)


def random_secret(rng: np.random.Generator, digits: int = 9) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, digits))


def plant(narratives: Sequence[str], canaries: Sequence[Canary], copies: int,
          rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
    """Append each canary to ``copies`` distinct narratives (no narrative gets two).

    Returns the new narratives and, per canary, the rows that carry it."""
    if len(canaries) * copies > len(narratives):
        raise ValueError(f"{len(canaries)} canaries x {copies} copies need as many narratives; "
                         f"there are {len(narratives)}")
    rows = rng.choice(len(narratives), size=(len(canaries), copies), replace=False)
    planted = list(narratives)
    for canary, where in zip(canaries, rows, strict=True):
        for row in where:
            planted[row] = f"{planted[row]} {canary.text}"
    return planted, rows.tolist()


@torch.no_grad()
def log_perplexities(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     prompts: Sequence[str], texts: Sequence[str], max_target_tokens: int,
                     batch_size: int = 32) -> np.ndarray:
    """-log2 P(text | prompt), summed over each text's tokens (as trained: chat turn, end token)."""
    model.eval()
    pairs = encode_pairs(tokenizer, prompts, texts, max_target_tokens)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        tokens = torch.as_tensor(pairs.tokens[start:start + batch_size], device=device)
        nll, _ = target_nll(model, tokens, pairs.prompt_width, tokenizer.pad_token_id)
        out.append(nll.cpu().numpy() / np.log(2))
    return np.concatenate(out)


def exposure(score: Callable[[list[Canary]], np.ndarray], canary: Canary, n_candidates: int,
             rng: np.random.Generator) -> float:
    """Exposure in bits of ``canary`` among ``n_candidates`` random secrets of its length;
    ``score`` gives the log-perplexity of narratives carrying each canary (lower: more likely).
    A candidate scoring the same as the canary counts half (ties do not look like memorisation)."""
    candidates: list[Canary] = []
    while len(candidates) < n_candidates:
        secret = random_secret(rng, len(canary.secret))
        if secret != canary.secret:
            candidates.append(canary.with_secret(secret))
    scores = score([canary, *candidates])
    rank = 1 + np.sum(scores[1:] < scores[0]) + 0.5 * np.sum(scores[1:] == scores[0])
    return float(np.log2(n_candidates + 1) - np.log2(rank))
