"""Stage ``mst``: federated MST (``common.marginal``) in three steps, one Gaussian release each.

Step 1: every site's noisy 1-way marginals (with its site code and noise multiplier, both public);
the coordinator compresses small cells and sends the compression. Step 2: each site's noisy
scores of the candidate feature pairs; the coordinator picks the label's pairs and a maximum
spanning tree. Step 3: each site's noisy marginals of the chosen cliques; the coordinator fits
the graphical model. The site's noise is planned once for the three releases from its share.
Each site's noisy label total is its FedAvg weight for any later stage (the narrative rounds).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import torch

from common.marginal.model import Release, noisy_size
from common.run_plan import PlanRefused
from common.stages.base import Coordinator, CoordinatorContext, Payload, Stage
from common.stages.site import SiteRun

STEPS = 3
ONE_WAY, SCORES, TABLE, MAPPING = "1way:", "scores", "table:", "cells:"


class MarginalMeasurements(Stage):
    type = "mst"
    message_type = "query.marginals"

    def release(self, run: SiteRun, request: Payload) -> Payload:
        step = int(request.values.get("step", -1))
        name = self.spec.model
        model, records = run.model(name), run.records(name)
        model.plan(len(records))
        mapping = {k[len(MAPPING):]: v.astype(np.int64) for k, v in request.arrays.items()
                   if k.startswith(MAPPING)}
        if step == 0:
            parts = model.release_one_ways(records)
            reply = Payload(arrays={ONE_WAY + a: v for a, v in parts.items()},
                            values={"site_code": model.site_code(records)})
        elif step == 1:
            pairs = [tuple(p) for p in request.values["pairs"]]
            reply = Payload(arrays={SCORES: model.release_scores(records, pairs, mapping)})
        elif step == 2:
            cliques = [tuple(c) for c in request.values["cliques"]]
            tables = model.release_tables(records, cliques, mapping)
            reply = Payload(arrays={f"{TABLE}{i}": t for i, t in enumerate(tables)})
        else:
            raise PlanRefused(f"the mst stage has steps 0..{STEPS - 1}, not {step}.")
        run.save_model(model)
        reply.values["noise"] = model.noise_multiplier(step)  # the share's and delta's alone
        return reply

    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        return MarginalsCoordinator(self, ctx)


class MarginalsCoordinator(Coordinator):
    """Sums, compresses, selects and fits, on the global ``MarginalSynthesizer``."""

    def __init__(self, stage: Stage, ctx: CoordinatorContext) -> None:
        super().__init__(stage, ctx)
        self.model = ctx.models[stage.spec.model]
        self.codes: dict[int, int] = {}  # node -> site code
        self.noise: dict[int, float] = {}  # node -> noise multiplier

    def request(self) -> Payload | None:
        mapping = {MAPPING + a: cells for a, cells in self.model.mapping.items()}
        if self.step == 0:
            return Payload()
        if self.step == 1:
            return Payload(arrays=mapping, values={"pairs": [list(p) for p in self.model.candidates()]})
        if self.step == 2:
            return Payload(arrays=mapping, values={"cliques": [list(c) for c in self.model.cliques]})
        return None

    def recipients(self, nodes: list[int]) -> list[int]:
        """After the first step, the sites whose 1-ways are in the model."""
        return list(nodes) if self.step == 0 else [n for n in nodes if n in self.codes]

    def problem(self, node: int, reply: Payload) -> str | None:
        expected = self._expected()
        shapes = {name: array.shape for name, array in reply.arrays.items()}
        if shapes != expected:
            return f"released arrays {sorted(shapes)[:4]}... do not match the request"
        if not all(np.isfinite(a).all() for a in reply.arrays.values()):
            return "released values hold NaN or infinite values"
        if not float(reply.values.get("noise") or 0) > 0:
            return "the release carries no valid noise multiplier"
        if self.step == 0 and not -1 <= int(reply.values.get("site_code", -2)) < 10**6:
            return "the release carries no valid site code"
        return None

    def _expected(self) -> dict[str, tuple[int, ...]]:
        from common.marginal import mst

        sizes, mapping = self.model.sizes, self.model.mapping
        if self.step == 0:
            return {ONE_WAY + a: (sizes[a],) for a in self.model.cells.names}
        if self.step == 1:
            return {SCORES: (len(self.model.candidates()),)}
        return {f"{TABLE}{i}": (int(np.prod([mst.compressed_size(a, sizes, mapping) for a in cl])),)
                for i, cl in enumerate(self.model.cliques)}

    def update(self, replies: Mapping[int, Payload]) -> None:
        nodes = sorted(replies)
        if self.step == 0:
            self.codes = {n: int(replies[n].values["site_code"]) for n in nodes}
            self.noise = {n: float(replies[n].values["noise"]) for n in nodes}
            parts = {n: {k[len(ONE_WAY):]: v for k, v in replies[n].arrays.items()} for n in nodes}
            self.model.after_one_ways([Release(self.codes[n], self.noise[n], parts[n]) for n in nodes])
            self.ctx.weights = {n: noisy_size(parts[n]) for n in nodes}
        elif self.step == 1:
            self.model.choose_cliques(np.sum([replies[n].arrays[SCORES] for n in nodes], axis=0))
        else:
            tables = {n: [replies[n].arrays[f"{TABLE}{i}"] for i in range(len(self.model.cliques))]
                      for n in nodes}
            self.model.after_tables([Release(self.codes[n], float(replies[n].values["noise"]), tables[n])
                                     for n in nodes])
        self.step += 1

    def state_dict(self) -> Payload:
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        return Payload(arrays={"model": np.frombuffer(buffer.getvalue(), dtype=np.uint8)},
                       values={"step": self.step, "codes": {str(n): c for n, c in self.codes.items()},
                               "noise": {str(n): z for n, z in self.noise.items()}})

    def load_state_dict(self, state: Payload) -> None:
        saved = torch.load(io.BytesIO(state.arrays["model"].tobytes()), weights_only=True)
        self.model.load_state_dict(saved)
        self.step = int(state.values["step"])
        self.codes = {int(n): int(c) for n, c in state.values["codes"].items()}
        self.noise = {int(n): float(z) for n, z in state.values["noise"].items()}
