"""Narrative models side by side at one epsilon for text per site (issue 13, "Show"): the public
warm start alone (the floor), private evolution over every site's notes, DP-LoRA at one site, the
two together, and LoRA without DP, each narrating the same released records and scored the same
way, in one run on one machine.

    python benchmarks/narratives.py [--sites 3] [--records 600] [--narrate 150] [--steps 6]
                                    [--batch 64] [--epsilon 3] [--seed 0] [--base smollm2|tiny]
                                    [--only floor,pe,dp-lora,pe+dp-lora,lora] [--threads 1]

Data: ``--sites`` simulated hospitals of ``--records`` records (``write_sim_data``), each cut by
``stratified_split`` (60/20/20, seeded). The canaries are planted as in a simulated run
(``simulation.canaries.plant_canaries``: 3 secrets, 2 copies each, in the first site's train
notes) before anything trains or votes. Train notes are what the models learn from or vote with;
the released records are ``--narrate`` records of the pooled holdout splits with their narrative
removed (real field combinations, so the rows differ only in their text), and the same holdout's
fields stand in for the released tabular model when private evolution draws its candidate
records (``pool_records`` of them). Scoring (``common.metrics.text.text_metrics``) is pooled over
the sites: the consistency classifier learns from the pooled train notes, the synthetic notes are
compared with the pooled test notes, MAUVE's ceiling draws its other real notes from the pooled
holdout. Canary exposure (``canary_exposure_bits``, 63 candidates, so 0 to 6 bits, ~1.44 by
chance) is measured on each row's final model (once per distinct adapter: the floor's and PE's are
the same, the warm start's).

Rows (``--only`` picks some):
  floor       the warm start only (``NarrativeModel.warm_start(PublicCorpus.default())``): no
              private data, epsilon 0;
  pe          warm start, then private evolution with every site voting (its own NarrativeModel at
              ``--epsilon``, a noise seed, an in-memory Ledger, ``plan(len(train), 0)``, the whole
              text budget on ``pe.rounds`` vote rounds) through the ``pe`` stage's coordinator
              (``PrivateEvolutionCoordinator``, built from ``RunPlan.standard`` and ``stages_of``);
  dp-lora     warm start, then ``--steps`` DP-SGD steps at the first site alone (its train notes),
              logical batch ``--batch`` in physical batches of ``--physical``, the whole budget;
              ``max_noise_per_batch`` is off so the plan runs, and its sigma/B is reported;
  pe+dp-lora  the same DP-LoRA at pe share 0.5 (planned with the votes reserved, so the first
              site's one text budget covers both), its adapter then writing private evolution's
              candidates, every site voting at the other half;
  lora        the dp-lora row without DP (epsilon None): same steps, batch and data.
Federated DP-LoRA is not run: on 2 CPU cores a site's step costs minutes.

Timings: "train/PE s" is the wall time of the DP-SGD steps and of private evolution (its
candidate notes, rewrites and every site's votes); "narrate s" is writing the released notes
through the gate. Prints a markdown table; runs are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from common.data import load_site_data, stratified_split
from common.metrics.text import text_metrics
from common.privacy.ledger import Ledger
from common.run_plan import RunPlan
from common.schema import Schema
from common.stages import stages_of
from common.stages.base import CoordinatorContext, Payload
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel
from common.text.public_corpus import PublicCorpus
from simulation.canaries import canary_exposure_bits, plant_canaries
from simulation.hospitals import write_sim_data
from simulation.profiles import PROFILES

ROWS = ("floor", "pe", "dp-lora", "pe+dp-lora", "lora")
TITLES = {"floor": "floor: warm start only", "pe": "PE (all sites vote)",
          "dp-lora": "DP-LoRA (site 1)", "pe+dp-lora": "PE + DP-LoRA (share 0.5)",
          "lora": "LoRA without DP (site 1)"}


@dataclass
class Site:
    name: str
    train: pd.DataFrame  # the notes a model learns from or votes with
    test: pd.DataFrame
    holdout: pd.DataFrame


@dataclass
class Data:
    schema: Schema
    sites: list[Site]  # the first carries the canaries
    released: pd.DataFrame  # the records every row narrates (no narrative column)
    canary_spec: Path

    def pooled(self, split: str) -> pd.DataFrame:
        return pd.concat([getattr(s, split) for s in self.sites], ignore_index=True)


@dataclass
class Row:
    key: str
    epsilon: float | None
    metrics: dict[str, Any]
    canary_bits: float
    fit_s: float  # DP-SGD steps and private evolution (candidates, rewrites, votes)
    narrate_s: float
    noise: str = "-"  # sigma/B of the DP-SGD plan, the votes' noise multiplier
    spent: float | None = None  # epsilon spent at the first site
    notes: dict[str, Any] = field(default_factory=dict)


class HeldOutRecords:
    """Stands in for the released tabular model (``.sample(n, seed=)``): records of the pooled
    holdout, their narrative dropped."""

    def __init__(self, records: pd.DataFrame) -> None:
        self.records = records.reset_index(drop=True)

    def sample(self, n: int, seed: int | None = None) -> pd.DataFrame:
        return self.records.sample(n=n, replace=n > len(self.records),
                                   random_state=seed).reset_index(drop=True)


def prepare(args: argparse.Namespace, folder: Path) -> Data:
    paths = write_sim_data(folder / "sites", args.sites, args.records, args.seed)
    schema = Schema.load(paths[-1])
    files = {path.stem: path for path in paths[:-1]}
    planted = plant_canaries(files, schema, args.seed, folder / "canaries")
    files[planted.site] = planted.site_file
    column = schema.narrative.name
    sites = []
    for name in [planted.site, *sorted(set(files) - {planted.site})]:
        split = stratified_split(load_site_data(files[name], schema), schema.label.name, args.seed)
        text = split["train"][column].astype("string").str.strip()
        train = split["train"][text.notna() & (text != "")].reset_index(drop=True)
        sites.append(Site(name, train, split["test"], split["holdout"]))
    holdout = pd.concat([s.holdout for s in sites], ignore_index=True)
    released = holdout.sample(n=min(args.narrate, len(holdout)), random_state=args.seed)
    return Data(schema, sites, released.drop(columns=[column]).reset_index(drop=True),
                planted.spec)


def text_config(args: argparse.Namespace, share: float = 1.0, rounds: int | None = None) -> dict[str, Any]:
    """The quick profile's text config (prompt fields, target and sampling lengths, PE settings)
    with this run's base, logical/physical batch and PE share; the refusal threshold off."""
    quick = PROFILES["quick"].text_config
    pe = {**quick["pe"], "share": share, "candidates": args.candidates, "pool_records": args.pool,
          "rounds": args.pe_rounds if rounds is None else rounds}
    return {**quick, "base": args.base, "batch_size": args.batch, "physical_batch_size": args.physical,
            "max_noise_per_batch": None, "pe": pe}


def warm(schema: Schema, config: Mapping[str, Any], seed: int, epsilon: float | None = None,
         noise_seed: int | None = None) -> NarrativeModel:
    model = NarrativeModel(schema, epsilon=epsilon, config=config, device="cpu", ledger=Ledger(),
                           seed=seed, noise_seed=noise_seed)
    model.warm_start(PublicCorpus.default(), log=lambda m: print(f"  {m}", file=sys.stderr))
    return model


def voting_sites(data: Data, config: Mapping[str, Any], epsilon: float, seed: int, steps: int,
                 first: NarrativeModel | None = None) -> list[tuple[NarrativeModel, pd.DataFrame]]:
    """Each site's own NarrativeModel (its epsilon, noise seed, in-memory ledger), planned for the
    run's DP-SGD steps (``steps``; 0 for votes only) with the votes reserved; ``first`` is the
    first site's model when it has trained already (one budget for its steps and its votes)."""
    out = []
    for i, site in enumerate(data.sites):
        model = first if i == 0 and first is not None else NarrativeModel(
            data.schema, epsilon=epsilon, config=config, device="cpu", ledger=Ledger(), seed=seed,
            noise_seed=seed + 1000 * (i + 1))
        model.plan(len(site.train), steps)
        out.append((model, site.train))
    return out


def private_evolution(data: Data, coordinator_model: NarrativeModel, config: Mapping[str, Any],
                      sites: Sequence[tuple[NarrativeModel, pd.DataFrame]], seed: int,
                      steps: int = 0) -> dict[str, Any]:
    """The ``pe`` stage's coordinator over in-process sites: request, every site's
    ``release_votes``, ``update``, until it stops; sets ``coordinator_model.examples``."""
    plan = RunPlan.standard(run="narratives-benchmark", seed=seed, kind="mst", rounds=0,
                            local_steps=0, tabular_config={}, text_config=dict(config),
                            text_rounds=1 if steps else 0, text_local_steps=steps)
    stage = next(s for s in stages_of(plan) if s.type == "pe")
    ctx = CoordinatorContext(data.schema, plan, {"tabular": HeldOutRecords(data.pooled("holdout")),
                                                 "text": coordinator_model}, average=_no_average)
    half = stage.coordinator(ctx)
    candidates, vote_s = None, 0.0
    while (request := half.request()) is not None:
        texts, keys = [str(t) for t in request.values["texts"]], [str(k) for k in request.values["keys"]]
        candidates = len(texts) if candidates is None else candidates
        round_ = half.step + 1
        replies = {}
        for node, (model, train) in enumerate(sites):
            began = time.perf_counter()
            reply = Payload(arrays={"votes": model.release_votes(train, texts, keys, round_)})
            vote_s += time.perf_counter() - began
            problem = half.problem(node, reply)
            if problem:
                raise RuntimeError(f"site {node + 1}, PE round {round_}: {problem}")
            replies[node] = reply
        half.update(replies)
        print(f"  PE round {round_}: {len(texts)} candidates, summed noisy votes "
              f"{sum(half.pool.votes):.0f}", file=sys.stderr, flush=True)
    examples = coordinator_model.examples
    return {"candidates": candidates or 0, "sites_vote_s": vote_s, "example_keys": len(examples),
            "examples": sum(len(pool) for pool in examples.values())}


def _no_average(updates: Any, weights: Any) -> Any:
    raise RuntimeError("the pe stage does not average")


def train_site(data: Data, config: Mapping[str, Any], epsilon: float | None, steps: int,
               seed: int) -> NarrativeModel:
    """Warm start, then ``steps`` (DP-)LoRA steps on the first site's train notes."""
    model = warm(data.schema, config, seed, epsilon, noise_seed=seed)
    model.plan(len(data.sites[0].train), steps)
    model.train_steps(data.sites[0].train, steps)
    return model


def adapter_digest(model: NarrativeModel) -> str:
    """The adapter's weights as a hash: rows with the same LM (the floor and PE, whose private
    part is only the style examples) have the same canary exposure, measured once."""
    digest = hashlib.sha256()
    for name, array in sorted(model.get_weights().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def run_row(key: str, data: Data, args: argparse.Namespace, exposures: dict[str, float]) -> Row:
    eps, seed, steps = args.epsilon, args.seed, args.steps
    start = time.perf_counter()
    noise, spent, notes = "-", None, {}
    if key == "floor":
        model, eps = warm(data.schema, text_config(args, rounds=0), seed), 0.0
    elif key == "pe":
        config = text_config(args)
        model = warm(data.schema, config, seed)
        sites = voting_sites(data, config, eps, seed, 0)
        notes = private_evolution(data, model, config, sites, seed)
        noise, spent = f"votes σ {sites[0][0]._plan['pe_noise']:.2f}", sites[0][0].epsilon_spent()
    elif key in ("dp-lora", "lora"):
        epsilon = eps if key == "dp-lora" else None
        model = train_site(data, text_config(args, rounds=0), epsilon, steps, seed)
        if epsilon is None:
            eps = None
        else:
            noise, spent = f"σ/B {model.noise_per_batch:.4f}", model.epsilon_spent()
        notes = {"loss": model.local_loss}
    elif key == "pe+dp-lora":
        config = text_config(args, share=0.5)
        first = train_site(data, config, eps, steps, seed)
        model = NarrativeModel(data.schema, epsilon=None, config=config, device="cpu", seed=seed)
        model.set_weights(first.get_weights())
        sites = voting_sites(data, config, eps, seed, steps, first=first)
        notes = {"loss": first.local_loss, **private_evolution(data, model, config, sites, seed, steps)}
        noise = f"σ/B {first.noise_per_batch:.4f}; votes σ {first._plan['pe_noise']:.2f}"
        spent = first.epsilon_spent()
    else:
        raise ValueError(key)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = model.sample(data.released, seed=seed)
    narrate_s = time.perf_counter() - start
    notes.update(model.last_sample_stats)
    metrics = text_metrics(data.schema, data.pooled("train"), data.pooled("test"), synthetic, seed,
                           holdout=data.pooled("holdout")) or {}
    digest = adapter_digest(model)
    if digest not in exposures:
        exposures[digest] = canary_exposure_bits(model, data.canary_spec, seed)[1]
    bits = metrics["canary_exposure_bits"] = exposures[digest]
    flagged = synthetic[synthetic[FLAG_COLUMN]]
    print(f"  example note ({key}): {synthetic[data.schema.narrative.name].iloc[0]!r}; "
          f"{len(flagged)} flagged", file=sys.stderr, flush=True)
    return Row(key, eps, metrics, bits, fit_s if key != "floor" else 0.0, narrate_s, noise, spent,
               notes)


def _ratio(value: Any, ceiling: Any) -> str:
    if not isinstance(value, float) or not isinstance(ceiling, float):
        return "-"
    return f"{value:.3f} / {ceiling:.3f} ({value / ceiling:.2f})" if ceiling else f"{value:.3f}"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("-" if value is None else str(value))


COLUMNS = ("model", "ε (site 1 spent)", "DP noise", "consistency / real (ratio)", "gate pass",
           "MAUVE / ceiling (ratio)", "MAUVE lexical / ceiling (ratio)",
           "distinct-2 / real (ratio)", "train 8-gram share", "canary bits", "train/PE s",
           "narrate s")


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        m = r.metrics
        eps = "none (no DP)" if r.epsilon is None else f"{r.epsilon:g}"
        if r.spent is not None:
            eps += f" ({r.spent:.2f})"
        cells = [TITLES[r.key], eps, r.noise,
                 _ratio(m.get("consistency_accuracy"), m.get("real_consistency_accuracy")),
                 _num(m.get("gate_pass_rate"), 2), _ratio(m.get("mauve"), m.get("mauve_ceiling")),
                 _ratio(m.get("mauve_alt"), m.get("mauve_alt_ceiling")),
                 _ratio(m.get("distinct_2"), m.get("real_distinct_2")),
                 _num(m.get("train_8gram_share"), 3), f"{r.canary_bits:.2f}",
                 "-" if r.key == "floor" else f"{r.fit_s:.0f}", f"{r.narrate_s:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--records", type=int, default=600, help="records per site")
    parser.add_argument("--narrate", type=int, default=150, help="released records narrated")
    parser.add_argument("--steps", type=int, default=6, help="DP-SGD steps of the LoRA rows")
    parser.add_argument("--batch", type=int, default=64, help="logical (Poisson) batch")
    parser.add_argument("--physical", type=int, default=16, help="physical batch")
    parser.add_argument("--epsilon", type=float, default=3.0, help="text epsilon per site")
    parser.add_argument("--pe-rounds", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4, help="PE candidates per key")
    parser.add_argument("--pool", type=int, default=400, help="PE pool_records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", default="smollm2", help="smollm2, tiny (smoke runs) or local:PATH")
    parser.add_argument("--only", default="", help=f"comma list of rows: {','.join(ROWS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on shared cores, more threads spin)")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()] or list(ROWS)
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    command = " ".join(["python benchmarks/narratives.py", *(sys.argv[1:] if argv is None else argv)])
    rows: list[Row] = []
    exposures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fedsynth-narratives-") as folder:
        data = prepare(args, Path(folder))
        for key in [k for k in ROWS if k in wanted]:
            rows.append(run_row(key, data, args, exposures))
            r = rows[-1]
            print(f"done: {key} ({r.fit_s:.0f} s train/PE, {r.narrate_s:.0f} s narrate; "
                  f"{r.notes}; {r.metrics})", file=sys.stderr, flush=True)
    total = time.perf_counter() - began
    train_sizes = ", ".join(str(len(s.train)) for s in data.sites)
    print(f"# Narratives: floor, PE, DP-LoRA at epsilon {args.epsilon:g} per site ({args.base})")
    print("command:", command)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU, torch "
          f"{torch.__version__} with {args.threads} thread(s); total wall {total / 60:.1f} min")
    print(f"data: {args.sites} simulated sites x {args.records} records (train notes {train_sizes}); "
          f"{len(data.released)} pooled-holdout records narrated; LoRA rows: {args.steps} steps, "
          f"logical batch {args.batch}, physical {args.physical}, site 1; PE: {args.pe_rounds} "
          f"rounds, {args.candidates} candidates per key from {args.pool} records\n")
    print(markdown(rows))
    for r in rows:
        extra = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.notes.items()}
        print(f"\n{TITLES[r.key]}: {extra}", end="")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
