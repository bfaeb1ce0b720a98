"""Stage ``label_counts``: each site's DP label counts (and, for a generator that uses them, its
class-conditional tables), in one Gaussian release charged to its ledger.

The coordinator sums the releases (post-processing): the sum gives the global model its label
distribution and, for the VAE, the starting point of its label path; each site's own noisy total
is its FedAvg weight in later stages, so no exact site size ever leaves a site.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.stages.base import Coordinator, CoordinatorContext, Payload, Stage
from common.stages.site import SiteRun


class LabelCounts(Stage):
    type = "label_counts"
    message_type = "query.label_counts"

    def release(self, run: SiteRun, request: Payload) -> Payload:
        name = self.spec.model
        model = run.model(name)
        records = run.records(name)
        model.plan(len(records), self.plan.planned_steps(name))
        counts = model.release_label_counts(records)
        run.save_model(model)
        tables = model.released_label_tables()
        return Payload(arrays={"counts": counts} | ({} if tables is None else {"tables": tables.ravel()}))

    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        return LabelCountsCoordinator(self, ctx)


class LabelCountsCoordinator(Coordinator):
    """One step: ask every site, sum what comes back into the global model."""

    def __init__(self, stage: Stage, ctx: CoordinatorContext) -> None:
        super().__init__(stage, ctx)
        self.model = ctx.models[stage.spec.model]
        width = self.model.label_table_width
        self.expected = {"counts": (self.model.encoder.n_classes,)} | (
            {} if width is None else {"tables": (self.model.encoder.n_classes * width,)})
        self._sums: dict[str, np.ndarray] = {}

    total_steps = 1

    def request(self) -> Payload | None:
        return Payload() if self.step == 0 else None

    def problem(self, node: int, reply: Payload) -> str | None:
        shapes = {name: array.shape for name, array in reply.arrays.items()}
        if shapes != self.expected:
            return f"released arrays {shapes}, expected {self.expected}"
        if not all(np.isfinite(a).all() for a in reply.arrays.values()):
            return "released counts hold NaN or infinite values"
        return None

    def update(self, replies: Mapping[int, Payload]) -> None:
        self.ctx.weights = {node: max(float(r.arrays["counts"].sum()), 1.0) for node, r in replies.items()}
        sums = {name: np.sum([r.arrays[name] for r in replies.values()], axis=0) for name in self.expected}
        self.load_state_dict(Payload(arrays=sums))

    def state_dict(self) -> Payload:
        return Payload(arrays=dict(self._sums), values={"step": self.step})

    def load_state_dict(self, state: Payload) -> None:
        """Install the summed release in the global model (the counts for sampling the label, the
        tables for the VAE's label path)."""
        self._sums = dict(state.arrays)
        self.model.set_label_counts(self._sums["counts"])
        if "tables" in self._sums:
            self.model.set_label_tables(self._sums["tables"])
        self.step = 1
