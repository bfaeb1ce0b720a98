"""Requests to the sites of a run and their replies, keyed by Flower node id (two sites can never
merge, whatever they call themselves); error replies are logged and left out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.stages.base import Payload

log = logging.getLogger("fedsynth.server")


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
         group: str = "", names: Mapping[int, str] | None = None) -> dict[int, Payload]:
    """Send one message per node; return the good replies by node id, log the errors (by the
    site's name in ``names`` when known)."""
    content, nodes = to_content(payload), list(nodes)
    messages = [Message(content, dst_node_id=node, message_type=message_type, group_id=group)
                for node in nodes]
    replies: dict[int, Payload] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        if node not in nodes:
            continue
        if reply.has_error():
            site = (names or {}).get(node, f"node {node}")
            log.warning("%s %s: %s answered with an error: %s", message_type, group, site,
                        reply.error.reason)
        else:
            replies[node] = payload_of(reply)
    return replies
