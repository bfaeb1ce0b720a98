"""The stage types a plan may use, by name (``common.stages.base`` has the protocol)."""

from __future__ import annotations

from common.run_plan import PlanRefused, RunPlan
from common.stages.base import Stage
from common.stages.fedavg import FedAvgRounds
from common.stages.label_counts import LabelCounts
from common.stages.marginals import MarginalMeasurements
from common.stages.private_evolution import PrivateEvolution

STAGE_TYPES: dict[str, type[Stage]] = {cls.type: cls for cls in (LabelCounts, FedAvgRounds,
                                                                  MarginalMeasurements,
                                                                  PrivateEvolution)}


def stages_of(plan: RunPlan) -> list[Stage]:
    """The plan's stages, in order; a stage type this release does not know refuses the plan."""
    unknown = sorted({s.type for s in plan.stages} - set(STAGE_TYPES))
    if unknown:
        raise PlanRefused(f"the plan has stage type(s) {unknown}; this site runs "
                          f"{sorted(STAGE_TYPES)}. Coordinator and site must run the same release.")
    return [STAGE_TYPES[spec.type](i, spec, plan) for i, spec in enumerate(plan.stages)]
