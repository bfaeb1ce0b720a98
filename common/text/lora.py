"""LoRA adapters for the narrative model, FFA-LoRA by default.

FFA-LoRA (Sun et al., ICLR 2024): every site draws A from the consortium's shared seed and
freezes it; only B is trained and sent. The update of a layer is ``(alpha / r) B A`` with A common
to all sites, so averaging the sites' B is exactly averaging their updates (plain LoRA averages A
and B separately, and mean(B) mean(A) is not mean(B A)), and DP noise added to B is not multiplied
by a noisy A. With ``ffa=False`` both matrices train and travel (plain federated LoRA).

Adapters go on ``nn.Linear`` layers only: Opacus computes wrong per-sample gradients for LoRA on
GPT-2's ``Conv1D`` (opacus issue 820), so other targets are refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import PreTrainedModel

from common.errors import InputError


@dataclass(frozen=True)
class LoraSettings:
    """Identical at every site (fixed in the run configuration)."""

    r: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    ffa: bool = True
    seed: int = 0  # the consortium's shared seed for A


def add_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with zero-initialised B and seeded A (frozen under FFA-LoRA)."""
    _check_targets(model, settings.target_modules)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0, bias="none",
                        target_modules=list(settings.target_modules))
    with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(settings.seed)
    for name, param in sorted(peft_model.named_parameters()):
        if ".lora_A." in name:  # peft's own scale (kaiming-uniform, a=sqrt(5)), drawn from the seed
            bound = 1.0 / math.sqrt(param.shape[1])
            with torch.no_grad():
                param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=generator))
            param.requires_grad_(not settings.ffa)
    return peft_model


def _check_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    found = [(name, module) for name, module in model.named_modules()
             if name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise InputError(f"no module of the base model is named {list(targets)}; set the LoRA "
                         f"target_modules to its attention projections (q_proj, v_proj in Gemma "
                         f"and Llama models).")
    wrong = sorted({type(m).__name__ for _, m in found if not isinstance(m, nn.Linear)})
    if wrong:
        raise InputError(f"LoRA targets {list(targets)} include {wrong} layers; only nn.Linear is "
                         f"supported (Opacus' per-sample gradients are wrong for LoRA on GPT-2's "
                         f"Conv1D, opacus issue 820). Use a Gemma 3 or Llama model.")


def trainable_adapter(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train and travel (B under FFA-LoRA), by name, in the model's order
    (the order Opacus draws their noise in)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def get_adapter_weights(model: PeftModel) -> dict[str, np.ndarray]:
    """The adapter matrices that travel (B under FFA-LoRA), from peft's own state dict and by its
    names (no adapter name in them), as ``set_peft_model_state_dict`` takes them back."""
    travelling = {name.replace(f".{model.active_adapter}.", ".") for name in trainable_adapter(model)}
    return {name: tensor.detach().float().cpu().numpy().copy()
            for name, tensor in get_peft_model_state_dict(model).items() if name in travelling}


def set_adapter_weights(model: PeftModel, weights: Mapping[str, np.ndarray]) -> None:
    current = get_adapter_weights(model)
    if set(weights) != set(current):
        raise ValueError(f"expected the adapter arrays {sorted(current)}, got {sorted(weights)}")
    for name, array in weights.items():
        if tuple(np.shape(array)) != current[name].shape:
            raise ValueError(f"{name}: expected shape {current[name].shape}, got {np.shape(array)}")
    set_peft_model_state_dict(model, {name: torch.as_tensor(np.asarray(array))
                                      for name, array in weights.items()})
