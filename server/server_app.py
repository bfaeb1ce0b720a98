"""The coordinator's ServerApp: the phases of a run (``server.federation``), settings from
``run_config`` in a deployment or handed over by the local simulation."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context
from flwr.common.logger import console_handler
from flwr.serverapp import Grid, ServerApp

from common.errors import InputError
from server.federation import FederationSettings, run_federation
from server.handshake import QuorumError
from server.settings import settings_from_run_config

log = logging.getLogger("fedsynth.server")
SettingsResolver = Callable[[Context], FederationSettings]


def make_server_app(resolve_settings: SettingsResolver) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # `flwr log` shows only what Flower's console handler prints; send fedsynth's lines
        # there, unless the process already routes them (the local simulation's console).
        fedsynth_log = logging.getLogger("fedsynth")
        if not fedsynth_log.handlers:
            fedsynth_log.addHandler(console_handler)
            fedsynth_log.setLevel(logging.INFO)
            fedsynth_log.propagate = False  # one line each, not one more through the root logger
        try:
            settings = resolve_settings(context)
            result = run_federation(grid, settings)
        except (InputError, QuorumError) as exc:
            log.error("run stopped: %s", exc)
            raise
        log.info("run finished: %d site(s) %s", len(result.sites), result.sites)
        log.debug("global model in %s", result.model_dir)

    return app


app = make_server_app(lambda context: settings_from_run_config(context.run_config))
