"""The hospital's ClientApp: one handler for every message a site answers.

It reads the site's own settings (node config, or a simulated hospital), looks the message type
up in ``common.site_actions`` (the handshake, each stage's site half, the release's evaluation),
and replies through the site's privacy boundary (``client.boundary``): only declared fields
leave, and any error, expected or not, leaves as a generic text while its detail stays in the
site's log. A site with bad data or a spent budget never crashes the federation.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import boundary
from client.node_config import site_config
from common.site_actions import SITE_ACTIONS
from common.site_config import SiteConfig

SiteResolver = Callable[[Context], SiteConfig]


def make_client_app(resolve_site: SiteResolver) -> ClientApp:
    """A ClientApp whose site settings come from ``resolve_site`` (node config, or a simulation)."""
    app = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        site = None
        try:
            config = resolve_site(context)
            site = config.name
            action = SITE_ACTIONS[msg.metadata.message_type]
            return boundary.reply(msg, action(config, boundary.read_request(msg)))
        except Exception as exc:  # every error leaves as a generic reply, never as its text
            return boundary.error_reply(msg, exc, site)

    for message_type in boundary.REPLIES:
        category, action = message_type.split(".")
        getattr(app, category)(action)(handle)
    return app


app = make_client_app(lambda context: site_config(context.node_config))
