"""Run the federation on Flower's Simulation Engine: one virtual SuperNode per site (1 CPU each).

The ClientApp and ServerApp are the deployment ones; only where their settings come from differs
(each simulated site's config by partition id, the run's settings handed over directly).

Why ``flwr.simulation.run_simulation`` stays although Flower 1.41 marks it deprecated in favour
of ``flwr run``: ``flwr run`` loads a packaged app by module path, with settings only as
run-config strings, in separate processes. The local pipeline hands each simulated site its
Python ``SiteConfig`` (its private state folder and ledger) and the coordinator its settings, and
must stay in one process to add the simulation-only baselines afterwards. The deployment path
(SuperLink, SuperNodes, ``flwr run``) is tested separately; here only that one deprecation
record is filtered, nothing else Flower says.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from client.client_app import make_client_app
from common.errors import InputError
from common.site_config import SiteConfig
from server.federation import FederationSettings
from server.server_app import make_server_app

log = logging.getLogger("fedsynth.simulation")
RAY_LOGS = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"


def _not_the_run_simulation_deprecation(record: logging.LogRecord) -> bool:
    return not ("DEPRECATED FEATURE" in record.getMessage()
                and "run_simulation" in record.getMessage())


def run_simulated_federation(sites: list[SiteConfig], settings: FederationSettings,
                             site_logs: Path | None = None,
                             site_logs_to_console: bool = False) -> Path:
    """Run the whole federation; return the global model folder. The sites' own output (Ray's
    worker logs) is copied to ``site_logs`` when given, and printed live with
    ``site_logs_to_console``."""
    from flwr.simulation import run_simulation

    client_app = make_client_app(lambda ctx: sites[int(ctx.node_config["partition-id"])])
    server_app = make_server_app(lambda ctx: settings)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray runs its workers at nice 15 by default: on shared cores any other process (a second
    # test worker, a browser) then starves the sites while the coordinator waits for them.
    os.environ.setdefault("RAY_worker_niceness", "0")
    flower = logging.getLogger("flwr")
    flower.addFilter(_not_the_run_simulation_deprecation)
    began = time.time()
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(sites),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": min(len(sites), os.cpu_count() or 1),
                                                     "include_dashboard": False,
                                                     "log_to_driver": site_logs_to_console}})
    finally:
        flower.removeFilter(_not_the_run_simulation_deprecation)
        if site_logs is not None:
            _copy_worker_logs(site_logs, began)
    model_dir = settings.run_dir / "model"
    if not (model_dir / "tabular.json").exists():
        raise InputError(f"the federated run did not finish (no global model in {model_dir}); "
                         f"the log says why (too few sites passed the handshake or a round).")
    return model_dir


def _copy_worker_logs(folder: Path, since: float) -> None:
    """Ray's worker stdout/stderr files of this run (the sites' messages)."""
    if not RAY_LOGS.is_dir():
        return
    for path in sorted(RAY_LOGS.glob("worker-*")):
        if path.suffix in (".out", ".err") and path.stat().st_mtime >= since and path.stat().st_size:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / path.name)
