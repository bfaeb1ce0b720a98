"""Phase 1 of a run: ask every connected site for its schema hash and version."""

from __future__ import annotations

import logging
import time

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.schema import Schema
from fedsynth import __version__

log = logging.getLogger("fedsynth.server")


class QuorumError(RuntimeError):
    """Too few sites answered or were accepted; the run stops with this message."""


def run_handshake(grid: Grid, schema: Schema, min_sites: int, timeout_s: float,
                  reply_timeout_s: float = 120.0) -> dict[int, str]:
    """Return {node_id: site name} of accepted sites; log every refusal with its reason.

    ``timeout_s`` bounds the wait for sites to connect; replies then get ``reply_timeout_s`` of
    their own (a site's ClientApp process takes seconds to start)."""
    deadline = time.monotonic() + timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < min_sites and time.monotonic() < deadline:
        time.sleep(1.0)
        node_ids = list(grid.get_node_ids())
    offer = ConfigRecord({"schema_hash": schema.hash, "version": __version__})
    messages = [Message(RecordDict({"handshake": offer}), dst_node_id=node, message_type="query.handshake")
                for node in node_ids]
    replies = grid.send_and_receive(messages, timeout=reply_timeout_s)
    accepted: dict[int, str] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("site %s failed the handshake: %s", node, reply.error.reason)
            continue
        answer = reply.content["handshake"]
        if answer["accepted"]:
            accepted[node] = str(answer["site"])
        else:
            log.warning("site %s (%s) excluded: %s", answer["site"], node, answer["reason"])
    if len(accepted) < min_sites:
        raise QuorumError(f"only {len(accepted)} site(s) passed the handshake; the run needs "
                          f"{min_sites} (run config min-sites). See the warnings above.")
    return accepted
