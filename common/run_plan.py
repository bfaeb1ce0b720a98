"""What the coordinator asks of every site in a run: shared so that updates can be averaged."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from common.errors import InputError

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunPlan:
    """What the coordinator asks of every site; identical for all sites so updates can be averaged."""

    run: str
    kind: str
    rounds: int
    local_steps: int
    seed: int
    tabular_config: dict[str, Any]
    proximal_mu: float = 0.0  # FedProx's mu for non-IID sites; 0 is plain FedAvg
    text_config: dict[str, Any] | None = None  # the narrative model's (NarrativeModel); None: no text
    text_rounds: int = 0
    text_local_steps: int = 0

    @property
    def has_text(self) -> bool:
        return self.text_config is not None and self.text_rounds > 0

    def __post_init__(self) -> None:
        if not self.proximal_mu >= 0:
            raise InputError(f"proximal_mu must be >= 0 (0 is FedAvg), got {self.proximal_mu}.")
        if self.text_config is not None and (self.text_rounds < 1 or self.text_local_steps < 1):
            raise InputError(f"a run with narratives needs text rounds and local steps >= 1 (got "
                             f"{self.text_rounds} and {self.text_local_steps}).")

    def to_config(self) -> dict[str, Any]:
        return {"run": self.run, "kind": self.kind, "rounds": self.rounds,
                "local_steps": self.local_steps, "seed": self.seed,
                "tabular_config": json.dumps(self.tabular_config, sort_keys=True),
                "proximal_mu": self.proximal_mu,
                "text_config": json.dumps(self.text_config, sort_keys=True),
                "text_rounds": self.text_rounds, "text_local_steps": self.text_local_steps}

    @classmethod
    def from_config(cls, config: Any) -> RunPlan:
        run = str(config["run"])
        if not _RUN_NAME.match(run):
            raise InputError(f"run name {run!r} is not a safe folder name.")
        return cls(run=run, kind=str(config["kind"]), rounds=int(config["rounds"]),
                   local_steps=int(config["local_steps"]), seed=int(config["seed"]),
                   tabular_config=json.loads(str(config["tabular_config"])),
                   proximal_mu=float(config["proximal_mu"]),
                   text_config=json.loads(str(config.get("text_config", "null"))),
                   text_rounds=int(config.get("text_rounds", 0)),
                   text_local_steps=int(config.get("text_local_steps", 0)))
