"""What federating costs: wall time per round and in total for 2, 4 and 8 simulated sites on
Flower's Simulation Engine, against the same total number of DP-SGD steps in one process.

    python benchmarks/federation.py [--sites 2 4 8] [--records-per-site 400] [--rounds 3]
                                    [--local-steps 20] [--generator vae] [--seed 0] [--threads 1]

The federated runs use the simulation pipeline's own pieces (its sites and coordinator settings,
the deployment ClientApp and ServerApp, each site's ledger and saved rounds); round times come
from the coordinator's run state. The one-process row of each site count trains one
TabularSynthesizer on the pooled train splits for sites x rounds x local steps: the steps the
sites ran between them, with the same model, batch size and epsilon. Every row is measured in
one run, so the ratios compare. Prints a markdown table; runs are recorded in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from server.checkpoint import load_checkpoint
from simulation.baselines import pooled_split
from simulation.federated import run_simulated_federation
from simulation.hospitals import write_sim_data
from simulation.pipeline import simulated_sites, simulation_settings
from simulation.profiles import PROFILES, RunProfile

EPSILON = 3.0  # the sites' default budget
TABULAR_ROUNDS = "2-fedavg-tabular"  # the stage whose rounds are timed


@dataclass
class Row:
    sites: int
    total_steps: int
    federated_s: float
    round_s: list[float]
    one_process_s: float

    @property
    def setup_s(self) -> float:
        """Everything outside the rounds: engine start, handshake, label counts, saving, shutdown."""
        return self.federated_s - sum(self.round_s)


def profile_for(args: argparse.Namespace, sites: int) -> RunProfile:
    """The quick profile's model, at the benchmark's sizes."""
    return RunProfile("bench", sites=sites, records_per_site=args.records_per_site,
                      rounds=args.rounds, local_steps=args.local_steps, synthetic_records=1,
                      tabular_config=PROFILES["quick"].tabular_config)


def measure(profile: RunProfile, generator: str, seed: int, work: Path) -> Row:
    """One federated run and the same total steps in one process, on the same data."""
    paths = write_sim_data(work / "data", profile.sites, profile.records_per_site, seed)
    files = {p.stem: p for p in paths if p.suffix == ".csv"}
    schema_path = work / "data" / "schema.yaml"
    sites = simulated_sites(files, schema_path, work / "sites", EPSILON)
    settings = simulation_settings(len(sites), schema_path, work / "run", profile, generator, seed)
    start = time.perf_counter()
    run_simulated_federation(sites, settings)
    federated_s = time.perf_counter() - start
    state = load_checkpoint(settings.run_dir / "checkpoint")
    total_steps = profile.sites * profile.rounds * profile.local_steps
    return Row(profile.sites, total_steps, federated_s, state.step_seconds[TABULAR_ROUNDS],
               one_process_seconds(files, Schema.load(schema_path), profile, generator, seed,
                                   total_steps))


def one_process_seconds(files: dict[str, Path], schema: Schema, profile: RunProfile,
                        generator: str, seed: int, steps: int) -> float:
    """Wall time of ``steps`` DP-SGD steps on the pooled train splits (noise planned first, as a
    site does before its first round)."""
    train = pooled_split(files, schema, seed)
    synth = TabularSynthesizer(schema, kind=generator, epsilon=EPSILON,
                               config=profile.tabular_config, device="cpu", seed=seed)
    synth.plan(len(train), steps)
    synth.release_label_counts(train)
    start = time.perf_counter()
    synth.train_steps(train, steps)
    return time.perf_counter() - start


COLUMNS = ("sites", "rounds x local steps", "total steps", "federated s", "setup s",
           "per round s (mean)", "rounds s", "one process s", "federated / one process",
           "rounds / one process")


def markdown(rows: list[Row], rounds: int, local_steps: int) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        rounds_s = sum(r.round_s)
        cells = [str(r.sites), f"{rounds} x {local_steps}", str(r.total_steps),
                 f"{r.federated_s:.1f}", f"{r.setup_s:.1f}", f"{rounds_s / len(r.round_s):.1f}",
                 f"{rounds_s:.1f}", f"{r.one_process_s:.1f}", f"{r.federated_s / r.one_process_s:.1f}x",
                 f"{rounds_s / r.one_process_s:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--records-per-site", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--generator", choices=("vae", "ddpm"), default="vae")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the one-process rows (each simulated site gets 1 CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("# Federation overhead")
    given = sys.argv[1:] if argv is None else argv
    print("command:", " ".join(["python benchmarks/federation.py", *given]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (the engine runs "
          f"min(sites, cores) sites at once), torch threads {args.threads} in one process, no GPU; "
          f"{args.generator}, epsilon {EPSILON}, {args.records_per_site} records per site, "
          f"model {PROFILES['quick'].tabular_config}\n", flush=True)
    rows = []
    for sites in args.sites:
        profile = profile_for(args, sites)
        with tempfile.TemporaryDirectory(prefix="fedsynth-bench-") as work:
            rows.append(measure(profile, args.generator, args.seed, Path(work)))
        print(f"  done: {sites} sites ({rows[-1].federated_s:.1f} s)", file=sys.stderr, flush=True)
    print(markdown(rows, args.rounds, args.local_steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
