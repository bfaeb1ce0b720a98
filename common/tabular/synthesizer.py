"""TabularSynthesizer: one facade over encoding, privacy budget, DP training and sampling.

Local use: ``fit(df)`` then ``sample(n)``. Federated use (a site, one Flower round at a time):
``plan(n_records, planned_steps)`` once for the whole run, ``release_label_counts(df)`` once,
``train_steps(df, k)`` per round, ``get_weights()/set_weights()`` for aggregation, ``state_dict()``
to survive a restart. ``save(dir)``/``load(dir)`` is the released-model format that
``fedsynth generate --model DIR`` reads.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.encoding import TableEncoder
from common.errors import InputError
from common.fileio import atomic_write_text
from common.privacy.accountant import DEFAULT_DELTA, Entry
from common.privacy.counts import counts_release, label_distribution, release_counts
from common.privacy.ledger import Ledger
from common.privacy.planned import PlannedBudget, planned_releases
from common.saved_model import read_model_folder
from common.schema import Schema
from common.tabular.base import TabularModel
from common.tabular.conditions import parse_conditions, rejection_sample
from common.tabular.label_stats import cells, label_tables, sensitivity
from common.tabular.trainer import Proximal, Trainer, resolve_device
from common.version import __version__

MODEL_CLASSES: dict[str, str] = {"vae": "common.tabular.vae:TabularVAE",
                                 "ddpm": "common.tabular.ddpm:TabDDPM"}
DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 256,        # expected Poisson batch; sampling rate = 1/ceil(n/batch_size)
    "steps": 2000,            # optimizer steps of fit()
    "lr": 1e-3,
    "counts_fraction": None,  # share of epsilon for the label statistics; None: 0.5 with
                              # class-conditional tables (VAE), 0.1 for the label counts alone
    "max_draws_per_record": 200,  # rejection sampling gives up beyond this many candidates/record
    "model": {},              # keyword arguments of the model class
}
FILES = {"state": "tabular.pt", "schema": "schema.yaml", "meta": "tabular.json"}


class TabularSynthesizer(PlannedBudget):
    """A conditional tabular generator of ``kind`` ("vae" or "ddpm") trained under
    (``epsilon``, ``delta``)-DP, or without DP when ``epsilon`` is None (baselines).

    ``ledger`` is where this site's spends are logged (a path, a Ledger, or None for memory only:
    tests and benchmarks), under ``name`` (default ``tabular-KIND``): another model of the same
    site, such as its local-only baseline, keeps its own budget and accountant in the same ledger.
    ``seed`` fixes model initialisation (and batches when not private). The privacy settings
    (``epsilon``, ``delta``, the clipping bound ``max_grad_norm``, ``noise_seed``: None draws the
    DP noise from OS entropy, an integer only for reproducible tests and benchmarks) belong to
    whoever holds the data, never to ``config``, which in a federation is the coordinator's.
    """

    def __init__(self, schema: Schema, kind: str = "vae", epsilon: float | None = 3.0,
                 delta: float = DEFAULT_DELTA, config: Mapping[str, Any] | None = None,
                 device: str = "auto", seed: int = 0, ledger: str | Path | Ledger | None = None,
                 name: str | None = None, noise_seed: int | None = None,
                 max_grad_norm: float = 1.0) -> None:
        self.schema = schema
        self.kind = kind
        self.model_name = name or f"tabular-{kind}"  # this model's spends in the site's ledger
        self.config = resolve_config(config)
        self.device = resolve_device(device)
        self.seed = seed
        self._init_privacy(epsilon, delta, noise_seed, max_grad_norm, ledger)
        self.encoder = TableEncoder(schema)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = _model_class(kind)(self.encoder.spans, self.encoder.n_classes,
                                            **self.config["model"]).to(self.device)
        self.label_counts: np.ndarray | None = None  # what sampling draws labels from
        self._own_counts: np.ndarray | None = None  # this site's release, made once
        self._own_tables: np.ndarray | None = None  # its class-conditional tables (same release)

    # --- training -------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, steps: int | None = None) -> TabularSynthesizer:
        """Noisy label counts, noise calibrated once for ``steps`` (``config['steps']`` if None),
        then training."""
        steps = self.config["steps"] if steps is None else steps
        self.plan(len(df), steps)
        self.release_label_counts(df)
        self.train_steps(df, steps)
        return self

    def _reserved_releases(self, plan: dict[str, Any]) -> list[Entry]:
        """The label statistics' release, unless it was made already."""
        counts = counts_release(self.counts_fraction * self.epsilon, self.delta)
        plan["counts_noise"] = counts[0]
        return [] if self._own_counts is not None else [counts]

    @staticmethod
    def planned_releases(kind: str, config: Mapping[str, Any] | None, epsilon: float, delta: float,
                         n_records: int, planned_steps: int) -> list[Entry]:
        """What ``plan`` will release, without building the model: the label statistics and
        ``planned_steps`` DP-SGD steps (a site checks a whole run against its cap with it)."""
        config = resolve_config(config)
        share = _counts_fraction(config, hasattr(_model_class(kind), "init_from_label_tables"))
        return planned_releases(epsilon, delta, n_records, config["batch_size"], planned_steps,
                                [counts_release(share * epsilon, delta)])

    @property
    def uses_label_tables(self) -> bool:
        """Whether the model starts from class-conditional marginals (see ``label_stats``)."""
        return hasattr(self.model, "init_from_label_tables")

    @property
    def label_table_width(self) -> int | None:
        """Cells per class of the class-conditional tables (None: the model does not use them)."""
        return sum(cells(span) for span in self.encoder.spans) if self.uses_label_tables else None

    @property
    def counts_fraction(self) -> float:
        return _counts_fraction(self.config, self.uses_label_tables)

    def release_label_counts(self, df: pd.DataFrame, round: int | None = None) -> np.ndarray:
        """The label statistics that may leave the site, DP (charged once) when private, exact
        otherwise: the label counts and, for a model that uses them, the class-conditional
        tables (one Gaussian release), which also initialise the model. Returns the counts; later
        calls return the same release (fresh noise would cost budget again)."""
        if self._own_counts is None:
            x, y = self.encoder.encode(df)
            n_classes, spans = self.encoder.n_classes, self.encoder.spans
            exact = np.bincount(y, minlength=n_classes).astype(np.float64)
            tables = label_tables(x, y, spans, n_classes) if self.uses_label_tables else None
            if tables is not None:
                exact = np.concatenate([exact, tables.ravel()])
            if self.private:
                self._require_plan()
                rng = np.random.default_rng(self.noise_seed)  # None: OS entropy
                note = "label counts + class tables" if tables is not None else "label counts"
                exact = release_counts(exact, self.budget, self._plan["counts_noise"], rng,
                                       sensitivity(spans) if tables is not None else 1.0, round,
                                       note=note)
            self._own_counts = np.clip(exact[:n_classes], 0.0, None)
            self.label_counts = self._own_counts
            if tables is not None:
                self._own_tables = exact[n_classes:].reshape(n_classes, -1)
                self.set_label_tables(self._own_tables)
        return self._own_counts.copy()

    def released_label_tables(self) -> np.ndarray | None:
        """This site's class-conditional tables, as released with its counts (None: not used)."""
        return None if self._own_tables is None else self._own_tables.copy()

    def set_label_tables(self, tables: np.ndarray | list[list[float]]) -> None:
        """Initialise the model's label path from (aggregated) tables, e.g. the sum of the sites'
        releases at the server before the first round."""
        tables = np.asarray(tables, dtype=np.float64)
        self.model.init_from_label_tables(tables.reshape(self.encoder.n_classes, -1))

    def set_label_counts(self, counts: np.ndarray | list[float]) -> None:
        """Install (aggregated) label counts, e.g. the sum of the sites' releases at the server."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.encoder.n_classes,):
            raise ValueError(f"expected {self.encoder.n_classes} counts, got shape {counts.shape}")
        self.label_counts = counts

    def train_steps(self, df: pd.DataFrame, k: int, round: int | None = None,
                    proximal_mu: float = 0.0) -> float | None:
        """Exactly ``k`` local steps; refuses, training nothing, if they would exceed the budget.
        ``proximal_mu`` > 0 adds FedProx's pull toward the weights at the start of the call (in a
        federated round: the global model just set); it costs no privacy. Returns epsilon spent
        so far (None without DP)."""
        x, y = self.encoder.encode(df)
        if self._plan is None and not self.private:
            self.plan(len(x), k)
        self._require_plan()
        if len(x) != self._plan["n_records"]:
            raise InputError(f"the run was planned for {self._plan['n_records']} records but the data "
                             f"has {len(x)}; train every round on the same training split.")
        if self._trainer is None:
            self._trainer = self._new_trainer(x, y)
        proximal = (Proximal(proximal_mu, [p.detach().clone() for p in self.model.parameters()])
                    if proximal_mu > 0 else None)
        self.local_loss = self._trainer.train_steps(k, round=round, proximal=proximal)
        return self.epsilon_spent()

    def _new_trainer(self, x: np.ndarray, y: np.ndarray) -> Trainer:
        return self._build_trainer(lambda **kw: Trainer(self.model, x, y, **kw))

    # --- federated weights ----------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """What a round sends: the model's state dict, by parameter name."""
        return {name: t.detach().cpu().numpy().copy() for name, t in self.model.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        state = self.model.state_dict()
        if set(weights) != set(state):
            raise ValueError(f"expected the arrays {sorted(state)}, got {sorted(weights)}")
        new = {}
        for name, old in state.items():
            if tuple(np.shape(weights[name])) != tuple(old.shape):
                raise ValueError(f"{name}: expected shape {tuple(old.shape)}, got {np.shape(weights[name])}")
            new[name] = torch.as_tensor(np.asarray(weights[name]), dtype=old.dtype)
        self.model.load_state_dict(new)

    # --- sampling -------------------------------------------------------------------------
    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        """``n`` synthetic records (modeled columns, schema order). A label condition is direct;
        other conditions are met by rejection sampling within a bounded number of draws."""
        if n < 1:
            raise InputError(f"the number of records to sample must be at least 1 (got {n}).")
        wanted = parse_conditions(self.schema, conditions or {})
        label_value = wanted.pop(self.schema.label.name, None)
        seed = secrets.randbits(63) if seed is None else seed
        rng = np.random.default_rng(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        probs = label_distribution(self.label_counts if self.label_counts is not None
                                   else np.ones(self.encoder.n_classes))
        fixed = None if label_value is None else self.encoder.classes.index(label_value)
        self.model.eval()

        def draw(size: int) -> pd.DataFrame:
            y = (np.full(size, fixed) if fixed is not None
                 else rng.choice(self.encoder.n_classes, size=size, p=probs))
            x = self.model.sample(torch.as_tensor(y, device=self.device), generator)
            return self.encoder.decode(x.detach().cpu().numpy(), y)

        return rejection_sample(draw, n, wanted, n * self.config["max_draws_per_record"],
                                conditions or {})

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue at this site, or to sample: weights, counts, plan,
        optimizer, and the accountant history (checked against the ledger on load)."""
        return {
            "kind": self.kind, "seed": self.seed, "config": self.config,
            "model": self.model.state_dict(),
            "label_counts": _as_list(self.label_counts), "own_counts": _as_list(self._own_counts),
            "own_tables": _as_list(self._own_tables), **self._privacy_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore into a synthesizer that has not trained yet (training hooks are attached once)."""
        if self._trainer is not None:
            raise RuntimeError("load_state_dict needs a synthesizer that has not trained; build a "
                               "fresh one (or use TabularSynthesizer.load)")
        if (state["kind"], state["config"]) != (self.kind, self.config):
            raise InputError(f"the saved state is a {state['kind']!r} generator with config "
                             f"{state['config']}; build the synthesizer with the same kind and "
                             f"config (or use TabularSynthesizer.load).")
        self.model.load_state_dict(state["model"])
        self.label_counts, self._own_counts = (_as_array(state["label_counts"]),
                                               _as_array(state["own_counts"]))
        self._own_tables = _as_array(state.get("own_tables"))
        self._restore_privacy_state(state)

    def save(self, folder: str | Path) -> None:
        """Write ``tabular.pt`` (state), ``schema.yaml`` and ``tabular.json`` (kind, config,
        budget, version, schema hash) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self.state_dict(), folder / FILES["state"])
        atomic_write_text(folder / FILES["schema"], self.schema.to_yaml())
        meta = {"kind": self.kind, "config": self.config, "epsilon": self.epsilon,
                "delta": self.delta, "max_grad_norm": self.max_grad_norm,
                "epsilon_spent": self.epsilon_spent(),
                "fedsynth_version": __version__, "schema_hash": self.schema.hash}
        atomic_write_text(folder / FILES["meta"], json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto",
             ledger: str | Path | Ledger | None = None) -> TabularSynthesizer:
        folder = Path(folder)
        meta, schema = read_model_folder(folder, FILES, "tabular model")
        state = torch.load(folder / FILES["state"], map_location="cpu", weights_only=True)
        synth = cls(schema, kind=meta["kind"], epsilon=meta["epsilon"], delta=meta["delta"],
                    config=meta["config"], device=device, seed=state["seed"], ledger=ledger)
        synth.load_state_dict(state)
        return synth


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Like ``atomic_write_text``: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _as_list(array: np.ndarray | None) -> list[float] | None:
    return None if array is None else array.tolist()


def _as_array(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise InputError(f"unknown tabular config key(s) {unknown}; allowed: {sorted(DEFAULT_CONFIG)}.")
    resolved = {**DEFAULT_CONFIG, **config}
    if resolved["counts_fraction"] is not None and not 0 < resolved["counts_fraction"] < 1:
        raise InputError(f"counts_fraction must lie in (0, 1), got {resolved['counts_fraction']}.")
    try:  # the config is saved in tabular.json: JSON types only (tuples become lists)
        return json.loads(json.dumps(resolved))
    except TypeError as exc:
        raise InputError(f"the tabular config must hold plain values (numbers, strings, lists, "
                         f"mappings): {exc}.") from None


def _counts_fraction(config: Mapping[str, Any], uses_label_tables: bool) -> float:
    configured = config["counts_fraction"]
    return configured if configured is not None else 0.5 if uses_label_tables else 0.1


def _model_class(kind: str) -> type[TabularModel]:
    if kind not in MODEL_CLASSES:
        raise InputError(f"unknown generator {kind!r}; use one of {sorted(MODEL_CLASSES)}.")
    module, name = MODEL_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)
