"""The coordinator's ServerApp: the phases of a run, driven by ``run_config``."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.schema import Schema
from server.handshake import run_handshake

log = logging.getLogger("fedsynth.server")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    schema = Schema.load(str(config["schema-path"]))
    accepted = run_handshake(grid, schema, min_sites=int(config.get("min-sites", 1)),
                             timeout_s=float(config.get("handshake-timeout-s", 120)))
    log.info("handshake: %d site(s) accepted: %s", len(accepted), sorted(accepted.values()))
