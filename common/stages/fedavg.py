"""Stage ``fedavg``: rounds of local DP-SGD from the global weights at each site, averaged.

The same stage trains any facade (the tabular generators, the narrative model's adapters): a
round sends the global weights by name, each site takes ``local_steps`` DP-SGD steps from them on
its train split (the whole stage's noise calibrated before its first release, each round charged
before the update leaves), and the coordinator averages the updates that pass ``update_problem``,
weighted by each site's DP record count (``CoordinatorContext.weights``). With ``proximal_mu``
> 0 the sites take FedProx steps (post-noise, so at no privacy cost).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.run_plan import PlanRefused
from common.stages.base import Arrays, Coordinator, CoordinatorContext, Payload, Stage
from common.stages.site import SiteRun


def update_problem(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   max_norm: float) -> str | None:
    """Why ``update`` must be dropped, or None: the wrong arrays, shapes or dtypes, a NaN or
    infinity, or a move further than ``max_norm`` in L2 (one broken or hostile site cannot poison
    the global model)."""
    if set(update) != set(reference):
        return f"has arrays {sorted(set(update) ^ set(reference))[:3]} the global model does not match"
    squared = 0.0
    for name, old in reference.items():
        new = update[name]
        if new.shape != old.shape:
            return f"array {name} has shape {new.shape}, expected {old.shape}"
        if new.dtype != old.dtype:
            return f"array {name} has dtype {new.dtype}, expected {old.dtype}"
        if not np.isfinite(new).all():
            return f"array {name} holds NaN or infinite values"
        squared += float(np.sum((new.astype(np.float64) - old.astype(np.float64)) ** 2))
    norm = squared ** 0.5
    if norm > max_norm:
        return f"moves the model by {norm:.3g} in L2, above the bound {max_norm:g}"
    return None


class FedAvgRounds(Stage):
    type = "fedavg"
    message_type = "train.fedavg"

    @property
    def rounds(self) -> int:
        return int(self.spec.params["rounds"])

    def release(self, run: SiteRun, request: Payload) -> Payload:
        round_ = int(request.values["round"])
        if not 1 <= round_ <= self.rounds or int(request.values.get("step", round_ - 1)) != round_ - 1:
            raise PlanRefused(f"round {round_} (step {request.values.get('step')}) is not one of the "
                              f"planned rounds 1..{self.rounds} (steps 0..{self.rounds - 1}).")
        name = self.spec.model
        model = run.model(name)
        records = run.records(name)
        model.plan(len(records), self.plan.planned_steps(name))
        model.set_weights(request.arrays)
        model.train_steps(records, int(self.spec.params["local_steps"]), round=round_,
                          proximal_mu=float(self.spec.params.get("proximal_mu", 0.0)))
        run.save_model(model)
        return Payload(arrays=model.get_weights())

    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        return FedAvgCoordinator(self, ctx)


class FedAvgCoordinator(Coordinator):
    """Holds the global weights; each step is one round."""

    stage: FedAvgRounds

    def __init__(self, stage: FedAvgRounds, ctx: CoordinatorContext) -> None:
        super().__init__(stage, ctx)
        self.model = ctx.models[stage.spec.model]
        self.weights: Arrays = self.model.get_weights()

    @property
    def total_steps(self) -> int:
        return self.stage.rounds

    def request(self) -> Payload | None:
        if self.step >= self.stage.rounds:
            return None
        return Payload(arrays=self.weights, values={"round": self.step + 1})

    def recipients(self, nodes: list[int]) -> list[int]:
        """Sites with a DP record count: their updates can be weighted."""
        return [node for node in nodes if node in self.ctx.weights]

    def problem(self, node: int, reply: Payload) -> str | None:
        return update_problem(reply.arrays, self.weights, self.ctx.max_update_norm)

    def update(self, replies: Mapping[int, Payload]) -> None:
        nodes = sorted(replies)
        average = self.ctx.average([replies[n].arrays for n in nodes], [self.ctx.weights[n] for n in nodes])
        self.load_state_dict(Payload(arrays=average, values={"step": self.step + 1}))

    def state_dict(self) -> Payload:
        return Payload(arrays=dict(self.weights), values={"step": self.step})

    def load_state_dict(self, state: Payload) -> None:
        self.weights = {name: np.asarray(state.arrays[name], dtype=old.dtype)
                        for name, old in self.weights.items()}
        self.step = int(state.values["step"])
        self.model.set_weights(self.weights)
