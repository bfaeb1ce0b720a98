"""A federated run over any Flower Grid (a SuperLink, the simulation engine, a test): one loop
over the plan's stages, then the release and the report.

1. The handshake: schema hash, release, the whole plan and the site's data and lifetime cap.
2. The plan's stages in order (``common.stages``: the tabular generator's DP label counts and
   FedAvg rounds, the narrative adapters' FedAvg rounds), every one the same way: each step's
   request goes to the stage's recipients, each reply is checked by the stage before it counts,
   a step with fewer good replies than the quorum is sent again (sites answer a step they
   already took from disk, spending nothing) and the run stops with a message when retries are
   used up, never waiting forever; a checkpoint after every step.
3. The global models saved in the format ``fedsynth generate`` loads.
4. With ``synthetic_records`` > 0: the release (records and narratives), announced by its hash
   and scored at every site against its held-out data (``server.evaluation``), and the report.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.serverapp import Grid
from tqdm import tqdm

from common.fileio import atomic_write_bytes, table_bytes, write_table
from common.run_plan import RunPlan
from common.schema import Schema
from common.stages import stages_of
from common.stages.base import Coordinator, CoordinatorContext, Payload, Stage
from common.stages.models import family_of
from common.synthesis import add_narratives
from common.text.narrative_model import FLAG_COLUMN
from common.text.public_corpus import PublicCorpus, public_corpus
from common.version import __version__
from server.aggregate import weighted_average
from server.checkpoint import RunState, load_arrays, load_checkpoint, save_checkpoint
from server.evaluation import evaluate_at_sites
from server.handshake import QuorumError, run_handshake
from server.messaging import send
from server.phases import Phases
from server.report import build_report, privacy_section, write_report

log = logging.getLogger("fedsynth.server")
FLOOR_RECORDS = 200  # narrated for the text floor: as many as MAUVE compares at a site's test size


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
    local_only: bool = False  # sites that allow it also train and score a local-only baseline
    profile: str = "deployment"  # for the report
    text_config: dict[str, Any] | None = None  # the narrative model's; None: a tabular-only run
    text_rounds: int = 0
    text_local_steps: int = 0
    narrated_records: int | None = None  # released records that get a narrative; None: all
    # The narrative model's public warm start: a corpus file and its schema (None: none).
    public_corpus: Path | None = None
    public_schema: Path | None = None

    @property
    def corpus(self) -> PublicCorpus | None:
        """The warm start's corpus, in a run with narratives that has one."""
        if self.text_config is None or self.public_corpus is None:
            return None
        return public_corpus(self.public_corpus, self.public_schema)

    @property
    def plan(self) -> RunPlan:
        text_config = self.text_config
        if self.corpus is not None:  # what a site needs to refuse pretraining on its own notes
            text_config = {**text_config, "public_corpus": self.corpus.plan_entry()}
        return RunPlan.standard(run=self.run, seed=self.seed, kind=self.kind, rounds=self.rounds,
                                local_steps=self.local_steps, tabular_config=self.tabular_config,
                                proximal_mu=self.proximal_mu, text_config=text_config,
                                text_rounds=self.text_rounds, text_local_steps=self.text_local_steps,
                                local_only=self.local_only)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"


@dataclass
class FederationResult:
    model_dir: Path
    sites: list[str]
    state: RunState


def run_federation(grid: Grid, settings: FederationSettings) -> FederationResult:
    started, phases = time.time(), Phases(log)
    schema = Schema.load(settings.schema_path)
    plan = settings.plan
    state = (load_checkpoint(settings.checkpoint_dir) if settings.resume else None) or RunState()
    with phases("handshake") as phase:
        nodes = run_handshake(grid, schema, plan, min_sites=settings.min_sites,
                              timeout_s=settings.handshake_timeout_s,
                              reply_timeout_s=min(settings.round_timeout_s, 300.0))
        phase.detail = f"{len(nodes)} site(s) joined"
    models = {name: family_of(spec).build(schema, spec, plan.seed) for name, spec in plan.models.items()}
    if "text" in models and settings.corpus is not None:
        with phases("narrative warm start") as phase:
            models["text"].warm_start(settings.corpus, log=log.debug)
            phase.detail = f"public corpus {settings.corpus.path.name}"
    ctx = CoordinatorContext(schema, plan, models, weighted_average, settings.max_update_norm,
                             {node: state.weights[name] for node, name in nodes.items()
                              if name in state.weights})
    for stage in stages_of(plan):
        with phases(f"stage {stage.name}") as phase:
            phase.detail = run_stage(grid, nodes, stage, ctx, settings, state)
    model_dir = settings.run_dir / "model"
    for model in models.values():
        model.save(model_dir)
    if settings.synthetic_records > 0:
        release_and_evaluate(grid, nodes, ctx, settings, state, started, phases)
    return FederationResult(model_dir=model_dir, sites=sorted(nodes.values()), state=state)


def run_stage(grid: Grid, nodes: dict[int, str], stage: Stage, ctx: CoordinatorContext,
              settings: FederationSettings, state: RunState) -> str:
    """Every step of ``stage``, after those a checkpoint already holds, with a progress bar of
    site replies (steps x sites); returns what it did, in words."""
    half = stage.coordinator(ctx)
    resumed = ""
    if stage.name in state.stages:
        half.load_state_dict(Payload(arrays=load_arrays(settings.checkpoint_dir, stage.name),
                                     values=state.stages[stage.name]))
        log.info("%s: resuming after step %d", stage.name, half.step)
        resumed = f", resumed after step {half.step}"
    plan_json, first = ctx.plan.to_json(), half.step
    total = None if half.total_steps is None else (half.total_steps - first) * len(nodes)
    with tqdm(total=total, desc=stage.name, unit="reply", leave=False, disable=None) as bar:
        while (request := half.request()) is not None:
            _run_step(grid, nodes, stage, half, request, plan_json, settings, state, bar.update)
    return f"{half.step - first} step(s) x {len(nodes)} site(s){resumed}"


def _run_step(grid: Grid, nodes: dict[int, str], stage: Stage, half: Coordinator,
              request: Payload, plan_json: str, settings: FederationSettings, state: RunState,
              on_reply: Callable[[], object]) -> None:
    """One step: sent (again, up to ``round_retries`` times) until a quorum of good replies,
    folded in, checkpointed."""
    began, step = time.monotonic(), half.step + 1
    request.values.update({"plan": plan_json, "stage": stage.index, "step": half.step})
    for attempt in range(settings.round_retries + 1):
        replies = send(grid, half.recipients(list(nodes)), stage.message_type, request,
                       settings.round_timeout_s, group=f"{stage.name}-{step}", names=nodes,
                       on_reply=on_reply)
        good = {}
        for node, reply in sorted(replies.items()):
            problem = half.problem(node, reply)
            if problem:
                log.warning("%s step %d: reply of site %s dropped: %s", stage.name, step,
                            nodes[node], problem)
                state.dropped.append(f"{stage.name} step {step}: {nodes[node]}: {problem}")
            else:
                good[node] = reply
        if len(good) >= settings.quorum:
            break
        log.warning("%s step %d attempt %d: %d good repl(ies), quorum %d", stage.name, step,
                    attempt + 1, len(good), settings.quorum)
    else:
        raise QuorumError(f"{stage.name} step {step}: fewer than {settings.quorum} good "
                          f"repl(ies) after {settings.round_retries + 1} attempt(s); the run "
                          f"stops. Its checkpoint keeps every finished step: restart with "
                          f"resume to continue.")
    half.update(good)
    log.debug("%s step %d: %d site(s) counted", stage.name, step, len(good))
    saved = half.state_dict()
    state.stages[stage.name] = saved.values
    state.weights = {nodes[node]: w for node, w in half.ctx.weights.items()}
    state.step_seconds.setdefault(stage.name, []).append(time.monotonic() - began)
    save_checkpoint(settings.checkpoint_dir, state, stage.name, saved.arrays)


def release_and_evaluate(grid: Grid, nodes: dict[int, str], ctx: CoordinatorContext,
                         settings: FederationSettings, state: RunState, started: float,
                         phases: Phases) -> None:
    """The synthetic dataset (seeded) with its narratives, announced by its hash and scored at
    every site, and the report. A resumed run releases the same set it announced before."""
    synthetic, data = _release(ctx, settings, state, phases)
    if state.release_sha256 != (sha := hashlib.sha256(data).hexdigest()):
        state.release_sha256, state.evaluations = sha, {}
        save_checkpoint(settings.checkpoint_dir, state)
    floor = None
    if "text" in ctx.models:
        with phases("text floor (no private data)") as phase:
            floor = text_floor(ctx, settings, synthetic)
            phase.detail = _narrated(pd.read_parquet(io.BytesIO(floor)))
    with phases("evaluation at the sites") as phase:
        evaluations = evaluate_at_sites(
            grid, nodes, ctx.plan.to_json(), data, sha,
            settings.synthetic_records if settings.local_only else 0, settings.seed,
            settings.round_timeout_s, state, lambda: save_checkpoint(settings.checkpoint_dir, state),
            text_floor=floor)
        phase.detail = f"{len(evaluations)} of {len(nodes)} site(s) scored the release"
    run = {"fedsynth_version": __version__, "seed": settings.seed, "profile": settings.profile,
           "generator": settings.kind, "sites": sorted(nodes.values()), "rounds": settings.rounds,
           "duration_s": round(time.time() - started, 1),
           "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
           "phases": phases.table()}
    privacy = privacy_section({site: e["spend"] for site, e in evaluations.items()}, ctx.plan)
    release = {"sha256": sha, "records": len(synthetic)}
    write_report(settings.run_dir, build_report(run, privacy, evaluations, release), synthetic)


def _narrated(frame: pd.DataFrame) -> str:
    """What a narration phase wrote, in words."""
    if FLAG_COLUMN not in frame:
        return f"{len(frame):,} record(s), no narratives"
    written = int(frame[FLAG_COLUMN].notna().sum())
    return (f"{written:,} note(s) on {len(frame):,} record(s), "
            f"{int(frame[FLAG_COLUMN].fillna(False).astype(bool).sum())} still flagged by the gate")


def text_floor(ctx: CoordinatorContext, settings: FederationSettings,
               synthetic: pd.DataFrame) -> bytes | None:
    """The text floor: the first ``FLOOR_RECORDS`` released records narrated by the narrative
    model without any private data (the public warm start alone, epsilon 0), for the sites to
    score beside the release (``baselines.text_floor``); saved, so a resumed run sends the same."""
    if "text" not in ctx.models:
        return None
    saved = settings.run_dir / "text_floor.parquet"
    if saved.exists():
        return saved.read_bytes()
    floor = family_of(ctx.plan.models["text"]).build(ctx.schema, ctx.plan.models["text"], ctx.plan.seed)
    if settings.corpus is not None:
        floor.warm_start(settings.corpus)
    records = synthetic.drop(columns=[ctx.schema.narrative.name, FLAG_COLUMN], errors="ignore")
    narrated = add_narratives(records.iloc[:FLOOR_RECORDS], floor, None, settings.seed,
                              label="text floor")
    data = table_bytes(narrated)
    atomic_write_bytes(saved, data)
    return data


def _release(ctx: CoordinatorContext, settings: FederationSettings, state: RunState,
             phases: Phases) -> tuple[pd.DataFrame, bytes]:
    """The released records and their Parquet bytes (what is hashed, sent and published as
    ``synthetic.parquet``, beside ``synthetic.csv``); the saved ones when they are the release
    already announced."""
    saved = settings.run_dir / "synthetic.parquet"
    if state.release_sha256 and saved.exists():
        data = saved.read_bytes()
        if hashlib.sha256(data).hexdigest() == state.release_sha256:
            return pd.read_parquet(io.BytesIO(data)), data
    with phases("synthesis") as phase:
        synthetic = ctx.models["tabular"].sample(settings.synthetic_records, seed=settings.seed)
        phase.detail = f"{len(synthetic):,} record(s) from the global tabular model"
    if "text" in ctx.models:
        with phases("narration") as phase:
            synthetic = add_narratives(synthetic, ctx.models["text"], settings.narrated_records,
                                       settings.seed, label="narratives")
            phase.detail = _narrated(synthetic)
    data = table_bytes(synthetic)
    write_table(synthetic, settings.run_dir / "synthetic.csv")
    atomic_write_bytes(saved, data)
    return synthetic, data
