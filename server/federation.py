"""The phases of a federated run, over any Flower Grid (a SuperLink, the simulation engine, a test).

1. handshake (schema hash, version, data check); 2. DP label counts (the FedAvg weights and the
global label distribution); 3. R rounds of FedAvg of the chosen tabular generator, each update
checked before it counts, a checkpoint after every round; 4. with a text config, rounds of FedAvg
of the narrative model's LoRA adapters (``train.lora``, the sites' text budgets), checked and
checkpointed the same way; 5. the global generators saved in the format ``fedsynth generate``
loads; 6. when ``synthetic_records`` > 0, the synthetic dataset with its narratives, scored at
every site against its held-out data with the baselines (``server.evaluation``), and the report.
A round with fewer good replies than the quorum is sent again (sites answer a round they already
trained from their saved update, spending nothing) and the run stops with a message when retries
are used up: it never waits forever.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from common.fileio import write_table
from common.run_plan import RunPlan
from common.schema import Schema
from common.synthesis import add_narratives
from common.tabular.synthesizer import TabularSynthesizer
from common.text.narrative_model import NarrativeModel
from fedsynth import __version__
from server.aggregate import update_problem, weighted_average
from server.checkpoint import RunState, load_checkpoint, load_weights, save_checkpoint
from server.evaluation import canary_exposure_bits, evaluate_at_sites
from server.handshake import QuorumError, run_handshake
from server.messaging import send
from server.report import build_report, privacy_section, write_report

log = logging.getLogger("fedsynth.server")


@dataclass(frozen=True)
class FederationSettings:
    schema_path: Path
    run_dir: Path
    run: str = "run"
    kind: str = "vae"
    rounds: int = 5
    local_steps: int = 50
    seed: int = 0
    tabular_config: dict[str, Any] = field(default_factory=dict)
    min_sites: int = 1
    quorum: int = 1
    handshake_timeout_s: float = 120.0
    round_timeout_s: float = 600.0
    round_retries: int = 1
    max_update_norm: float = 1e3
    resume: bool = False
    proximal_mu: float = 0.0  # FedProx (sites' local objective + mu/2 ||w - w_global||²); 0 = FedAvg
    synthetic_records: int = 0  # > 0: release that many records and evaluate them at the sites
    local_only: bool = False  # sites also train and score a local-only baseline (spends budget)
    centralized_path: str = ""  # simulation: the centralized baseline's records, scored too
    profile: str = "deployment"  # for the report
    text_config: dict[str, Any] | None = None  # the narrative model's; None: a tabular-only run
    text_rounds: int = 0
    text_local_steps: int = 0
    narrated_records: int | None = None  # released records that get a narrative; None: all
    canary_path: str = ""  # simulation: canaries planted in one site's narratives, to measure

    @property
    def plan(self) -> RunPlan:
        return RunPlan(run=self.run, kind=self.kind, rounds=self.rounds, local_steps=self.local_steps,
                       seed=self.seed, tabular_config=self.tabular_config,
                       proximal_mu=self.proximal_mu, text_config=self.text_config,
                       text_rounds=self.text_rounds, text_local_steps=self.text_local_steps)


@dataclass
class FederationResult:
    model_dir: Path
    sites: list[str]
    state: RunState


def collect_label_counts(grid: Grid, nodes: dict[int, str], settings: FederationSettings,
                         state: RunState) -> dict[int, str]:
    """Ask each site for its DP label counts; sites that fail are left out of the run."""
    content = RecordDict({"plan": ConfigRecord(settings.plan.to_config())})
    replies = send(grid, nodes, "query.label_counts", content, settings.round_timeout_s)
    for site, reply in replies.items():
        released = reply.content["counts"]
        state.label_counts[site] = [float(c) for c in released["counts"]]
        if "tables" in released:
            state.label_tables[site] = [float(c) for c in released["tables"]]
        state.site_epsilon[site] = float(reply.content["privacy"]["epsilon"])
    kept = {node: site for node, site in nodes.items() if site in replies}
    if len(kept) < settings.quorum:
        raise QuorumError(f"only {len(kept)} site(s) released label counts; the quorum is "
                          f"{settings.quorum}. See the warnings above.")
    return kept


def train_round(grid: Grid, nodes: dict[int, str], round_: int, weights: list[np.ndarray],
                settings: FederationSettings, state: RunState, action: str = "") -> list[np.ndarray]:
    """One FedAvg round of ``train.ACTION`` (the tabular generator's kind by default, ``lora``
    for the narrative adapters), retried while fewer than ``quorum`` good updates arrive."""
    action = action or settings.kind
    text = action == "lora"
    spent = state.text_epsilon if text else state.site_epsilon
    content = RecordDict({"weights": ArrayRecord(weights),
                          "plan": ConfigRecord(settings.plan.to_config()),
                          "round": ConfigRecord({"round": round_})})
    for attempt in range(settings.round_retries + 1):
        replies = send(grid, nodes, f"train.{action}", content, settings.round_timeout_s,
                       group=f"lora-{round_}" if text else str(round_))
        updates, sizes = [], []
        for site, reply in sorted(replies.items()):
            update = reply.content["weights"].to_numpy_ndarrays()
            problem = update_problem(update, weights, settings.max_update_norm)
            if problem:
                log.warning("round %d: update of site %s dropped: %s", round_, site, problem)
                state.dropped.append(f"round {round_}: {site}: {problem}")
                continue
            updates.append(update)
            sizes.append(max(sum(state.label_counts[site]), 1.0))  # DP counts, never exact sizes
            spent[site] = float(reply.content["privacy"]["epsilon"])
        if len(updates) >= settings.quorum:
            log.info("round %d: aggregated %d update(s)", round_, len(updates))
            return weighted_average(updates, sizes)
        log.warning("round %d attempt %d: %d good update(s), quorum %d", round_, attempt + 1,
                    len(updates), settings.quorum)
    raise QuorumError(f"round {round_}: fewer than {settings.quorum} good update(s) after "
                      f"{settings.round_retries + 1} attempt(s); the run stops. Its checkpoint "
                      f"keeps {state.rounds_done} round(s): restart with resume to continue.")


def global_synthesizer(settings: FederationSettings, schema: Schema) -> TabularSynthesizer:
    """The server's copy of the model: same architecture and initial weights as every site's."""
    return TabularSynthesizer(schema, kind=settings.kind, epsilon=None,
                              config=settings.tabular_config, seed=settings.seed)


def initial_weights(synth: TabularSynthesizer, tables: list[list[float]]) -> list[np.ndarray]:
    """Round 1 starts from the sum of the sites' DP class-conditional tables (post-processing),
    so every site's first update refines the same label path."""
    if tables:
        synth.set_label_tables(np.sum(tables, axis=0))
    return synth.get_weights()


def run_federation(grid: Grid, settings: FederationSettings) -> FederationResult:
    run_started = time.time()
    schema = Schema.load(settings.schema_path)
    checkpoint_dir = settings.run_dir / "checkpoint"
    synth = global_synthesizer(settings, schema)
    state, weights = RunState(), synth.get_weights()
    if settings.resume:
        restored = load_checkpoint(checkpoint_dir)
        if restored is not None:
            state, weights = restored
            log.info("resuming after round %d of %d", state.rounds_done, settings.rounds)
    nodes = run_handshake(grid, schema, min_sites=settings.min_sites,
                          timeout_s=settings.handshake_timeout_s,
                          reply_timeout_s=min(settings.round_timeout_s, 300.0))
    nodes = collect_label_counts(grid, nodes, settings, state)
    if state.rounds_done == 0 and synth.uses_label_tables:
        weights = initial_weights(synth, [state.label_tables[s] for s in sorted(nodes.values())])
    for round_ in range(state.rounds_done + 1, settings.rounds + 1):
        started = time.monotonic()
        weights = train_round(grid, nodes, round_, weights, settings, state)
        state.rounds_done = round_
        state.round_seconds.append(time.monotonic() - started)
        save_checkpoint(checkpoint_dir, state, weights)
    synth.set_weights(weights)
    synth.set_label_counts(np.sum([state.label_counts[s] for s in sorted(nodes.values())], axis=0))
    narrative = train_narratives(grid, nodes, settings, state, schema) if settings.plan.has_text \
        else None
    model_dir = settings.run_dir / "model"
    synth.save(model_dir)
    if narrative is not None:
        narrative.save(model_dir)
    if settings.synthetic_records > 0:
        release_and_evaluate(grid, nodes, synth, narrative, settings, run_started)
    return FederationResult(model_dir=model_dir, sites=sorted(nodes.values()), state=state)


def train_narratives(grid: Grid, nodes: dict[int, str], settings: FederationSettings,
                     state: RunState, schema: Schema) -> NarrativeModel:
    """The narrative stage: FedAvg of the sites' LoRA adapters (B matrices under FFA-LoRA, so the
    average is exact), from the shared initial adapter, checkpointed every round."""
    narrative = NarrativeModel(schema, epsilon=None, config=settings.text_config, seed=settings.seed)
    checkpoint_dir = settings.run_dir / "checkpoint"
    weights = load_weights(checkpoint_dir, "text") if state.text_rounds_done else \
        narrative.get_weights()
    for round_ in range(state.text_rounds_done + 1, settings.text_rounds + 1):
        started = time.monotonic()
        weights = train_round(grid, nodes, round_, weights, settings, state, action="lora")
        state.text_rounds_done = round_
        state.round_seconds.append(time.monotonic() - started)
        save_checkpoint(checkpoint_dir, state, weights, part="text")
    narrative.set_weights(weights)
    return narrative


def release_and_evaluate(grid: Grid, nodes: dict[int, str], synth: TabularSynthesizer,
                         narrative: NarrativeModel | None, settings: FederationSettings,
                         started: float) -> None:
    """The synthetic dataset (seeded) with its narratives, scored at every site with the
    baselines, and the report."""
    synthetic = synth.sample(settings.synthetic_records, seed=settings.seed)
    if narrative is not None:
        synthetic = add_narratives(synthetic, narrative, settings.narrated_records, settings.seed)
        stats = narrative.last_sample_stats
        log.info("narratives: %d written (%d attempts, %d still flagged by the gate), %d tokens in "
                 "%.0f s", stats["records"], stats["attempts"], stats["flagged"], stats["tokens"],
                 stats["seconds"])
    write_table(synthetic, settings.run_dir / "synthetic.csv")
    write_table(synthetic, settings.run_dir / "synthetic.parquet")
    sets = {"federated": synthetic}
    if settings.centralized_path:
        sets["centralized"] = pd.read_parquet(settings.centralized_path)
    evaluations = evaluate_at_sites(grid, nodes, sets, settings.plan.to_config(),
                                    settings.synthetic_records if settings.local_only else 0,
                                    settings.seed, settings.round_timeout_s)
    if narrative is not None and settings.canary_path:
        site, bits = canary_exposure_bits(narrative, settings.canary_path, settings.seed)
        text = (evaluations.get(site, {}).get("federated") or {}).get("text")
        if text is not None:
            text["canary_exposure_bits"] = round(bits, 4)
        log.info("canary exposure (site %s): %.2f bits", site, bits)
    run = {"fedsynth_version": __version__, "seed": settings.seed, "profile": settings.profile,
           "generator": settings.kind, "sites": sorted(nodes.values()), "rounds": settings.rounds,
           "duration_s": round(time.time() - started, 1),
           "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")}
    privacy = privacy_section({site: e["privacy"] for site, e in evaluations.items()},
                              synth.model_name, narrative.model_name if narrative else None)
    write_report(settings.run_dir, build_report(run, privacy, evaluations), synthetic)
