"""Build Flower instruction messages as the SuperLink would deliver them to a ClientApp."""

from __future__ import annotations

import time

from flwr.app import Message, Metadata, RecordDict


def instruction(content: RecordDict, message_type: str, dst_node_id: int = 7,
                run_id: int = 1, group_id: str = "") -> Message:
    metadata = Metadata(run_id=run_id, message_id=f"msg-{time.monotonic_ns()}", src_node_id=1,
                        dst_node_id=dst_node_id, reply_to_message_id="", group_id=group_id,
                        created_at=time.time(), ttl=3600.0, message_type=message_type)
    return Message(content=content, metadata=metadata)


class InProcessGrid:
    """A Grid that delivers each message straight to a ClientApp, one node config per node.

    Enough of Flower's Grid for server phases to be tested without a SuperLink.
    """

    def __init__(self, client_app, node_configs: dict[int, dict], tamper=None) -> None:
        from flwr.app import Context

        self.client_app = client_app
        self.tamper = tamper  # optional (node, reply) -> reply, to craft bad replies
        self.sent: list[str] = []
        self.messages: list[Message] = []  # what the server sent, in order
        self.replies: dict[str, Message] = {}  # by the id of the message each answers
        self.contexts = {node: Context(run_id=1, node_id=node, node_config=cfg, state=RecordDict(),
                                       run_config={}) for node, cfg in node_configs.items()}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        """Deliver each message at once; its reply waits for ``pull_messages``."""
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            delivered = instruction(msg.content, msg.metadata.message_type, dst_node_id=node,
                                    group_id=msg.metadata.group_id)
            self.sent.append(f"{msg.metadata.message_type}:{msg.metadata.group_id}:{node}")
            self.messages.append(msg)
            reply = self.client_app(delivered, self.contexts[node])
            self.replies[delivered.metadata.message_id] = (self.tamper(node, reply) if self.tamper
                                                           else reply)
            ids.append(delivered.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def ask(client_app, context, message_type: str, payload, group_id: str = ""):
    """Deliver one request (a ``Payload``, encoded as the coordinator encodes it) to a ClientApp;
    return the reply Message."""
    from server.messaging import to_content

    return client_app(instruction(to_content(payload), message_type, dst_node_id=context.node_id,
                                  group_id=group_id), context)


def site_entries(config):
    """Every entry of a site's lifetime ledger for its data file."""
    from common.privacy.account import SiteAccount

    return SiteAccount(config.state_dir, config.data_path, config.epsilon_total,
                       config.site_delta).entries()
