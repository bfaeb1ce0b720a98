"""What the coordinator asks of every site in a run: the models, and the stages that train them.

The plan is the coordinator's, so a site reads it as a request, not as settings: it names model
configurations (identical at every site, so updates can be averaged) and stages in order, never
a privacy parameter. Epsilon, delta, the clipping bound and the noise seed are the site's own
(``common.site_config``); a plan that carries one anywhere is refused (``PlanRefused``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import InputError

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Privacy parameters: the site sets them, a coordinator's plan never does.
SITE_OWNED = frozenset({"dp_seed", "noise_seed", "seed_noise", "max_grad_norm", "clip", "clipping",
                        "noise_multiplier", "sigma", "epsilon", "delta", "sample_rate"})


MARGINAL_KINDS = ("mst", "aim")  # tabular generators fitted to noisy marginals, not trained in rounds
TABULAR_KINDS = ("vae", "ddpm", *MARGINAL_KINDS)
# The best at epsilon 3 on pair trends and detection together (benchmarks/RESULTS.md, 2026-12-01).
DEFAULT_TABULAR_KIND = "mst"


class RequestRefused(InputError):
    """The coordinator asked for something the site does not do. The message quotes only the
    coordinator's own request and the site's public rules, never the site's data, so it may
    travel back verbatim."""


class PlanRefused(RequestRefused):
    """The coordinator's plan breaks a rule the site enforces (e.g. it sets a privacy parameter)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model the run trains: its family (``tabular``, ``text``), kind and shared config."""

    family: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ledger_name(self) -> str:
        """The model's name in a site's ledger (``tabular-vae``, ``text-lora``)."""
        return f"{self.family}-{self.kind}"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the run: its type (``label_counts``, ``fedavg``), the model it trains, and the
    stage type's own parameters (``rounds``, ``local_steps``, ``proximal_mu`` for ``fedavg``)."""

    type: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """The run's name (it names the sites' state for the run, so a resent round is answered from
    disk), the seed of the sites' splits and model initialisation, the models, the stages in
    order, and whether sites that allow it also train a local-only baseline."""

    run: str
    seed: int
    models: dict[str, ModelSpec]
    stages: tuple[StageSpec, ...]
    local_only: bool = False

    def __post_init__(self) -> None:
        if not _RUN_NAME.match(self.run):
            raise PlanRefused(f"run name {self.run!r} is not a safe folder name (letters, digits, "
                              f"'_', '.', '-').")
        for name, spec in self.models.items():
            owned = sorted(_site_owned_keys(spec.config))
            if owned:
                raise PlanRefused(f"the plan's {name} model config sets {owned}: privacy parameters "
                                  f"only a site sets (its node config), never a coordinator's plan. "
                                  f"Remove them from the run config.")
        for stage in self.stages:
            if stage.model not in self.models:
                raise PlanRefused(f"stage {stage.type} trains model {stage.model!r}, which the plan "
                                  f"does not define (models: {sorted(self.models)}).")

    @property
    def has_text(self) -> bool:
        return any(spec.family == "text" for spec in self.models.values())

    def stages_of(self, model: str) -> Iterator[StageSpec]:
        return (stage for stage in self.stages if stage.model == model)

    def planned_steps(self, model: str) -> int:
        """Every DP-SGD step the plan's stages take on ``model`` (the noise is calibrated for all)."""
        return sum(int(s.params.get("rounds", 0)) * int(s.params.get("local_steps", 0))
                   for s in self.stages_of(model))

    def to_json(self) -> str:
        return json.dumps({"run": self.run, "seed": self.seed, "local_only": self.local_only,
                           "models": {n: vars(m) for n, m in self.models.items()},
                           "stages": [vars(s) for s in self.stages]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        try:
            data = json.loads(text)
            return cls(run=str(data["run"]), seed=int(data["seed"]),
                       local_only=bool(data.get("local_only", False)),
                       models={str(n): ModelSpec(str(m["family"]), str(m["kind"]), dict(m["config"]))
                               for n, m in data["models"].items()},
                       stages=tuple(StageSpec(str(s["type"]), str(s["model"]), dict(s["params"]))
                                    for s in data["stages"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanRefused(f"the run plan is not a fedsynth plan ({type(exc).__name__}: {exc}); "
                              f"coordinator and site must run the same fedsynth release.") from None

    @classmethod
    def standard(cls, run: str, seed: int, kind: str, rounds: int, local_steps: int,
                 tabular_config: Mapping[str, Any], proximal_mu: float = 0.0,
                 text_config: Mapping[str, Any] | None = None, text_rounds: int = 0,
                 text_local_steps: int = 0, local_only: bool = False) -> RunPlan:
        """The run fedsynth makes: the tabular generator (a marginal model, ``mst``/``aim``, in one
        stage of measurements; a deep one, ``vae``/``ddpm``, as its label statistics then FedAvg
        rounds), then (with a text config) FedAvg rounds of the narrative model's adapters and/or
        its private-evolution vote rounds (``pe`` in the text config)."""
        if not proximal_mu >= 0:
            raise InputError(f"proximal_mu must be >= 0 (0 is FedAvg), got {proximal_mu}.")
        pe_rounds = int(((text_config or {}).get("pe") or {}).get("rounds", 0))
        if text_config is not None and pe_rounds < 1 and (text_rounds < 1 or text_local_steps < 1):
            raise InputError(f"a run with narratives needs private-evolution rounds, or text "
                             f"rounds and local steps >= 1 (got {text_rounds} and {text_local_steps}).")
        models = {"tabular": ModelSpec("tabular", kind, dict(tabular_config))}
        stages = [StageSpec("marginals", "tabular")] if kind in MARGINAL_KINDS else [
            StageSpec("label_counts", "tabular"),
            StageSpec("fedavg", "tabular", {"rounds": rounds, "local_steps": local_steps,
                                            "proximal_mu": proximal_mu})]
        if text_config is not None:
            models["text"] = ModelSpec("text", "lora", dict(text_config))
            if text_rounds > 0 and text_local_steps > 0:
                stages.append(StageSpec("fedavg", "text", {"rounds": text_rounds,
                                                           "local_steps": text_local_steps,
                                                           "proximal_mu": 0.0}))
            if pe_rounds > 0:  # after DP-LoRA: the trained adapter writes the candidates
                stages.append(StageSpec("pe", "text", {"records_from": "tabular"}))
        return cls(run=run, seed=seed, models=models, stages=tuple(stages), local_only=local_only)


def _site_owned_keys(value: Any) -> set[str]:
    """Keys anywhere in a nested config that name a privacy parameter."""
    if isinstance(value, Mapping):
        return ({str(k) for k in value if str(k).lower() in SITE_OWNED}
                | set().union(*(_site_owned_keys(v) for v in value.values())))
    if isinstance(value, list):
        return set().union(*(_site_owned_keys(v) for v in value))
    return set()
