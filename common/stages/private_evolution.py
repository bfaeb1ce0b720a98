"""Stage ``pe``: private evolution of the narrative model's style examples, in vote rounds.

Coordinator: draws ``pool_records`` records from the global tabular model (post-processing),
keeps ``candidates`` per key, writes each one's note with the (warm-started) narrative model and
drops the notes the consistency gate rejects. Each round sends the candidates' notes and keys;
each site embeds its train notes, lets each vote for its nearest candidate of its own key, adds
its planned Gaussian noise to the histogram (charged to its ledger under the narrative model,
"PE votes t/T", before the noise is drawn) and returns it. The coordinator sums the histograms;
between rounds it rewrites every key's weaker half in the manner of its stronger half; after the
last round the voted notes become the narrative model's examples (``NarrativeModel.examples``).
The rounds and the noise are planned with the model (its config's ``pe``), like DP-SGD's steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from common.run_plan import PlanRefused
from common.stages.base import Coordinator, CoordinatorContext, Payload, Stage
from common.stages.site import SiteRun
from common.text.private_evolution import CandidatePool, evolve

log = logging.getLogger("fedsynth.server")
MAX_CANDIDATES = 20_000  # what a site embeds per round at most (a bound on a request's work)


class PrivateEvolution(Stage):
    type = "pe"
    message_type = "query.pe"

    def release(self, run: SiteRun, request: Payload) -> Payload:
        model, records = run.model(self.spec.model), run.records(self.spec.model)
        rounds = int(model.config["pe"]["rounds"])
        round_ = int(request.values.get("step", -1)) + 1
        if not 1 <= round_ <= rounds:
            raise PlanRefused(f"the pe stage has rounds 1..{rounds}, not {round_}.")
        texts, keys = request.values.get("texts"), request.values.get("keys")
        if (not isinstance(texts, list) or not isinstance(keys, list) or len(texts) != len(keys)
                or not 0 < len(texts) <= MAX_CANDIDATES):
            raise PlanRefused(f"a pe request carries up to {MAX_CANDIDATES} candidate notes and as "
                              f"many keys, as lists of strings.")
        model.plan(len(records), self.plan.planned_steps(self.spec.model))
        votes = model.release_votes(records, [str(t) for t in texts], [str(k) for k in keys], round_)
        run.save_model(model)
        return Payload(arrays={"votes": votes})

    def coordinator(self, ctx: CoordinatorContext) -> Coordinator:
        return PrivateEvolutionCoordinator(self, ctx)


class PrivateEvolutionCoordinator(Coordinator):
    """The candidate pool, round after round; the tabular model must be trained already."""

    def __init__(self, stage: Stage, ctx: CoordinatorContext) -> None:
        super().__init__(stage, ctx)
        self.model = ctx.models[stage.spec.model]
        self.settings = self.model.config["pe"]
        self.pool: CandidatePool | None = None

    @property
    def rounds(self) -> int:
        return int(self.settings["rounds"])

    def _write(self, frame: pd.DataFrame) -> list[str | None]:
        """Notes for ``frame``'s records; None where the gate still rejects one."""
        from common.text.narrative_model import FLAG_COLUMN

        with tqdm(total=len(frame), desc=f"PE candidates, round {self.step + 1}", unit="note",
                  leave=False, disable=None) as bar:
            written = self.model.sample(frame, seed=self.ctx.plan.seed + self.step, progress=bar)
        return [None if flagged else str(text) for text, flagged in
                zip(written[self.ctx.schema.narrative.name], written[FLAG_COLUMN], strict=True)]

    def _first_pool(self) -> CandidatePool:
        """Candidates from the released tabular model, their notes written and gated."""
        tabular = self.ctx.models[self.stage.spec.params.get("records_from", "tabular")]
        records = tabular.sample(int(self.settings["pool_records"]), seed=self.ctx.plan.seed)
        pool = CandidatePool.draw(records, self.model.checker.columns, int(self.settings["candidates"]))
        texts = self._write(pool.frame())
        keep = [i for i, text in enumerate(texts) if text is not None]
        return CandidatePool([pool.records[i] for i in keep], [pool.keys[i] for i in keep],
                             [texts[i] for i in keep])

    @property
    def total_steps(self) -> int:
        return self.rounds

    def request(self) -> Payload | None:
        if self.step >= self.rounds:
            return None
        if self.pool is None:
            self.pool = self._first_pool()
            if not self.pool.texts:  # nothing to vote on: the sites' planned rounds go unspent
                log.warning("private evolution: the gate rejected every candidate note (the model "
                            "does not write notes that name their record); no vote rounds, no "
                            "style examples")
        if not self.pool.texts:
            return None
        return Payload(values={"texts": self.pool.texts, "keys": self.pool.keys})

    def problem(self, node: int, reply: Payload) -> str | None:
        votes = reply.arrays.get("votes")
        if votes is None or votes.shape != (len(self.pool.texts),):
            return f"the vote histogram does not have one bin per candidate ({len(self.pool.texts)})"
        if not np.isfinite(votes).all():
            return "the vote histogram holds NaN or infinite values"
        return None

    def update(self, replies: Mapping[int, Payload]) -> None:
        self.pool.votes = [float(v) for v in np.sum([replies[n].arrays["votes"] for n in sorted(replies)],
                                                    axis=0)]
        self.step += 1
        if self.step < self.rounds:
            from common.text.serialize import EXAMPLE_COLUMN

            evolve(self.pool, self._write, EXAMPLE_COLUMN)
        else:
            self.model.examples = self.pool.examples()

    def state_dict(self) -> Payload:
        return Payload(values={"step": self.step, "pool": None if self.pool is None else self.pool.to_json()})

    def load_state_dict(self, state: Payload) -> None:
        self.step = int(state.values["step"])
        pool = state.values.get("pool")
        self.pool = None if pool is None else CandidatePool.from_json(pool)
        if self.pool is not None and self.step >= self.rounds:
            self.model.examples = self.pool.examples()
