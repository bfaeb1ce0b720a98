"""The local multi-site pipeline behind ``fedsynth demo`` and ``fedsynth simulate``.

Sites' private state (ledgers, quarantine files, round updates) lives in a temporary folder like
a hospital's state directory; the output folder receives only what a coordinator may publish:
the global model, the synthetic dataset, each site's privacy ledger and the report.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.site_config import SiteConfig
from common.data import load_site_data
from common.fileio import atomic_write_text, staged_dir, write_table
from common.privacy.ledger import Ledger
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from fedsynth import __version__
from server.federation import FederationSettings
from simulation.federated import run_simulated_federation
from simulation.profiles import RunProfile

RUN_NAME = "sim"


def run_pipeline(site_files: dict[str, Path], schema_path: Path, out: Path, profile: RunProfile,
                 generator: str = "vae", epsilon_tabular: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Federated training -> synthesis -> outputs in ``out`` (written whole or not at all)."""
    schema = Schema.load(schema_path)
    for path in site_files.values():  # bad input stops here with the full report (exit 2)
        load_site_data(path, schema, bad_rows="reject")
    started, clock = datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedsynth-sites-") as private, staged_dir(out) as stage:
        sites = [SiteConfig(name=name, data_path=path, schema_path=schema_path,
                            state_dir=Path(private) / name, epsilon_tabular=epsilon_tabular)
                 for name, path in sorted(site_files.items())]
        settings = FederationSettings(
            schema_path=schema_path, run_dir=stage, run=RUN_NAME, kind=generator,
            rounds=profile.rounds, local_steps=profile.local_steps, seed=seed,
            tabular_config=profile.tabular_config, min_sites=len(sites),
            quorum=max(1, math.ceil(len(sites) / 2)), handshake_timeout_s=120, round_timeout_s=1800)
        model_dir = run_simulated_federation(sites, settings)
        shutil.rmtree(stage / "checkpoint")  # the coordinator's resume state, not a release
        synthetic = TabularSynthesizer.load(model_dir).sample(profile.synthetic_records, seed=seed)
        write_table(synthetic, stage / "synthetic.csv")
        write_table(synthetic, stage / "synthetic.parquet")
        privacy = _write_ledgers(sites, stage / "privacy")
        report = {
            "run": {"fedsynth_version": __version__, "seed": seed, "profile": profile.name,
                    "generator": generator, "sites": [s.name for s in sites],
                    "rounds": profile.rounds, "duration_s": round(time.monotonic() - clock, 1),
                    "started_at": started},
            "privacy": privacy,
        }
        atomic_write_text(stage / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _write_ledgers(sites: list[SiteConfig], folder: Path) -> dict[str, Any]:
    """Copy each site's ledger (every spend) to ``privacy/SITE.json``; return the report section."""
    per_site, deltas = {}, set()
    for site in sites:
        entries = Ledger(site.state_dir / RUN_NAME / "ledger.jsonl").read()
        atomic_write_text(folder / f"{site.name}.json",
                          json.dumps([asdict(e) for e in entries], indent=2) + "\n")
        tabular = max((e.epsilon_after for e in entries), default=0.0)
        deltas.update(e.delta for e in entries)
        per_site[site.name] = {"epsilon_tabular": tabular, "epsilon_text": None,
                               "epsilon_total": tabular}
    return {"delta": max(deltas) if deltas else None, "per_site": per_site}
