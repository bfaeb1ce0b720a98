"""Everything a site answers, by Flower message type: the handshake, each stage type's site half,
and the two steps of evaluating the release. The ClientApp looks the action up here and runs it
through the site's privacy boundary (``client.boundary``); nothing here knows Flower.

Every action takes the site's own settings and the coordinator's request, and returns what the
site releases (or raises: a refusal, a spent budget, bad data), and is safe to call again with
the same request: stage replies are answered from disk the second time (``SiteRun.replay``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from common.handshake import check_compatibility
from common.run_plan import PlanRefused, RequestRefused, RunPlan
from common.schema import Schema
from common.site_config import SiteConfig
from common.stages import STAGE_TYPES, stages_of
from common.stages.base import Payload
from common.stages.release import announce, score
from common.stages.site import SiteRun
from common.version import __version__

SiteAction = Callable[[SiteConfig, Payload], Payload]


def handshake(config: SiteConfig, request: Payload) -> Payload:
    """Accept the run, or raise why not: the site asked to be left out, a different schema or
    release, a plan it refuses, invalid data, or a run its lifetime cap cannot cover (checked
    for the whole plan before anything is computed)."""
    if config.exclude:
        raise RequestRefused("the site asked to be excluded (node config exclude=true).")
    schema = Schema.load(config.schema_path)
    verdict = check_compatibility(schema.hash, __version__, str(request.values.get("schema_hash")),
                                  str(request.values.get("version")))
    if not verdict.accepted:
        raise RequestRefused(verdict.reason)
    run = _site_run(config, request, schema)
    run.check_plan()
    run.account.check_run(run.plan.run, run.planned_releases())
    return Payload(values={"site": config.name, "version": __version__})


def run_stage(config: SiteConfig, request: Payload, message_type: str) -> Payload:
    """The site half of the plan's stage ``request.values['stage']``, step ``step``: answered
    from disk when it was answered before."""
    run = _site_run(config, request)
    stages = stages_of(run.plan)
    index = int(request.values.get("stage", -1))
    if not 0 <= index < len(stages) or stages[index].message_type != message_type:
        raise PlanRefused(f"{message_type} names stage {index}, which is not a "
                          f"{message_type} stage of the plan.")
    stage = stages[index]
    key = f"{stage.name}-{int(request.values.get('step', 0)):04d}"
    return run.replay(key, lambda: stage.release(run, request))


def _site_run(config: SiteConfig, request: Payload, schema: Schema | None = None) -> SiteRun:
    return SiteRun(config, RunPlan.from_json(str(request.values.get("plan", ""))), schema)


SITE_ACTIONS: dict[str, SiteAction] = {
    "query.handshake": handshake,
    **{cls.message_type: partial(run_stage, message_type=cls.message_type)
       for cls in STAGE_TYPES.values()},
    "query.announce": lambda config, request: announce(_site_run(config, request), request),
    "evaluate.release": lambda config, request: score(_site_run(config, request), request),
}
