"""``fedsynth demo``: the embedded default run on simulated hospitals."""

from __future__ import annotations

import tempfile
from pathlib import Path

from common.run_plan import DEFAULT_TABULAR_KIND
from common.text.public_corpus import DEFAULT_CORPUS
from simulation.hospitals import write_sim_data
from simulation.pipeline import run_pipeline
from simulation.profiles import PROFILES


def run_demo(out: Path, profile: str = "quick", seed: int = 0, text: bool = True,
             generator: str = DEFAULT_TABULAR_KIND, public_corpus: Path | None = DEFAULT_CORPUS,
             public_schema: Path | None = None, site_logs_to_console: bool = False) -> dict:
    """Simulate hospitals, then run the whole federated pipeline on them (``text``: with the
    narrative model and narratives) with the tabular ``generator``."""
    settings = PROFILES[profile]
    with tempfile.TemporaryDirectory(prefix="fedsynth-demo-data-") as data:
        paths = write_sim_data(Path(data), settings.sites, settings.records_per_site, seed)
        site_files = {p.stem: p for p in paths if p.suffix == ".csv"}
        return run_pipeline(site_files, Path(data) / "schema.yaml", out, settings, seed=seed,
                            text=text, generator=generator, public_corpus=public_corpus,
                            public_schema=public_schema, site_logs_to_console=site_logs_to_console)
