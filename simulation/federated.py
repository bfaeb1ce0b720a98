"""Run the federation on Flower's Simulation Engine: one virtual SuperNode per site (1 CPU each).

The ClientApp and ServerApp are the deployment ones; only where their settings come from differs
(each simulated site's config by partition id, the run's settings handed over directly).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from client.client_app import make_client_app
from common.errors import InputError
from common.site_config import SiteConfig
from server.federation import FederationSettings
from server.server_app import make_server_app

log = logging.getLogger("fedsynth.simulation")


def run_simulated_federation(sites: list[SiteConfig], settings: FederationSettings) -> Path:
    """Run the whole federation; return the global model folder."""
    from flwr.simulation import run_simulation

    client_app = make_client_app(lambda ctx: sites[int(ctx.node_config["partition-id"])])
    server_app = make_server_app(lambda ctx: settings)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(sites),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": min(len(sites), os.cpu_count() or 1),
                                                 "include_dashboard": False}})
    model_dir = settings.run_dir / "model"
    if not (model_dir / "tabular.json").exists():
        raise InputError(f"the federated run did not finish (no global model in {model_dir}); "
                         f"the log above says why (too few sites passed the handshake or a round).")
    return model_dir
