"""The local multi-site pipeline behind ``fedsynth demo`` and ``fedsynth simulate``.

Sites' private state (accounts with their ledgers, quarantine files, saved replies) lives in a
temporary folder like a hospital's state directory; the output folder receives only what a
coordinator may publish: the global model, the synthetic dataset, each site's privacy ledger and
the report. The simulation-only pieces are added here, never in the deployed coordinator: the
centralized baseline (one model on the pooled records, scored by each simulated site) and the
canaries planted in one site's narratives (their exposure in the global narrative model).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from common.data import load_site_data, read_raw
from common.errors import InputError
from common.fileio import atomic_write_text, staged_dir
from common.metrics.evaluate import summarize
from common.privacy.account import SiteAccount
from common.privacy.accountant import DEFAULT_MAX_RECORDS
from common.run_plan import DEFAULT_TABULAR_KIND
from common.schema import Schema
from common.site_config import SiteConfig
from common.stages.release import local_only_synthetic
from common.stages.site import SiteRun
from common.text.public_corpus import DEFAULT_CORPUS, PublicCorpus, overlap
from common.text.public_corpus import public_corpus as public_corpus_of
from server.federation import FederationSettings
from server.phases import Phases
from server.report import add_variant, write_report
from simulation.baselines import centralized_synthetic, scored_at_sites
from simulation.canaries import canary_exposure_bits, plant_canaries
from simulation.federated import run_simulated_federation
from simulation.profiles import RunProfile

RUN_NAME = "sim"
log = logging.getLogger("fedsynth.simulation")


@dataclass(frozen=True)
class SimulatedRun:
    """A finished run as a test inspects it, in memory only (nothing here is published): the
    released synthetic set and the baselines' sets, all ``profile.synthetic_records`` long. The
    sites' private folders (accounts, ledgers, local-only models) exist until ``inspect`` returns."""

    schema: Schema
    sites: list[SiteConfig]
    settings: FederationSettings
    synthetic: pd.DataFrame
    local_only: dict[str, pd.DataFrame]  # each site's own model: in a deployment, scored there
    centralized: pd.DataFrame  # one model on the pooled train splits: simulation only


Inspect = Callable[[SimulatedRun], None]  # sees the run before its private folders go (tests)


def run_pipeline(site_files: dict[str, Path], schema_path: Path, out: Path, profile: RunProfile,
                 generator: str = DEFAULT_TABULAR_KIND, epsilon_tabular: float = 3.0, seed: int = 0,
                 inspect: Inspect | None = None, text: bool = True, epsilon_text: float = 3.0,
                 text_model: str | None = None, public_corpus: Path | None = DEFAULT_CORPUS,
                 public_schema: Path | None = None,
                 site_logs_to_console: bool = False) -> dict[str, Any]:
    """Federated training (the tabular generator, then, with ``text`` and a narrative column,
    the narrative model from its public warm start on ``public_corpus`` (None: none) by DP-LoRA
    rounds and/or private evolution, ``text_model`` overriding the profile's base) -> synthesis
    -> federated evaluation (each site scores the released set and its own local-only model,
    which spends its budget a second time, in its ledger) -> the simulation's additions (the
    centralized baseline; with narratives, the exposure of canaries planted in the first site's
    training narratives) -> outputs in ``out``, written whole or not at all, with the sites'
    own log files in ``out/logs/sites`` (printed live with ``site_logs_to_console``). Each
    phase logs a line and its time (``run.phases`` in the report).
    """
    phases = Phases(log)
    with phases("input check") as phase:
        schema = Schema.load(schema_path)
        for path in site_files.values():  # bad input stops here with the full report (exit 2)
            load_site_data(path, schema, bad_rows="reject")
        text = text and schema.narrative is not None and profile.has_text
        if text and public_corpus is not None:
            check_public_corpus(site_files, schema, public_corpus_of(public_corpus, public_schema))
        phase.detail = f"{len(site_files)} site file(s) valid"
    with tempfile.TemporaryDirectory(prefix="fedsynth-sites-") as private, staged_dir(out) as stage:
        settings = replace(simulation_settings(len(site_files), schema_path, stage, profile,
                                               generator, seed),
                           synthetic_records=profile.synthetic_records, local_only=True,
                           profile=profile.name)
        canaries = None
        if text:
            canaries = plant_canaries(site_files, schema, seed, Path(private) / "canaries")
            site_files = {**site_files, canaries.site: canaries.site_file}
            settings = replace(settings, **text_settings(profile, schema, text_model),
                               public_corpus=public_corpus, public_schema=public_schema)
        sites = simulated_sites(site_files, schema_path, Path(private) / "sites", epsilon_tabular,
                                epsilon_text)
        began = time.monotonic()
        run_simulated_federation(sites, settings, stage / "logs" / "sites", site_logs_to_console)
        shutil.rmtree(stage / "checkpoint")  # the coordinator's resume state, not a release
        _write_ledgers(sites, stage / "privacy")
        synthetic = pd.read_parquet(stage / "synthetic.parquet")
        report = json.loads((stage / "report.json").read_text(encoding="utf-8"))
        federated = report["run"].get("phases", {})
        phases.seconds.update(federated)
        phases.add("simulation engine start/stop",
                   time.monotonic() - began - sum(federated.values()),
                   "Ray and Flower's simulation runtime, around the coordinator's phases")
        with phases("centralized baseline") as phase:
            centralized = centralized_synthetic(site_files, schema, profile, generator,
                                                epsilon_tabular, sites[0].site_delta, seed)
            add_variant(report, "centralized", scored_at_sites(sites, settings.plan, centralized, seed))
            phase.detail = "one model on the pooled train splits, scored at every site"
        if canaries is not None:
            with phases("canary exposure"):
                _add_canary_exposure(report, stage / "model", canaries.spec, seed)
        with phases("report"):
            report["run"]["phases"] = phases.table()
            write_report(stage, report, synthetic)
        if inspect is not None:
            inspect(SimulatedRun(
                schema, sites, settings, synthetic,
                local_only={s.name: local_only_synthetic(SiteRun(s, settings.plan), len(synthetic), seed)
                            for s in sites},
                centralized=centralized))
    return report


def simulated_sites(site_files: dict[str, Path], schema_path: Path, state_root: Path,
                    epsilon_tabular: float, epsilon_text: float = 3.0) -> list[SiteConfig]:
    """One hospital per data file, its private state in ``state_root/NAME`` (like a site's state
    directory). Each allows the local-only baseline, and its lifetime cap covers one run of
    everything (the shares added up: an upper bound on their composition). Delta follows from a
    public bound shared by all: the next power of ten above the largest file, at least 10,000."""
    largest = max(len(read_raw(path)) for path in site_files.values())
    bound = max(DEFAULT_MAX_RECORDS, 10 ** math.ceil(math.log10(max(largest, 1))))
    return [SiteConfig(name=name, data_path=path, schema_path=schema_path,
                       state_dir=state_root / name, epsilon_tabular=epsilon_tabular,
                       epsilon_text=epsilon_text, epsilon_total=2 * epsilon_tabular + epsilon_text,
                       max_records=bound, allow_local_only=True)
            for name, path in sorted(site_files.items())]


def simulation_settings(n_sites: int, schema_path: Path, run_dir: Path, profile: RunProfile,
                        generator: str, seed: int) -> FederationSettings:
    """The coordinator's settings: every site must join, half of them make a round's quorum."""
    return FederationSettings(
        schema_path=schema_path, run_dir=run_dir, run=RUN_NAME, kind=generator,
        rounds=profile.rounds, local_steps=profile.local_steps, seed=seed,
        tabular_config=profile.config_for(generator), min_sites=n_sites,
        quorum=max(1, math.ceil(n_sites / 2)), handshake_timeout_s=120, round_timeout_s=1800)


def check_public_corpus(site_files: dict[str, Path], schema: Schema, corpus: PublicCorpus) -> None:
    """Refuse, before anything runs, sites whose notes are in the warm start's public corpus (each
    site would refuse the run; here the user learns why and what to do at once)."""
    hashes = corpus.note_hashes()
    for name, path in sorted(site_files.items()):
        notes = load_site_data(path, schema)[schema.narrative.name].dropna()
        shared = overlap(notes.astype(str), hashes)
        if shared:
            raise InputError(f"{path}: {shared} of site {name}'s {len(notes)} notes are in the "
                             f"public corpus {corpus.path} of the narrative model's warm start; "
                             f"pretraining on them would not be public. Pass --public-corpus none "
                             f"(no warm start), another public corpus, or --no-text.")


def text_settings(profile: RunProfile, schema: Schema, text_model: str | None) -> dict[str, Any]:
    """The narrative stage of ``profile``: its base model replaced by ``text_model`` if given,
    its prompt fields those ``schema`` has, the label first (every column when it has none)."""
    config = {**profile.text_config, **({"base": text_model} if text_model else {})}
    if config.get("fields"):
        fields = [schema.label.name] + [f for f in config["fields"]
                                        if f in schema and f != schema.label.name]
        config["fields"] = fields if len(fields) > 1 else None
    return {"text_config": config, "text_rounds": profile.text_rounds,
            "text_local_steps": profile.text_local_steps,
            "narrated_records": profile.narrated_records}


def _add_canary_exposure(report: dict[str, Any], model_dir: Path, spec: Path, seed: int) -> None:
    """The canaries' exposure in the global narrative model, at the site that carried them."""
    from common.text.narrative_model import NarrativeModel

    site, bits = canary_exposure_bits(NarrativeModel.load(model_dir), spec, seed)
    text = (report["sites"].get(site) or {}).get("text")
    if text is not None:
        text["canary_exposure_bits"] = round(bits, 4)
        report["summary"]["federated"] = summarize(report["sites"])


def _write_ledgers(sites: list[SiteConfig], folder: Path) -> None:
    """Copy each site's ledger (every spend) to ``privacy/SITE.json``: the audit record the
    report's privacy section (reported by the sites) can be checked against."""
    for site in sites:
        account = SiteAccount(site.state_dir, site.data_path, site.epsilon_total, site.site_delta)
        atomic_write_text(folder / f"{site.name}.json",
                          json.dumps([asdict(e) for e in account.entries()], indent=2) + "\n")
