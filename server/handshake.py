"""Phase 1 of a run: every connected site checks the schema, the release and the whole plan (its
lifetime privacy cap included), and says which site it is."""

from __future__ import annotations

import logging
import time
from collections import Counter

from flwr.serverapp import Grid

from common.run_plan import RunPlan
from common.schema import Schema
from common.stages.base import Payload
from common.version import __version__
from server.messaging import send

log = logging.getLogger("fedsynth.server")


class QuorumError(RuntimeError):
    """Too few sites answered or were accepted; the run stops with this message."""


def run_handshake(grid: Grid, schema: Schema, plan: RunPlan, min_sites: int, timeout_s: float,
                  reply_timeout_s: float = 120.0) -> dict[int, str]:
    """Return {node_id: site name} of accepted sites; log every refusal with its reason.

    ``timeout_s`` bounds the wait for sites to connect; replies then get ``reply_timeout_s`` of
    their own (a site's ClientApp process takes seconds to start). Two nodes that give the same
    site name are both left out: the report could not tell them apart."""
    deadline = time.monotonic() + timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < min_sites and time.monotonic() < deadline:
        time.sleep(1.0)
        node_ids = list(grid.get_node_ids())
    offer = Payload(values={"schema_hash": schema.hash, "version": __version__, "plan": plan.to_json()})
    replies = send(grid, node_ids, "query.handshake", offer, reply_timeout_s, group="handshake")
    names = {node: str(reply.values["site"]) for node, reply in replies.items()}
    clashes = {name for name, n in Counter(names.values()).items() if n > 1}
    for name in sorted(clashes):
        nodes = sorted(node for node, n in names.items() if n == name)
        log.error("nodes %s all call themselves site %r (a site's default name is its data file's "
                  "name): each SuperNode needs its own site-name in --node-config; all of them are "
                  "left out of this run", nodes, name)
    accepted = {node: name for node, name in names.items() if name not in clashes}
    if len(accepted) < min_sites:
        raise QuorumError(f"only {len(accepted)} site(s) passed the handshake; the run needs "
                          f"{min_sites} (run config min-sites). See the warnings above.")
    return accepted
