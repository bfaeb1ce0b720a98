"""Stage ``marginals``: a marginal model (``common.marginal``, MST or AIM by the model's kind) as
the mechanism's steps, one Gaussian release per site each.

Step 0: every site's noisy 1-way marginals (with its site code and noise multiplier, both
public); the coordinator compresses small cells. Then scores and measurements in turn: each
site's noisy scores of the candidate cliques (MST: pairs against the product of its own 1-ways;
AIM: pairs and label triples against the current model), the coordinator's choice, and each
site's noisy marginals of the chosen cliques, after which the coordinator refits the graphical
model. MST takes one turn (3 steps), AIM its planned rounds. The site's noise is planned once
for all steps from its share. Each site's noisy size (from its 1-ways) is its FedAvg weight for
any later stage (the narrative rounds).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import torch

from common.marginal.model import MarginalSynthesizer, Query, Release, noisy_size
from common.run_plan import PlanRefused
from common.stages.base import Coordinator, CoordinatorContext, Payload, Stage
from common.stages.site import SiteRun

MAPPING, MODEL = "cells:", "model:"


def _to_payload(query: Query) -> Payload:
    arrays = {MAPPING + a: cells for a, cells in query.mapping.items()}
    arrays.update({f"{MODEL}{i}": table for i, table in enumerate(query.model)})
    return Payload(arrays=arrays, values={"cliques": [list(c) for c in query.cliques],
                                          "rows": list(query.rows)})


def _from_payload(request: Payload) -> Query:
    arrays = request.arrays
    model = [arrays[f"{MODEL}{i}"] for i in range(sum(k.startswith(MODEL) for k in arrays))]
    return Query(tuple(tuple(c) for c in request.values.get("cliques", [])),
                 {k[len(MAPPING):]: v.astype(np.int64) for k, v in arrays.items() if k.startswith(MAPPING)},
                 tuple(np.asarray(m, dtype=np.float64) for m in model),
                 tuple(int(r) for r in request.values.get("rows", [])))


class MarginalMeasurements(Stage):
    type = "marginals"
    message_type = "query.marginals"

    def release(self, run: SiteRun, request: Payload) -> Payload:
        step = int(request.values.get("step", -1))
        model, records = run.model(self.spec.model), run.records(self.spec.model)
        if not isinstance(model, MarginalSynthesizer):
            raise PlanRefused(f"the marginals stage trains a marginal model (mst, aim), not "
                              f"{self.model_spec.kind}.")
        if not 0 <= step < model.steps:
            raise PlanRefused(f"the marginals stage of this model has steps 0..{model.steps - 1}, "
                              f"not {step}.")
        model.plan(len(records))
        reply = Payload(arrays=model.release(records, step, _from_payload(request)))
        if step == 0:
            reply.values["site_code"] = model.site_code(records)
        run.save_model(model)
        reply.values["noise"] = model.noise_multiplier(step)  # the share's and delta's alone
        return reply

    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        return MarginalsCoordinator(self, ctx)


class MarginalsCoordinator(Coordinator):
    """The steps of the global ``MarginalSynthesizer``: ask, check, absorb."""

    def __init__(self, stage: Stage, ctx: CoordinatorContext) -> None:
        super().__init__(stage, ctx)
        self.model: MarginalSynthesizer = ctx.models[stage.spec.model]
        self.codes: dict[int, int] = {}  # node -> site code

    @property
    def total_steps(self) -> int:
        return self.model.steps

    def request(self) -> Payload | None:
        return _to_payload(self.model.query(self.step)) if self.step < self.model.steps else None

    def recipients(self, nodes: list[int]) -> list[int]:
        """After the first step, the sites whose 1-ways are in the model."""
        return list(nodes) if self.step == 0 else [n for n in nodes if n in self.codes]

    def problem(self, node: int, reply: Payload) -> str | None:
        shapes = {name: array.shape for name, array in reply.arrays.items()}
        if shapes != self.model.expected_shapes(self.step):
            return f"released arrays {sorted(shapes)[:4]}... do not match the request"
        if not all(np.isfinite(a).all() for a in reply.arrays.values()):
            return "released values hold NaN or infinite values"
        if not float(reply.values.get("noise") or 0) > 0:
            return "the release carries no valid noise multiplier"
        if self.step == 0 and not -1 <= int(reply.values.get("site_code", -2)) < 10**6:
            return "the release carries no valid site code"
        return None

    def update(self, replies: Mapping[int, Payload]) -> None:
        nodes = sorted(replies)
        if self.step == 0:
            self.codes = {n: int(replies[n].values["site_code"]) for n in nodes}
            self.ctx.weights = {n: noisy_size(replies[n].arrays) for n in nodes}
        self.model.absorb(self.step, [Release(self.codes[n], float(replies[n].values["noise"]),
                                              replies[n].arrays) for n in nodes])
        self.step += 1

    def state_dict(self) -> Payload:
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        return Payload(arrays={"model": np.frombuffer(buffer.getvalue(), dtype=np.uint8)},
                       values={"step": self.step, "codes": {str(n): c for n, c in self.codes.items()},
                               "weights": {str(n): w for n, w in self.ctx.weights.items()}})

    def load_state_dict(self, state: Payload) -> None:
        saved = torch.load(io.BytesIO(state.arrays["model"].tobytes()), weights_only=True)
        self.model.load_state_dict(saved)
        self.step = int(state.values["step"])
        self.codes = {int(n): int(c) for n, c in state.values["codes"].items()}
        self.ctx.weights = {int(n): float(w) for n, w in state.values.get("weights", {}).items()}
