"""Requests to the sites of a run and their replies, keyed by Flower node id (two sites can never
merge, whatever they call themselves); error replies are logged and left out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.stages.base import Payload

log = logging.getLogger("fedsynth.server")
PULL_INTERVAL_S = 0.2  # between polls for replies: a wait, not a spin, on shared cores


def to_content(payload: Payload) -> RecordDict:
    """A request as Flower records: named arrays, JSON values, byte blobs."""
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in payload.arrays.items()}),
                       "values": ConfigRecord({"json": json.dumps(payload.values)}),
                       "blobs": ConfigRecord(dict(payload.blobs))})


def payload_of(reply: Message) -> Payload:
    """A site's reply as plain types (what ``client.boundary`` let out)."""
    content = reply.content
    return Payload(arrays={k: v.numpy() for k, v in content["arrays"].items()},
                   values=json.loads(str(content["values"]["json"])))


def send(grid: Grid, nodes: Iterable[int], message_type: str, payload: Payload, timeout_s: float,
         group: str = "", names: Mapping[int, str] | None = None,
         on_reply: Callable[[], object] | None = None) -> dict[int, Payload]:
    """Send one message per node; return the good replies by node id, log the errors (by the
    site's name in ``names`` when known). Replies are pulled as they come (Flower's
    ``send_and_receive`` loop, pushed and pulled here) so that ``on_reply()`` can move a
    progress bar after each one."""
    content, nodes = to_content(payload), list(nodes)
    pending = set(grid.push_messages([Message(content, dst_node_id=node, message_type=message_type,
                                              group_id=group) for node in nodes]))
    replies: dict[int, Payload] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(pending):
            pending.discard(reply.metadata.reply_to_message_id)
            if on_reply is not None:
                on_reply()
            _keep(reply, nodes, replies, message_type, group, names)
        if pending:
            time.sleep(PULL_INTERVAL_S)
    return replies


def _keep(reply: Message, nodes: list[int], replies: dict[int, Payload], message_type: str,
          group: str, names: Mapping[int, str] | None) -> None:
    """A reply from an addressed node joins ``replies``; an error reply is logged instead."""
    node = reply.metadata.src_node_id
    if node not in nodes:
        return
    if reply.has_error():
        site = (names or {}).get(node, f"node {node}")
        log.warning("%s %s: %s answered with an error: %s", message_type, group, site,
                    reply.error.reason)
    else:
        replies[node] = payload_of(reply)
