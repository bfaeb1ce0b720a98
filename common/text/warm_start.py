"""The public warm start: the narrative adapter first learns record -> note on a public corpus.

Plain LoRA training (no DP: the data are public), so DP fine-tuning and private evolution start
from a model that already writes ED notes, which is what makes DP text work at all (BRIEF.md, "DP
text, the arithmetic"). Half of the training prompts carry an example note of the same key (the
gate's columns: the mechanism, the body region where the schema names one), so the model also
learns to write a record's note in the manner of an example: the skill private evolution uses to
carry the sites' voted style into the release.

It runs once per (corpus, base model, adapter settings, recipe): the adapter (the trained B
matrices) is cached under ``cache_dir()``, and the default one (NEISS, SmolLM2) is shipped beside
the corpus with a manifest naming the command, the inputs' hashes and the file's own hash
(``fedsynth warm-start --ship`` rebuilds it; a test checks it matches).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from common.cache import cache_dir
from common.fileio import atomic_write_text
from common.text.consistency import ConsistencyChecker
from common.text.private_evolution import record_keys
from common.text.public_corpus import DEFAULT_CORPUS, PublicCorpus
from common.text.serialize import EXAMPLE_COLUMN

RECIPE = 1  # bump when the training below changes: it invalidates every cached adapter
EXAMPLE_SHARE = 0.5  # prompts that carry an example note of the same key
WARM_STEPS = 60
WARM_BATCH = 16
WARM_LR = 2e-3
SHIPPED = DEFAULT_CORPUS.parent / "warm_start"


def adapter_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What of a narrative config the adapter depends on (the same A, targets and base)."""
    return {"base": config["base"], "lora": config["lora"],
            "max_target_tokens": config["max_target_tokens"], "dtype": config["dtype"],
            "recipe": RECIPE, "steps": WARM_STEPS, "batch_size": WARM_BATCH, "lr": WARM_LR}


def warm_key(corpus: PublicCorpus, config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([corpus.sha256, adapter_settings(config)],
                                     sort_keys=True).encode()).hexdigest()


def with_examples(records: pd.DataFrame, corpus_schema: Any, seed: int) -> pd.DataFrame:
    """``records`` with ``EXAMPLE_COLUMN``: for ``EXAMPLE_SHARE`` of them, another record's note
    of the same key (none when the key has one record)."""
    keys = record_keys(records, ConsistencyChecker(corpus_schema).columns)
    notes = records[corpus_schema.narrative.name].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    examples: list[str | None] = [None] * len(records)
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    for i, key in enumerate(keys):
        others = [j for j in by_key[key] if j != i]
        if others and rng.random() < EXAMPLE_SHARE:
            examples[i] = notes[others[int(rng.integers(len(others)))]]
    out = records.copy()
    out[EXAMPLE_COLUMN] = pd.array(examples, dtype="string")
    return out


def train_adapter(corpus: PublicCorpus, config: Mapping[str, Any], seed: int = 0,
                  log: Any = None) -> dict[str, np.ndarray]:
    """The warm adapter: plain LoRA on the corpus, ``WARM_STEPS`` steps of ``WARM_BATCH``."""
    from common.text.narrative_model import NarrativeModel

    settings = {**dict(config), "fields": list(corpus.fields) if corpus.fields else None,
                "gate_columns": None, "batch_size": WARM_BATCH, "lr": WARM_LR}
    model = NarrativeModel(corpus.schema, epsilon=None, config=settings, seed=seed)
    records = with_examples(corpus.records, corpus.schema, seed)
    start = time.perf_counter()
    model.fit(records, steps=WARM_STEPS)
    if log is not None:
        log(f"warm start: {WARM_STEPS} steps of {WARM_BATCH} on {len(records)} public notes in "
            f"{time.perf_counter() - start:.0f} s (last loss {model.local_loss:.3f})")
    return model.get_weights()


def warm_adapter(corpus: PublicCorpus, config: Mapping[str, Any], log: Any = None) -> dict[str, np.ndarray]:
    """The warm adapter for ``config``'s base and LoRA settings: the shipped file when it was
    made from exactly these inputs, else the cache, else trained now (and cached)."""
    key = warm_key(corpus, config)
    for folder in (SHIPPED, cache_dir() / "warm-start"):
        manifest = folder / f"{key[:16]}.json"
        if manifest.is_file():
            return load_file(folder / json.loads(manifest.read_text(encoding="utf-8"))["file"])
    weights = train_adapter(corpus, config, log=log)
    save_adapter(cache_dir() / "warm-start", key, weights, corpus, config)
    return weights


def save_adapter(folder: Path, key: str, weights: Mapping[str, np.ndarray], corpus: PublicCorpus,
                 config: Mapping[str, Any]) -> Path:
    """``KEY.safetensors`` and its manifest ``KEY.json`` (inputs, command, the file's SHA-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key[:16]}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(weights.items())},
              str(tmp))
    tmp.replace(path)
    manifest = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "key": key, "corpus": corpus.path.name, "corpus_sha256": corpus.sha256,
                "settings": adapter_settings(config),
                "command": "fedsynth warm-start --ship"}
    atomic_write_text(folder / f"{key[:16]}.json", json.dumps(manifest, indent=2) + "\n")
    return path
