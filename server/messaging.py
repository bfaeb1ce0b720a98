"""Messages to every site of a run, with the errors logged and left out."""

from __future__ import annotations

import logging

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

log = logging.getLogger("fedsynth.server")


def send(grid: Grid, nodes: dict[int, str], message_type: str, content: RecordDict,
         timeout_s: float, group: str = "") -> dict[str, Message]:
    """Send one message per node; return the good replies by site name, log the errors."""
    messages = [Message(content, dst_node_id=node, message_type=message_type, group_id=group)
                for node in nodes]
    replies: dict[str, Message] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        site = nodes.get(reply.metadata.src_node_id, str(reply.metadata.src_node_id))
        if reply.has_error():
            log.warning("%s %s: site %s answered with an error: %s", message_type, group, site,
                        reply.error.reason)
        else:
            replies[site] = reply
    return replies
