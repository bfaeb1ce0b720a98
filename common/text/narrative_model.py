"""NarrativeModel: one facade over the base model, FFA-LoRA, the text budget, DP training and
generation, shaped like ``TabularSynthesizer``.

Federated use at a site: ``plan(n_records, planned_steps)`` once for the whole run,
``train_steps(records, k)`` per round, ``get_weights()/set_weights()`` (the B matrices) for
aggregation, ``state_dict()`` to survive a restart. The spends go to the site's ledger under
``text-lora``, beside the tabular model's, each with its own budget. At the coordinator:
``set_weights(average)``, ``sample(records)``, ``save(dir)`` (the adapter with peft's
``save_pretrained``); ``NarrativeModel.load(dir)`` reads it back.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from common.errors import InputError
from common.fileio import atomic_write_text
from common.privacy.accountant import DEFAULT_DELTA, Entry
from common.privacy.ledger import Ledger
from common.privacy.planned import PlannedBudget, planned_releases
from common.privacy.signal import MAX_NOISE_PER_BATCH, check_noise_per_batch, noise_per_batch
from common.saved_model import read_model_folder
from common.schema import Schema
from common.tabular.trainer import resolve_device
from common.text.base_models import load_base_model
from common.text.canary import Canary, exposure, log_perplexities
from common.text.consistency import ConsistencyChecker
from common.text.generate import SamplingSettings, gate, generate_texts
from common.text.lora import LoraSettings, add_lora, get_adapter_weights, set_adapter_weights
from common.text.serialize import RecordSerializer
from common.text.tokens import encode_pairs
from common.text.trainer import LoraTrainer
from common.version import __version__

DEFAULT_CONFIG: dict[str, Any] = {
    "base": "smollm2",        # tiny | smollm2 | local:PATH (e.g. MedGemma 27B text-it)
    "dtype": "auto",          # float32 on CPU, bfloat16 on CUDA; or float32 | bfloat16
    "fields": None,           # prompt fields; None = the label, then every feature
    "gate_columns": None,     # columns the gate checks; None = every column with synonyms
    "batch_size": 16,         # expected Poisson batch; sampling rate = 1/ceil(n/batch_size)
    "physical_batch_size": 16,  # rows per forward/backward; a larger Poisson batch is split
    #                             (one noisy step per logical batch; null: never split)
    "max_noise_per_batch": MAX_NOISE_PER_BATCH,  # plan refused above this sigma/B
    #                             (common.privacy.signal); null disables the check
    "lr": 2e-3,
    "max_target_tokens": 128,  # training targets are cut here
    "steps": 200,             # optimizer steps of fit()
    "lora": asdict(LoraSettings()),
    "sampling": asdict(SamplingSettings()),
}
FLAG_COLUMN = "narrative_flagged"
LEDGER_NAME = "text-lora"  # the narrative model's spends in a site's ledger
FILES = {"adapter": "adapter", "meta": "narrative.json", "schema": "schema.yaml"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class NarrativeModel(PlannedBudget):
    """Writes a narrative per record; LoRA-trained under (``epsilon``, ``delta``)-DP, or without
    DP when ``epsilon`` is None (baselines, the canary control).

    ``ledger`` is the site's ledger (a path, a Ledger, or None for memory only), where this model
    spends under ``name``. ``seed`` fixes the batches of a non-private run. The privacy settings
    (``epsilon``, ``delta``, ``max_grad_norm``, ``noise_seed``) are the data holder's, as for
    ``TabularSynthesizer``; ``config`` never holds them.
    """

    def __init__(self, schema: Schema, epsilon: float | None = 3.0, delta: float = DEFAULT_DELTA,
                 config: Mapping[str, Any] | None = None, device: str = "auto",
                 ledger: str | Path | Ledger | None = None, name: str = LEDGER_NAME,
                 seed: int = 0, noise_seed: int | None = None, max_grad_norm: float = 1.0) -> None:
        if schema.narrative is None:
            raise InputError(f"{schema.source}: the schema has no column with role narrative; "
                             f"there is no text to learn.")
        self.schema = schema
        self.config = resolve_config(config)
        self.device = resolve_device(device)
        self.model_name = name  # this model's spends in the site's ledger
        self.seed = seed  # batches when not private
        self._init_privacy(epsilon, delta, noise_seed, max_grad_norm, ledger)
        base, self.tokenizer = load_base_model(self.config["base"], schema=schema,
                                               dtype=_dtype(self.config["dtype"], self.device))
        self.lora = LoraSettings(**{**self.config["lora"],
                                    "target_modules": tuple(self.config["lora"]["target_modules"])})
        self.model: PeftModel = add_lora(base, self.lora).to(self.device)
        self.serializer = RecordSerializer(schema, self.config["fields"])
        self.checker = ConsistencyChecker(schema, self.config["gate_columns"])
        self.sampling = SamplingSettings(**self.config["sampling"])
        self.last_sample_stats: dict[str, float] = {}

    # --- training -------------------------------------------------------------------------
    def fit(self, records: pd.DataFrame, steps: int | None = None) -> NarrativeModel:
        """Local (one-site) training: noise calibrated for ``steps`` (``config['steps']`` if
        None), then those steps."""
        steps = self.config["steps"] if steps is None else steps
        self.plan(len(records), steps)
        self.train_steps(records, steps)
        return self

    @staticmethod
    def planned_releases(config: Mapping[str, Any] | None, epsilon: float, delta: float,
                         n_records: int, planned_steps: int) -> list[Entry]:
        """What ``plan`` will release, without loading the base model (a site checks a whole
        run against its cap with it)."""
        return planned_releases(epsilon, delta, n_records, resolve_config(config)["batch_size"],
                                planned_steps)

    def train_steps(self, records: pd.DataFrame, k: int, round: int | None = None,
                    proximal_mu: float = 0.0) -> float | None:
        """Exactly ``k`` local steps on ``records`` (the same training split every round);
        refuses, training nothing, if they would exceed the budget. Returns epsilon spent so far
        (None without DP). FedProx (``proximal_mu`` > 0) is not built for the adapters."""
        if proximal_mu:
            raise InputError("FedProx (proximal_mu > 0) is not supported for the narrative "
                             "adapters; set it to 0 for the text stage.")
        if self._plan is None and not self.private:
            self.plan(len(records), k)
        self._require_plan()
        if len(records) != self._plan["n_records"]:
            raise InputError(f"the narrative run was planned for {self._plan['n_records']} records "
                             f"but the data has {len(records)}; train every round on the same "
                             f"training split.")
        if self._trainer is None:
            self._trainer = self._new_trainer(records)
        self.local_loss = self._trainer.train_steps(k, round=round)
        return self.epsilon_spent()

    def _new_trainer(self, records: pd.DataFrame) -> LoraTrainer:
        pairs = encode_pairs(self.tokenizer, self.prompts(records), _narratives(records, self.schema),
                             self.config["max_target_tokens"])
        physical = self.config["physical_batch_size"]
        if physical is not None and (isinstance(physical, bool) or not isinstance(physical, int)
                                     or physical < 1):
            raise InputError(f"narrative config 'physical_batch_size' must be an integer >= 1 or "
                             f"null (no split), got {physical!r}.")
        return self._build_trainer(lambda **kw: LoraTrainer(self.model, pairs,
                                                            self.tokenizer.pad_token_id,
                                                            physical_batch_size=physical, **kw))

    # --- federated weights ----------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """What leaves the site: the trained adapter matrices (B only under FFA-LoRA), by peft's
        names."""
        return get_adapter_weights(self.model)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        set_adapter_weights(self.model, weights)

    # --- generation -----------------------------------------------------------------------
    def prompts(self, records: pd.DataFrame) -> list[str]:
        return [self.serializer.prompt(r) for r in records.to_dict("records")]

    def sample(self, records: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        """``records`` with the narrative column written, and ``narrative_flagged`` set where the
        gate still found the narrative inconsistent after every retry."""
        rows = records.to_dict("records")
        prompts = self.prompts(records)
        generated = [0]

        def write(indices: list[int]) -> list[str]:
            texts, n_tokens = generate_texts(self.model, self.tokenizer,
                                             [prompts[i] for i in indices], self.sampling)
            generated[0] += n_tokens
            return texts

        start = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(secrets.randbits(63) if seed is None else seed)
            result = gate(rows, write, self.checker, self.sampling.retries)
        seconds = time.perf_counter() - start
        self.last_sample_stats = {"records": len(rows), "tokens": generated[0], "seconds": seconds,
                                  "attempts": sum(result.attempts), "flagged": sum(result.flagged),
                                  "first_pass": sum(a == 1 and not f for a, f in
                                                    zip(result.attempts, result.flagged, strict=True))}
        out = records.copy()
        out[self.schema.narrative.name] = pd.array(result.texts, dtype="string")
        out[FLAG_COLUMN] = result.flagged
        return out

    def canary_exposure(self, record: Mapping[str, Any], narrative: str, canary: Canary,
                        n_candidates: int, seed: int) -> float:
        """Exposure of ``canary`` planted after ``narrative`` of ``record`` (see common.text.canary)."""
        prompt = self.serializer.prompt(record)

        def score(candidates: list[Canary]) -> np.ndarray:
            texts = [f"{narrative} {c.text}" for c in candidates]
            return log_perplexities(self.model, self.tokenizer, [prompt] * len(texts), texts,
                                    self.config["max_target_tokens"])

        return exposure(score, canary, n_candidates, np.random.default_rng(seed))

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a site needs to continue after a restart: adapter, plan, optimizer and the
        accountant history (checked against the ledger on load)."""
        return {"config": self.config,
                "adapter": {name: torch.as_tensor(w) for name, w in self.get_weights().items()},
                **self._privacy_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore into a model that has not trained yet (training hooks are attached once)."""
        if self._trainer is not None:
            raise RuntimeError("load_state_dict needs a NarrativeModel that has not trained; "
                               "build a fresh one")
        if state["config"] != self.config:
            raise InputError(f"the saved narrative state has config {state['config']}; build the "
                             f"model with the same config.")
        self.set_weights({name: t.numpy() for name, t in state["adapter"].items()})
        self._restore_privacy_state(state)

    def save(self, folder: str | Path) -> None:
        """Write ``adapter/`` (peft ``save_pretrained``), ``narrative.json`` (base, config,
        budget, version, schema hash) and ``schema.yaml`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder / FILES["adapter"])
        atomic_write_text(folder / FILES["schema"], self.schema.to_yaml())
        meta = {"config": self.config, "epsilon": self.epsilon, "delta": self.delta,
                "max_grad_norm": self.max_grad_norm,
                "epsilon_spent": self.epsilon_spent(), "fedsynth_version": __version__,
                "schema_hash": self.schema.hash}
        atomic_write_text(folder / FILES["meta"], json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto",
             ledger: str | Path | Ledger | None = None) -> NarrativeModel:
        folder = Path(folder)
        meta, schema = read_model_folder(folder, FILES, "narrative model")
        model = cls(schema, epsilon=meta["epsilon"], delta=meta["delta"], config=meta["config"],
                    device=device, ledger=ledger, max_grad_norm=meta.get("max_grad_norm", 1.0))
        set_peft_model_state_dict(model.model,
                                  load_file(folder / FILES["adapter"] / "adapter_model.safetensors"))
        return model

    # --- the noise against the signal (common.privacy.signal) -----------------------------
    def plan(self, n_records: int, planned_steps: int) -> float | None:
        """``PlannedBudget.plan``, refused (InputError, nothing planned) when its sigma/B is above
        ``config['max_noise_per_batch']``: the noise would swamp the clipped mean gradient. A
        plan already made (or restored) is kept as it is."""
        new = self._plan is None
        sigma = super().plan(n_records, planned_steps)
        if new and sigma is not None:
            try:
                check_noise_per_batch(sigma, n_records, self.config["batch_size"],
                                      self.config["max_noise_per_batch"], steps=planned_steps,
                                      what=f"the {self.model_name} plan")
            except InputError:
                self._plan, self.budget = None, None
                raise
        return sigma

    @property
    def noise_per_batch(self) -> float | None:
        """sigma/B of the plan (per-coordinate noise std of the averaged gradient over the
        clipping bound); None before ``plan`` or without DP."""
        if self._plan is None or self._plan["noise_multiplier"] is None:
            return None
        return noise_per_batch(self._plan["noise_multiplier"], self._plan["n_records"],
                               self.config["batch_size"])


def _narratives(records: pd.DataFrame, schema: Schema) -> list[str]:
    column = schema.narrative.name
    if column not in records:
        raise InputError(f"the records have no narrative column '{column}'; the narrative model "
                         f"learns from it.")
    empty = int(records[column].isna().sum())
    if empty:
        raise InputError(f"{empty} record(s) have no '{column}' text; drop them from the training "
                         f"split (the narrative model learns record -> text).")
    return [str(t) for t in records[column]]


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise InputError(f"unknown dtype {name!r}; use auto, {' or '.join(_DTYPES)}.")
    return _DTYPES[name]


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in (nested for ``lora`` and ``sampling``); JSON types only, as it is saved."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise InputError(f"unknown narrative config key(s) {unknown}; allowed: "
                         f"{sorted(DEFAULT_CONFIG)}.")
    resolved = {**DEFAULT_CONFIG, **config}
    for key, settings in (("lora", LoraSettings), ("sampling", SamplingSettings)):
        allowed = {f.name for f in fields(settings)}
        extra = sorted(set(config.get(key) or {}) - allowed)
        if extra:
            raise InputError(f"unknown narrative {key} setting(s) {extra}; allowed: {sorted(allowed)}.")
        resolved[key] = {**DEFAULT_CONFIG[key], **(config.get(key) or {})}
    try:
        resolved = json.loads(json.dumps(resolved))
    except TypeError as exc:
        raise InputError(f"the narrative config must hold plain values: {exc}.") from None
    for key in ("fields", "gate_columns"):
        if resolved[key] is not None and not isinstance(resolved[key], list):
            raise InputError(f"narrative config '{key}' must be a list of column names or null.")
    return resolved
