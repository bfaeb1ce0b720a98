"""The stage protocol: every model a run trains is a stage with a site half and a coordinator half.

A stage's site half is a DP mechanism on the site's train split: given the coordinator's request,
it charges the site's lifetime ledger, then returns the release (``Stage.release``). Its
coordinator half turns the sites' replies into the next request, or into the global model
(``Coordinator``). Nothing here imports Flower: requests and replies are ``Payload`` objects,
which the ClientApp and the ServerApp carry as Flower records, and averaging is handed in by the
coordinator (``CoordinatorContext.average``), which does it with Flower's record aggregation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from common.run_plan import RunPlan, StageSpec
from common.schema import Schema

if TYPE_CHECKING:
    from common.stages.site import SiteRun

Arrays = dict[str, np.ndarray]
Averager = Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[float]], Arrays]


@dataclass
class Payload:
    """What one message carries, in plain types: named arrays, JSON-able values, byte blobs."""

    arrays: Arrays = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class CoordinatorContext:
    """What the coordinator halves share in one run: the schema and plan, the global models (by
    the plan's model names), each node's FedAvg weight (its DP record count), the bound on an
    update's L2 move, and the averaging function."""

    schema: Schema
    plan: RunPlan
    models: dict[str, Any]
    average: Averager
    max_update_norm: float = 1e3
    weights: dict[int, float] = field(default_factory=dict)


class Coordinator(ABC):
    """A stage's coordinator half: asks (``request``), checks each reply (``problem``), then
    folds the good ones in (``update``), step after step until ``request`` returns None. Its
    state (``state_dict``) is what a checkpoint keeps: loading it redoes the stage's effect on
    the global models, so a restarted coordinator continues after the last finished step."""

    step = 0

    def __init__(self, stage: Stage, ctx: CoordinatorContext) -> None:
        self.stage, self.ctx = stage, ctx

    @abstractmethod
    def request(self) -> Payload | None: ...

    @property
    def total_steps(self) -> int | None:
        """How many steps the stage takes, for a progress display; None when not known ahead."""
        return None

    def recipients(self, nodes: Sequence[int]) -> list[int]:
        """The nodes this step asks (all of them unless the stage needs something of each)."""
        return list(nodes)

    @abstractmethod
    def problem(self, node: int, reply: Payload) -> str | None:
        """Why ``reply`` must not count, or None."""

    @abstractmethod
    def update(self, replies: Mapping[int, Payload]) -> None: ...

    @abstractmethod
    def state_dict(self) -> Payload: ...

    @abstractmethod
    def load_state_dict(self, state: Payload) -> None: ...


class Stage(ABC):
    """One stage of a plan: ``spec`` from the plan, at position ``index``. ``message_type`` is the
    Flower message that carries its requests; ``name`` identifies it in group ids, checkpoints
    and the sites' saved replies."""

    type: ClassVar[str]
    message_type: ClassVar[str]

    def __init__(self, index: int, spec: StageSpec, plan: RunPlan) -> None:
        self.index, self.spec, self.plan = index, spec, plan
        self.model_spec = plan.models[spec.model]

    @property
    def name(self) -> str:
        return f"{self.index + 1}-{self.type}-{self.spec.model}"

    @abstractmethod
    def release(self, run: SiteRun, request: Payload) -> Payload:
        """The site half: the stage's DP release from ``run``'s data, charged before it returns."""

    @abstractmethod
    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        """The coordinator half, for one run."""
