"""The hospital's ClientApp: thin handlers that read the site's own files and call ``common``."""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client.site_config import SiteConfig
from common.data import load_site_data
from common.errors import DataError, InputError
from common.handshake import HandshakeResult, check_compatibility
from common.schema import Schema
from fedsynth import __version__

log = logging.getLogger("fedsynth.client")
app = ClientApp()


@app.query("handshake")
def handshake(msg: Message, context: Context) -> Message:
    """Compare schema hash and version, and check the site's data file, before any training."""
    offer = msg.content["handshake"]
    try:
        site = SiteConfig.from_node_config(context.node_config)
        if site.exclude:
            result = HandshakeResult(False, "site asked to be excluded (node config exclude=true)")
        else:
            schema = Schema.load(site.schema_path)
            result = check_compatibility(schema.hash, __version__, str(offer["schema_hash"]),
                                         str(offer["version"]))
            if result.accepted:
                load_site_data(site.data_path, schema, bad_rows=site.bad_rows,
                               quarantine_path=site.state_dir / "quarantine.csv")
        name = site.name
    except DataError as exc:
        # Cell values are patient data: the details stay in the site's log, only the fact travels.
        log.error("%s", exc)
        result = HandshakeResult(False, "the site's data file failed validation against the schema; "
                                        "the site's log lists the rows, columns and fixes")
        name = site.name
    except InputError as exc:
        # Bad local data or settings exclude this site; they never crash the federation.
        result, name = HandshakeResult(False, " ".join(str(exc).split())), str(context.node_id)
    reply = ConfigRecord({"accepted": result.accepted, "reason": result.reason, "site": name,
                          "version": __version__})
    return Message(RecordDict({"handshake": reply}), reply_to=msg)
