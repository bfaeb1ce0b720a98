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
from common.metrics.text import embed
from common.privacy.accountant import DEFAULT_DELTA, Entry
from common.privacy.ledger import Ledger
from common.privacy.planned import PlannedBudget, planned_releases
from common.privacy.signal import MAX_NOISE_PER_BATCH, check_noise_per_batch, noise_per_batch
from common.saved_model import read_model_folder
from common.schema import Schema
from common.tabular.trainer import resolve_device
from common.text.base_models import check_base_spec, load_base_model
from common.text.canary import Canary, exposure, log_perplexities
from common.text.consistency import ConsistencyChecker
from common.text.generate import SamplingSettings, gate, generate_texts
from common.text.lora import LoraSettings, add_lora, get_adapter_weights, set_adapter_weights
from common.text.private_evolution import record_keys, vote_histogram, vote_releases
from common.text.public_corpus import PublicCorpus
from common.text.serialize import EXAMPLE_COLUMN, RecordSerializer
from common.text.tokens import encode_pairs
from common.text.trainer import LoraTrainer
from common.text.warm_start import warm_adapter
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
    # Private evolution (common.text.private_evolution): vote rounds, the share of the text budget
    # they take (the rest goes to DP-SGD steps, if the plan has any), candidates per key per
    # round, and how many records the coordinator draws to make them.
    "pe": {"rounds": 0, "share": 1.0, "candidates": 4, "pool_records": 400},
    # The public corpus of the warm start (``PublicCorpus.plan_entry``: name, sha256, note
    # hashes), so a site can refuse a run pretrained on its own notes; null: no warm start.
    "public_corpus": None,
    "lora": asdict(LoraSettings()),
    "sampling": asdict(SamplingSettings()),
}
_EMBEDDED: dict[int, np.ndarray] = {}  # sites' train notes embedded in this process, by their hash
FLAG_COLUMN = "narrative_flagged"
LEDGER_NAME = "text-lora"  # the narrative model's spends in a site's ledger
FILES = {"adapter": "adapter", "meta": "narrative.json", "schema": "schema.yaml"}
_PE_KEYS = ("rounds", "share", "candidates", "pool_records")
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
        check_base_spec(self.config["base"])  # a bad spec fails here; the model loads when used
        self.lora = LoraSettings(**{**self.config["lora"],
                                    "target_modules": tuple(self.config["lora"]["target_modules"])})
        self._lm: tuple[PeftModel, Any] | None = None  # loaded on first use: a voting site needs none
        self._adapter: dict[str, np.ndarray] | None = None  # weights set before the LM is loaded
        # Private evolution's voted notes per key (text, weight): DP output, the style examples
        # of ``sample``; empty without a PE stage.
        self.examples: dict[str, list[tuple[str, float]]] = {}
        self.serializer = RecordSerializer(schema, self.config["fields"])
        self.checker = ConsistencyChecker(schema, self.config["gate_columns"])
        self.sampling = SamplingSettings(**self.config["sampling"])
        self.last_sample_stats: dict[str, float] = {}

    # --- the language model, loaded when first needed -------------------------------------
    @property
    def model(self) -> PeftModel:
        return self._language_model()[0]

    @property
    def tokenizer(self) -> Any:
        return self._language_model()[1]

    def _language_model(self) -> tuple[PeftModel, Any]:
        if self._lm is None:
            base, tokenizer = load_base_model(self.config["base"], schema=self.schema,
                                              dtype=_dtype(self.config["dtype"], self.device))
            self._lm = (add_lora(base, self.lora).to(self.device), tokenizer)
            if self._adapter is not None:
                set_adapter_weights(self._lm[0], self._adapter)
                self._adapter = None
        return self._lm

    def warm_start(self, corpus: PublicCorpus, log: Any = None) -> None:
        """Start from the public warm start on ``corpus`` (no privacy cost: the data are public)."""
        self.set_weights(warm_adapter(corpus, self.config, log=log))

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
        run against its cap with it): the private-evolution votes, then the DP-SGD steps."""
        config = resolve_config(config)
        votes = vote_releases(config["pe"], epsilon, delta)
        if planned_steps == 0:
            return votes
        return planned_releases(epsilon, delta, n_records, config["batch_size"], planned_steps,
                                votes)

    def _reserved_releases(self, plan: dict[str, Any]) -> list[Entry]:
        """The private-evolution votes, planned with the DP-SGD steps from one text budget."""
        votes = vote_releases(self.config["pe"], self.epsilon, self.delta)
        plan["pe_noise"] = votes[0][0] if votes else None
        return votes

    def release_votes(self, records: pd.DataFrame, texts: list[str], keys: list[str],
                      round: int) -> np.ndarray:
        """Private evolution's site half: every train note votes for its nearest candidate of
        its own key (``common.text.private_evolution``), Gaussian noise of the planned multiplier
        on the histogram (sensitivity 1), charged to the ledger before the noise is drawn."""
        self._require_plan()
        rounds = self.config["pe"]["rounds"]
        if not 1 <= round <= rounds:
            raise InputError(f"private-evolution round {round} is not one of the planned rounds "
                             f"1..{rounds}.")
        votes = vote_histogram(self._note_embeddings(records), record_keys(records, self.checker.columns),
                               embed(texts), keys)
        if not self.private:
            return votes.astype(np.float64)
        sigma = self._plan["pe_noise"]
        self.budget.charge(sigma, 1.0, 1, round=round, note=f"PE votes {round}/{rounds}")
        rng = np.random.default_rng(None if self.noise_seed is None else [self.noise_seed, round])
        return votes + rng.normal(0.0, sigma, size=votes.shape)

    def _note_embeddings(self, records: pd.DataFrame) -> np.ndarray:
        """The site's train notes embedded once per process (all-MiniLM-L6-v2): a site builds
        its model anew for every message, and every vote round embeds the same notes."""
        notes = _narratives(records, self.schema)
        key = hash(tuple(notes))
        if key not in _EMBEDDED:
            if len(_EMBEDDED) >= 16:  # a simulation's process serves several sites in turn
                _EMBEDDED.pop(next(iter(_EMBEDDED)))
            _EMBEDDED[key] = embed(notes)
        return _EMBEDDED[key]

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
        if self._lm is None and self._adapter is not None:
            return {name: array.copy() for name, array in self._adapter.items()}
        return get_adapter_weights(self.model)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Into the adapter; kept until the LM loads when it has not (checked then)."""
        if self._lm is None:
            self._adapter = {name: np.asarray(array, dtype=np.float32).copy()
                             for name, array in weights.items()}
        else:
            set_adapter_weights(self.model, weights)

    # --- generation -----------------------------------------------------------------------
    def prompts(self, records: pd.DataFrame) -> list[str]:
        return [self.serializer.prompt(r) for r in records.to_dict("records")]

    def with_examples(self, records: pd.DataFrame, seed: int | None) -> pd.DataFrame:
        """``records`` with an example note each (``EXAMPLE_COLUMN``), drawn from its key's voted
        notes in proportion to their weight; unchanged without examples or when the column is
        already there (private evolution's variations choose their own)."""
        if not self.examples or EXAMPLE_COLUMN in records:
            return records
        rng = np.random.default_rng(seed)
        chosen: list[str | None] = []
        for key in record_keys(records, self.checker.columns):
            pool = self.examples.get(key)
            if not pool:
                chosen.append(None)
                continue
            weights = np.array([w for _, w in pool], dtype=np.float64)
            chosen.append(pool[int(rng.choice(len(pool), p=weights / weights.sum()))][0])
        out = records.copy()
        out[EXAMPLE_COLUMN] = pd.array(chosen, dtype="string")
        return out

    def sample(self, records: pd.DataFrame, seed: int | None = None,
               progress: Any = None) -> pd.DataFrame:
        """``records`` with the narrative column written, and ``narrative_flagged`` set where the
        gate still found the narrative inconsistent after every retry. ``progress``, a tqdm
        bar, advances after each batch written; each retry raises its total by the notes it
        writes again, so its rate and estimate count every note the model writes."""
        prompts = self.prompts(self.with_examples(records, seed))
        rows = records.to_dict("records")
        generated, passes = [0], [0]

        def write(indices: list[int]) -> list[str]:
            if progress is not None and passes[0]:
                progress.total += len(indices)
                progress.refresh()
            passes[0] += 1
            texts, n_tokens = generate_texts(self.model, self.tokenizer,
                                             [prompts[i] for i in indices], self.sampling,
                                             on_batch=None if progress is None else progress.update)
            generated[0] += n_tokens
            return texts

        self._language_model()  # loaded before seeding: loading draws from torch's generator
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
        unset = self._lm is None and self._adapter is None  # a voting site never loads the LM
        return {"config": self.config,
                "adapter": None if unset else {name: torch.as_tensor(w)
                                               for name, w in self.get_weights().items()},
                **self._privacy_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore into a model that has not trained yet (training hooks are attached once)."""
        if self._trainer is not None:
            raise RuntimeError("load_state_dict needs a NarrativeModel that has not trained; "
                               "build a fresh one")
        if state["config"] != self.config:
            raise InputError(f"the saved narrative state has config {state['config']}; build the "
                             f"model with the same config.")
        if state["adapter"] is not None:
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
                "schema_hash": self.schema.hash,
                "examples": {key: [list(e) for e in pool] for key, pool in self.examples.items()}}
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
        model.examples = {key: [(str(t), float(w)) for t, w in pool]
                          for key, pool in meta.get("examples", {}).items()}
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
    for key, settings in (("lora", LoraSettings), ("sampling", SamplingSettings),
                          ("pe", _PE_KEYS)):
        allowed = set(_PE_KEYS) if settings is _PE_KEYS else {f.name for f in fields(settings)}
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
