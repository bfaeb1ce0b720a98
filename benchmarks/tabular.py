"""Tabular generators side by side: federated MST and AIM (per-site noise), central MST and AIM,
DP-VAE and DP-DDPM at several epsilons against the independent-marginals baseline and SDV's
GaussianCopula and TVAE (non-DP peers).

    python benchmarks/tabular.py [--quick] [--data sim|neiss] [--seed N] [--threads N]

Every row is measured in one run on one machine, so fit times, samples/s and the DP-SGD overhead
(fit time over the same model, same steps, without DP) compare. Fidelity is scored against the
held-out test split, TSTR trains on as many synthetic records as the real train split, and the
marginals baseline and the real train split itself ("real train": TSTR = TRTR, the ceiling) are
always in the table (BRIEF, "What the figures mean"). Federated MST and AIM split the train split by the
schema's site column (the simulated hospitals; NEISS strata) and runs the ``marginals`` stage's site and
coordinator halves in one process (``fit_federated``): each site adds its own noise. Prints a
markdown table; runs are recorded in benchmarks/RESULTS.md. SDV is a bench-only extra
(``pip install -e '.[bench]'``, BUSL licence), never a runtime dependency: without it those rows
are skipped with the reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from common.data import load_site_data, stratified_split
from common.marginal.model import MarginalSynthesizer, fit_federated
from common.metrics.baselines import IndependentMarginals
from common.metrics.features import TABLE, modeled, sdmetrics_frame, sdv_metadata
from common.metrics.fidelity import fidelity_metrics
from common.metrics.utility import UtilityScore, augmentation_plan, augmented, trtr, tstr
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_sites

ROOT = Path(__file__).resolve().parents[1]
EPSILONS: tuple[float | None, ...] = (1.0, 3.0, 10.0, None)  # None = the same model without DP
NEISS = ROOT / "examples" / "neiss"


@dataclass(frozen=True)
class Profile:
    """Sizes of a run; the models' settings below are the same in both profiles."""

    sim_sites: int
    records_per_site: int
    steps: int
    neiss_steps: int  # NEISS encodes ~2,400 wide (product code lists): each step costs ~5x more
    tvae_epochs: int

    def steps_for(self, data: str) -> int:
        return self.neiss_steps if data == "neiss" else self.steps


# TVAE gets SDV's default 300 epochs in the full profile (on 3,014 records, 2,100 batches of 500:
# 3.5 times our models' steps); the quick one cuts both.
PROFILES = {"quick": Profile(sim_sites=5, records_per_site=300, steps=150, neiss_steps=100,
                             tvae_epochs=75),
            "full": Profile(sim_sites=5, records_per_site=1000, steps=600, neiss_steps=300,
                            tvae_epochs=300)}
# Fixed in code, never tuned on the benchmark data: a batch of ~1/3 of the records keeps the DP
# noise per step low; small networks keep the noise's norm (it grows with the parameter count) low.
# The label statistics take the synthesizer's default share of epsilon: 0.5 for the VAE (label
# counts + class-conditional tables), 0.1 for the DDPM (label counts only).
MODEL_CONFIG: dict[str, dict[str, Any]] = {
    "vae": {"batch_size": 1024, "lr": 1e-2, "model": {"hidden": [64, 64], "latent_dim": 16}},
    "ddpm": {"batch_size": 1024, "lr": 3e-3, "model": {}},
}
MST_CONFIG: dict[str, Any] = {}  # the marginal model's defaults (16 bins, 2,000 iterations)


class Generator(Protocol):
    def fit(self, df: pd.DataFrame) -> Any: ...

    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Candidate:
    name: str
    epsilon: float | None
    make: Callable[[], Generator]


@dataclass
class Row:
    name: str
    epsilon: float | None
    fit_s: float
    fit_cpu_s: float
    samples_per_s: float
    metrics: dict[str, float]
    peak_mb: float = float("nan")
    overhead: float | None = None


class SDVPeer:
    """An SDV single-table synthesizer behind the fit/sample protocol, on metadata built from the
    schema (SDV's metadata-first design) and the same plain-dtype frames sdmetrics gets."""

    def __init__(self, schema: Schema, synthesizer: str, **settings: Any) -> None:
        self.schema, self.synthesizer, self.settings = schema, synthesizer, settings
        self.model: Any = None

    def fit(self, df: pd.DataFrame) -> SDVPeer:
        from sdv import single_table
        from sdv.metadata import Metadata

        metadata = Metadata.load_from_dict(sdv_metadata(self.schema))
        self.model = getattr(single_table, self.synthesizer)(metadata, **self.settings)
        self.model.fit({TABLE: sdmetrics_frame(modeled(df, self.schema), self.schema)})
        return self

    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        """SDV seeds its own sampling; ``seed`` is accepted for the protocol only. Conditions go
        through SDV's conditional sampling (rejection sampling for TVAE): a class the model
        (almost) never produces yields no records, which augmentation counts as a short pool."""
        if not conditions:
            return self.model.sample(n)[TABLE]
        from sdv.sampling import Condition

        try:
            drawn = self.model.sample_from_conditions([Condition(column_values=dict(conditions),
                                                                 num_rows=n)])
        except ValueError:  # "Unable to sample any rows for the given conditions"
            return self.model.sample(1)[TABLE].iloc[:0]
        return drawn[TABLE]


def load_data(data: str, profile: Profile, seed: int) -> tuple[Schema, pd.DataFrame, str]:
    """The pooled typed frame, its schema and a description for the report."""
    if data == "sim":
        sites = simulate_sites(profile.sim_sites, profile.records_per_site, seed)
        return (ed_trauma_schema(list(sites)), pd.concat(sites.values(), ignore_index=True),
                f"simulated hospitals, {profile.sim_sites} sites x {profile.records_per_site} "
                f"records, pooled")
    schema = Schema.load(NEISS / "schema.yaml")
    return (schema, load_site_data(NEISS / "neiss_1k.csv", schema),
            "NEISS example (examples/neiss/neiss_1k.csv), 5 strata pooled")


def candidates(schema: Schema, steps: int, tvae_epochs: int,
               seed: int) -> tuple[list[Candidate], str | None]:
    """Every generator of the table, and why the SDV peers are missing if they are."""
    ours: list[Candidate] = []
    for kind in ("mst", "aim"):
        name = kind.upper()
        ours += [Candidate(f"federated {name} (per-site noise)", eps,
                           lambda eps=eps, kind=kind: FederatedMarginals(schema, kind, eps, seed))
                 for eps in EPSILONS if eps is not None]
        ours += [Candidate(f"{name} (central)" if eps is not None else f"{name} (no DP)", eps,
                           lambda eps=eps, kind=kind: MarginalSynthesizer(
                               schema, kind=kind, epsilon=eps, config=MST_CONFIG, noise_seed=seed))
                 for eps in EPSILONS]
    ours += [Candidate(f"DP-{kind.upper()} from federated MST (ε 1.5 + 1.5)", 3.0,
                       lambda kind=kind: WarmStarted(schema, kind, 1.5, 1.5, steps, seed))
             for kind in MODEL_CONFIG]
    ours += [Candidate(f"DP-{kind.upper()}" if eps is not None else f"{kind.upper()} (no DP)", eps,
                       _synthesizer(schema, kind, eps, steps, seed))
             for kind in MODEL_CONFIG for eps in EPSILONS]
    rows = [Candidate("independent marginals", None, lambda: IndependentMarginals(schema)), *ours]
    try:
        import sdv
    except ImportError as exc:
        return rows, f"SDV peers skipped: {exc}. Install the bench extra: pip install -e '.[bench]'."
    rows += [Candidate(f"SDV {sdv.__version__} GaussianCopula", None,
                       lambda: SDVPeer(schema, "GaussianCopulaSynthesizer")),
             Candidate(f"SDV {sdv.__version__} TVAE ({tvae_epochs} epochs)", None,
                       lambda: SDVPeer(schema, "TVAESynthesizer", epochs=tvae_epochs,
                                       enable_gpu=False))]
    return rows, None


class FederatedMarginals:
    """The ``marginals`` stage (MST or AIM) over the sites of the train split (its site column),
    in one process."""

    def __init__(self, schema: Schema, kind: str, epsilon: float, seed: int,
                 config: Mapping[str, Any] = MST_CONFIG) -> None:
        self.schema, self.kind, self.epsilon, self.seed, self.config = schema, kind, epsilon, seed, config
        self.model: MarginalSynthesizer | None = None

    def fit(self, df: pd.DataFrame) -> FederatedMarginals:
        site = self.schema.site.name
        parts = [part.reset_index(drop=True) for _, part in df.groupby(site, observed=True)]
        self.model = fit_federated(self.schema, parts, self.epsilon, config=self.config,
                                   noise_seed=self.seed, kind=self.kind)
        return self

    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        return self.model.sample(n, conditions, seed)


class WarmStarted:
    """A deep generator that learns from the marginal model first (issue 12's question: does it
    beat both parents?): federated MST at ``mst_epsilon``, then, at no privacy cost, the label
    counts from its label 1-way and ``steps`` non-DP steps on four times as many of its samples
    as real train records, then ``steps`` DP-SGD steps on the real train split at
    ``deep_epsilon`` (1% of it reserved for label statistics it never releases). The two
    epsilons add up (basic composition, an upper bound on the pair's spend)."""

    def __init__(self, schema: Schema, kind: str, mst_epsilon: float, deep_epsilon: float,
                 steps: int, seed: int) -> None:
        self.schema, self.kind, self.steps, self.seed = schema, kind, steps, seed
        self.mst = FederatedMarginals(schema, "mst", mst_epsilon, seed)
        self.deep_epsilon = deep_epsilon
        self.model: TabularSynthesizer | None = None

    def fit(self, df: pd.DataFrame) -> WarmStarted:
        self.mst.fit(df)
        config = {**MODEL_CONFIG[self.kind], "steps": self.steps}
        public = TabularSynthesizer(self.schema, kind=self.kind, epsilon=None, config=config,
                                    device="cpu", seed=self.seed)
        public.set_label_counts(self.mst.model.label_counts)
        public.train_steps(self.mst.sample(4 * len(df), seed=self.seed), self.steps)
        private = TabularSynthesizer(self.schema, kind=self.kind, epsilon=self.deep_epsilon,
                                     config={**config, "counts_fraction": 0.01}, device="cpu",
                                     seed=self.seed, noise_seed=self.seed)
        private.plan(len(df), self.steps)
        private.set_weights(public.get_weights())
        private.set_label_counts(self.mst.model.label_counts)
        private.train_steps(df, self.steps)
        self.model = private
        return self

    def sample(self, n: int, conditions: Mapping[str, Any] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        return self.model.sample(n, conditions, seed)


def _synthesizer(schema: Schema, kind: str, epsilon: float | None, steps: int,
                 seed: int) -> Callable[[], TabularSynthesizer]:
    # noise_seed makes the benchmark repeatable; released models keep OS entropy (the default).
    config = {**MODEL_CONFIG[kind], "steps": steps}
    return lambda: TabularSynthesizer(schema, kind=kind, epsilon=epsilon, config=config,
                                      device="cpu", seed=seed, noise_seed=seed)


def evaluate(candidate: Candidate, train: pd.DataFrame, test: pd.DataFrame, schema: Schema,
             seed: int) -> Row:
    """Fit on train, draw as many records as train, score against test."""
    torch.manual_seed(seed)  # VAE noise, DDPM timesteps and SDV's TVAE draw from torch's global RNG
    generator = candidate.make()
    reset_peak_memory()
    start, cpu = time.perf_counter(), time.process_time()
    generator.fit(train)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_memory_mb()
    start = time.perf_counter()
    synth = generator.sample(len(train), seed=seed)
    sample_s = time.perf_counter() - start
    label = schema.label.name

    def conditional(value: str, n: int) -> pd.DataFrame:
        return generator.sample(n, conditions={label: value}, seed=seed)

    boosted = augmented(train, test, schema, conditional, seed)
    metrics = {**fidelity_metrics(test, synth, schema, seed),
               "tstr": tstr(synth, test, schema, seed).macro_f1, "augmented": boosted.macro_f1,
               "rare_recall": rare_recall(boosted, train, schema)}
    return Row(candidate.name, candidate.epsilon, fit_s, fit_cpu_s, len(train) / sample_s, metrics, peak)


def rare_recall(score: UtilityScore, train: pd.DataFrame, schema: Schema) -> float:
    """Mean test recall of the rare classes (those the augmentation tops up: rarer than the
    median class in train), the classes synthetic records are meant to help."""
    rare = [c for c in augmentation_plan(train, schema) if c in score.per_class_recall]
    return float(sum(score.per_class_recall[c] for c in rare) / len(rare)) if rare else float("nan")


def reset_peak_memory() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak resident set (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    """The process's peak resident set since the last reset (MB): the fit's peak, with the
    process's own baseline (interpreter, torch, JAX once loaded) included."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reference_row(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, seed: int) -> Row:
    """The real train split scored like a synthetic set: the ceiling of every column."""
    real = trtr(train, test, schema, seed)
    metrics = {**fidelity_metrics(test, train, schema, seed), "tstr": real.macro_f1,
               "augmented": real.macro_f1, "rare_recall": rare_recall(real, train, schema)}
    return Row("real train (TSTR = TRTR)", None, float("nan"), float("nan"), float("nan"), metrics)


def add_overheads(rows: list[Row]) -> None:
    """DP-SGD time overhead: each DP row's fit CPU time over its model's no-DP fit (same steps).
    CPU time, with one torch thread, is what the fit costs; wall time on shared cores also
    counts the neighbours' load."""
    plain = {row.name.split()[0]: row.fit_cpu_s for row in rows if row.name.endswith("(no DP)")}
    for row in rows:
        kind = row.name.removeprefix("DP-")
        if row.name.startswith("DP-") and kind in plain:
            row.overhead = row.fit_cpu_s / plain[kind]


COLUMNS = ("generator", "ε", "fit s (CPU s)", "fit peak MB", "samples/s", "DP overhead", "Column Shapes",
           "Column Pair Trends", "detection AUC", "Wasserstein", "TSTR macro-F1",
           "augmented macro-F1", "rare-class recall (augmented)")


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        m = r.metrics
        fit = "-" if pd.isna(r.fit_s) else f"{r.fit_s:.1f} ({r.fit_cpu_s:.1f})"
        cells = [r.name, "-" if r.epsilon is None else f"{r.epsilon:g}", fit, _num(r.peak_mb, 0),
                 _num(r.samples_per_s, 0), "-" if r.overhead is None else f"{r.overhead:.1f}x",
                 *(_num(m[k], 3) for k in ("column_shapes", "column_pair_trends", "detection_auc",
                                           "wasserstein_mean", "tstr", "augmented", "rare_recall"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float, digits: int) -> str:
    return "-" if pd.isna(value) else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer steps")
    parser.add_argument("--data", choices=("sim", "neiss"), default="sim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated name parts: run only the "
                        "generators whose name contains one (the marginals baseline always runs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on shared cores, more threads spin and slow down)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = PROFILES["quick" if args.quick else "full"]
    schema, frame, described = load_data(args.data, profile, args.seed)
    split = stratified_split(frame, schema.label.name, args.seed)
    train, test = split["train"], split["test"]
    steps = profile.steps_for(args.data)
    print(f"# Tabular generators: {described}")
    print("command:", " ".join(["python benchmarks/tabular.py", *(sys.argv[1:] if argv is None else argv)]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads {args.threads}, "
          f"no GPU used; train {len(train)} / test {len(test)} records; steps {steps}; "
          f"models {MODEL_CONFIG}, MST {MST_CONFIG or 'defaults'}\n", flush=True)
    rows = [reference_row(train, test, schema, args.seed)]
    plan, skipped = candidates(schema, steps, profile.tvae_epochs, args.seed)
    if skipped:
        print(skipped, flush=True)
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    plan = [c for c in plan if not wanted or c.name == "independent marginals"
            or any(w in c.name for w in wanted)]
    for candidate in plan:
        rows.append(evaluate(candidate, train, test, schema, args.seed))
        print(f"  done: {candidate.name} eps={candidate.epsilon} ({rows[-1].fit_s:.1f} s fit)",
              file=sys.stderr, flush=True)
    add_overheads(rows)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
