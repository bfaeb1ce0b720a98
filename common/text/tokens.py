"""Prompt/target pairs as token matrices, and the per-example loss on target tokens only.

Layout of a batch row: ``[pad.. prompt | target ..pad]``: prompts left-padded to one width,
targets right-padded, so every target starts at the same column and the language-model head is
only applied to the target columns (``logits_to_keep``). Padding is ``-1`` in the matrix (a real
pad id may also be a target token, e.g. SmolLM2's eos). Positions are counted over real tokens
only, so an example's loss does not depend on how much padding its batch needed: per-sample
gradients are then functions of their own example alone, as DP-SGD's analysis assumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.text.base_models import end_of_turn_id

PAD = -1


@dataclass(frozen=True)
class TokenPairs:
    """``tokens``: int64 matrix [n, prompt_width + target_width], ``PAD`` where empty."""

    tokens: np.ndarray
    prompt_width: int

    def __len__(self) -> int:
        return len(self.tokens)


def chat_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt as a single user turn, up to the opening of the model's turn."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    return tokenizer(texts, add_special_tokens=False).input_ids


def targets(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each text closed by the end-of-turn token, cut at ``max_tokens`` (a cut text keeps no end
    token: the model should not learn to stop mid-note)."""
    stop = end_of_turn_id(tokenizer)
    return [(ids + [stop])[:max_tokens] for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]


def pack(prompt_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]]) -> TokenPairs:
    if len(prompt_ids) != len(target_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(target_ids)} targets")
    width_p = max(map(len, prompt_ids), default=0)
    width_t = max(map(len, target_ids), default=0)
    tokens = np.full((len(prompt_ids), width_p + width_t), PAD, dtype=np.int64)
    for row, (p, t) in enumerate(zip(prompt_ids, target_ids, strict=True)):
        tokens[row, width_p - len(p):width_p] = p
        tokens[row, width_p:width_p + len(t)] = t
    return TokenPairs(tokens, width_p)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], texts: Sequence[str],
                 max_target_tokens: int) -> TokenPairs:
    return pack(chat_prompts(tokenizer, prompts), targets(tokenizer, texts, max_target_tokens))


def target_nll(model: PreTrainedModel, tokens: torch.Tensor, prompt_width: int,
               pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood of each row's target tokens, their count), both [batch].

    Columns that are padding in every row are dropped first (the batch's own widths).
    """
    used = (tokens != PAD).any(0).nonzero().flatten()
    first, last = int(used[0]), int(used[-1]) + 1  # prompts are never empty: first < prompt_width
    tokens, prompt_width = tokens[:, first:last], prompt_width - first
    mask = tokens != PAD
    n_target = tokens.shape[1] - prompt_width
    out = model(input_ids=torch.where(mask, tokens, pad_id), attention_mask=mask.long(),
                position_ids=(mask.long().cumsum(1) - 1).clamp(min=0), use_cache=False,
                logits_to_keep=n_target + 1)
    logits = out.logits[:, :-1].float()
    labels = tokens[:, prompt_width:]
    valid = labels != PAD
    nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return (nll * valid).sum(1), valid.sum(1)
