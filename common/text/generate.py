"""Narratives for synthetic records: batched sampling with a KV cache, and the consistency gate.

A narrative whose checked columns (mechanism, body region) disagree with its record is written
again, up to ``retries`` times, then kept and flagged, so a caller can drop or review it; nothing
is silently replaced by a template.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.text.consistency import ConsistencyChecker
from common.text.tokens import PAD, chat_prompts, pack


@dataclass(frozen=True)
class SamplingSettings:
    """Fixed in configuration. ``temperature`` 0 decodes greedily."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96  # the length cap of a narrative
    batch_size: int = 16
    retries: int = 3  # regenerations of an inconsistent narrative before it is flagged


@dataclass(frozen=True)
class GatedNarratives:
    texts: list[str]
    flagged: list[bool]  # still inconsistent after every retry
    attempts: list[int]  # how many times each was written


@torch.no_grad()
def generate_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   prompts: Sequence[str], settings: SamplingSettings,
                   on_batch: Callable[[int], Any] | None = None) -> tuple[list[str], int]:
    """One narrative per prompt and the number of tokens generated; ``on_batch(n)`` after each
    batch of n (a progress display). Sampling draws from torch's global generator: seed it
    (under ``torch.random.fork_rng``) for reproducible text."""
    model.eval()
    device = next(model.parameters()).device
    stop = model.generation_config.eos_token_id
    texts, n_tokens = [], 0
    for start in range(0, len(prompts), settings.batch_size):
        chunk = chat_prompts(tokenizer, prompts[start:start + settings.batch_size])
        tokens = torch.as_tensor(pack(chunk, [[]] * len(chunk)).tokens, device=device)
        mask = tokens != PAD
        sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
                    if settings.temperature > 0 else {"do_sample": False})
        out = model.generate(input_ids=torch.where(mask, tokens, tokenizer.pad_token_id),
                             attention_mask=mask.long(), max_new_tokens=settings.max_new_tokens,
                             use_cache=True, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id,
                             **sampling)
        for row in out[:, tokens.shape[1]:].tolist():
            ended = row.index(stop) if stop in row else len(row)
            n_tokens += ended
            texts.append(one_line(tokenizer.decode(row[:ended], skip_special_tokens=True)))
        if on_batch is not None:
            on_batch(len(chunk))
    return texts, n_tokens


def one_line(text: str) -> str:
    """A narrative as one line of printable text: control and format characters (NUL, CR, line
    breaks, zero-width marks a sampled token may carry) become spaces, runs of spaces one. A
    released CSV must read back in any tool."""
    printable = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                        for c in text)
    return re.sub(r"\s+", " ", printable).strip()


def gate(records: Sequence[Mapping[str, Any]], write: Callable[[list[int]], list[str]],
         checker: ConsistencyChecker, retries: int) -> GatedNarratives:
    """Write a narrative for every record with ``write(indices)``, then rewrite the inconsistent
    ones (in one batch per retry) up to ``retries`` times."""
    texts = [""] * len(records)
    attempts = [0] * len(records)
    pending = list(range(len(records)))
    for _ in range(retries + 1):
        if not pending:
            break
        for i, text in zip(pending, write(pending), strict=True):
            texts[i], attempts[i] = text, attempts[i] + 1
        pending = [i for i in pending if not checker.consistent(records[i], texts[i])]
    flagged = set(pending)
    return GatedNarratives(texts, [i in flagged for i in range(len(records))], attempts)
