"""Cost curves (issue 14): wall time, CPU time and peak memory of the default tabular generator
as the records per site, the number of sites and the synthetic records grow, and of narrating
records with the text stage, all measured side by side in one run; then a power law per axis.

    python benchmarks/scaling.py [--records 500 2000 8000 32000] [--sites 2 5 10 25]
                                 [--synthetic 1000 10000 100000] [--narrate 8 32 128]
                                 [--fixed-sites 3] [--fixed-records 500] [--limit 300]
                                 [--seed 0] [--only records,sites,synthetic,narrate]

Axes (``--only`` picks some):
  records    a federated fit at ``--fixed-sites`` simulated hospitals of N records each;
  sites      a federated fit at N hospitals of ``--fixed-records`` records each;
  synthetic  N records sampled (``.sample(N, seed=)``) from one fitted model, the records
             axis's 3 x 2,000 fit (saved by that point; fitted first when it is not);
  narrate    N of that model's records narrated (``NarrativeModel.sample``, the gate and its
             retries) by the tiny test model (base ``tiny``, untrained: the cost, not the prose),
             with the quick profile's prompt fields and sampling settings, the language model
             loaded beforehand (by narrating one record).
A fit is the plan a run makes with the default generator (``RunPlan.standard``, kind
``DEFAULT_TABULAR_KIND``, its default config, epsilon 3 per site) driven in process without
Flower: every site's handshake, then each stage's coordinator half (``stages_of``, ``request`` /
``recipients`` / ``problem`` / ``update``) with every site's half answered one site after another
by ``common.site_actions.run_stage``, the ClientApp's own action (it reloads and validates the
site's file, releases, saves the reply). "sites s" is the wall time of the sites' halves summed (in a
deployment they run in parallel), "coordinator s" the rest of the fit's.

Each point runs in a fresh process (this script with ``--point AXIS=N``) under a wall-time limit
(``--limit``; a point past it is reported as "over N s"). Its data and models are set up first
(simulated files, ``write_sim_data``; JAX and mbi imported; the saved model loaded), then the
process's peak resident set is reset (Linux ``clear_refs``) and the measured work runs: "peak MB"
is the process-wide peak during it, "above start MB" that peak less the resident set at the
reset. The exponents are least-squares slopes of log(cost) on log(N) over an axis's measured
points, with the slope of the last two points beside them (nearer the asymptote, once fixed costs
stop dominating) and its verdict: linear from 0.85 to 1.15. Prints a markdown table; runs are
recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.run_plan import DEFAULT_TABULAR_KIND, RunPlan
from common.schema import Schema
from common.site_actions import handshake, run_stage
from common.site_config import SiteConfig
from common.stages import stages_of
from common.stages.base import CoordinatorContext, Payload
from common.stages.models import TabularFamily, family_of
from common.version import __version__
from simulation.hospitals import write_sim_data
from simulation.pipeline import simulated_sites
from simulation.profiles import PROFILES

AXES = ("records", "sites", "synthetic", "narrate")
EPSILON = 3.0  # each site's tabular budget
SOURCE = (3, 2000)  # sites x records of the fit the synthetic and narrate axes sample from


@dataclass
class Cost:
    """One point's measured work: wall and CPU seconds, the sites' share of the wall time,
    process peak and its rise above the resident set at the start, and what else it reports."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    start_mb: float
    sites_s: float | None = None
    note: str = ""


@dataclass
class Point:
    axis: str
    size: int
    cost: Cost | None = None
    status: str = "ok"  # or "over N s", "failed: ..."


# --- memory -------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> float:
    """Reset the peak resident set (VmHWM; Linux: write 5 to clear_refs); the resident MB now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def measure(work: Callable[[], tuple[float | None, str]]) -> Cost:
    """``work()`` (returning the sites' seconds, or None, and a note) timed, its peak measured."""
    start_mb = reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    sites_s, note = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Cost(wall, cpu, _status_mb("VmHWM"), start_mb, sites_s, note)


# --- one point (the child process) --------------------------------------------------------------
def standard_plan(seed: int) -> RunPlan:
    return RunPlan.standard(run="scaling", seed=seed, kind=DEFAULT_TABULAR_KIND, rounds=0,
                            local_steps=0, tabular_config={})


def sites_of(folder: Path, n_sites: int, records: int, seed: int) -> tuple[Schema, list[SiteConfig]]:
    """``n_sites`` simulated hospitals of ``records`` each as the simulation's site configs."""
    paths = write_sim_data(folder / "data", n_sites, records, seed)
    files = {path.stem: path for path in paths[:-1]}
    return Schema.load(paths[-1]), simulated_sites(files, paths[-1], folder / "state", EPSILON)


def federate(schema: Schema, plan: RunPlan, configs: Sequence[SiteConfig]) -> tuple[Any, float]:
    """The plan's stages in process: every site's handshake, then each stage's coordinator half
    asking the sites' halves (``run_stage``) step by step. The global tabular model, and the
    seconds the sites' halves took between them."""
    nodes = dict(enumerate(configs, start=1))
    models = {name: family_of(spec).build(schema, spec, plan.seed) for name, spec in plan.models.items()}
    ctx = CoordinatorContext(schema, plan, models, average=_no_average)
    plan_json, site_s = plan.to_json(), 0.0
    began = time.perf_counter()
    for config in nodes.values():
        handshake(config, Payload(values={"schema_hash": schema.hash, "version": __version__,
                                          "plan": plan_json}))
    site_s += time.perf_counter() - began
    for stage in stages_of(plan):
        half = stage.coordinator(ctx)
        while (request := half.request()) is not None:
            request.values.update({"plan": plan_json, "stage": stage.index, "step": half.step})
            replies = {}
            for node in half.recipients(list(nodes)):
                began = time.perf_counter()
                replies[node] = run_stage(nodes[node], request, stage.message_type)
                site_s += time.perf_counter() - began
                problem = half.problem(node, replies[node])
                if problem:
                    raise RuntimeError(f"{stage.name} step {half.step}, {nodes[node].name}: {problem}")
            half.update(replies)
    return models["tabular"], site_s


def _no_average(updates: Any, weights: Any) -> Any:
    raise RuntimeError("the marginals stage does not average")


def model_dir(work: Path, n_sites: int, records: int) -> Path:
    return work / "models" / f"{n_sites}x{records}"


def fit_point(work: Path, n_sites: int, records: int, seed: int) -> Cost:
    """A federated fit at ``n_sites`` x ``records``; its model saved for the sampling axes."""
    from common.marginal.pgm import private_pgm

    with tempfile.TemporaryDirectory(prefix="fedsynth-scaling-", dir=work) as folder:
        schema, configs = sites_of(Path(folder), n_sites, records, seed)
        private_pgm()  # JAX and mbi imported before the measurement starts
        fitted: list[Any] = []

        def fit() -> tuple[float, str]:
            model, site_s = federate(schema, standard_plan(seed), configs)
            fitted.append(model)
            return site_s, f"{len(model.cliques)} cliques measured"

        cost = measure(fit)
    fitted[0].save(model_dir(work, n_sites, records))
    return cost


def sample_point(work: Path, n: int, seed: int) -> Cost:
    model = TabularFamily.load(model_dir(work, *SOURCE))

    def draw() -> tuple[None, str]:
        model.sample(n, seed=seed)
        return None, ""

    return measure(draw)


def narrate_point(work: Path, n: int, seed: int) -> Cost:
    """``n`` sampled records narrated by the tiny model; the language model loaded first."""
    from common.text.narrative_model import NarrativeModel

    tabular = TabularFamily.load(model_dir(work, *SOURCE))
    records = tabular.sample(n, seed=seed)
    config = {k: v for k, v in PROFILES["quick"].text_config.items() if k != "pe"}
    narrator = NarrativeModel(tabular.schema, epsilon=None, config={**config, "base": "tiny"},
                              device="cpu", seed=seed)
    narrator.sample(records.head(1), seed=seed)  # loads the language model

    def narrate() -> tuple[None, str]:
        narrator.sample(records, seed=seed)
        stats = narrator.last_sample_stats
        return None, f"{stats['tokens']} tokens, {stats['attempts']} attempts, {stats['flagged']} flagged"

    return measure(narrate)


def run_point(axis: str, size: int, work: Path, args: argparse.Namespace) -> Cost:
    torch.set_num_threads(1)
    if axis == "records":
        return fit_point(work, args.fixed_sites, size, args.seed)
    if axis == "sites":
        return fit_point(work, size, args.fixed_records, args.seed)
    if axis == "synthetic":
        return sample_point(work, size, args.seed)
    return narrate_point(work, size, args.seed)


# --- the run (the parent process) ---------------------------------------------------------------
def child(axis: str, size: int, work: Path, args: argparse.Namespace) -> Point:
    """One point in a fresh process under ``args.limit`` seconds."""
    command = [sys.executable, __file__, "--point", f"{axis}={size}", "--work", str(work),
               "--seed", str(args.seed), "--fixed-sites", str(args.fixed_sites),
               "--fixed-records", str(args.fixed_records)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.limit,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return Point(axis, size, status=f"over {args.limit:.0f} s")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return Point(axis, size, status=f"failed: {tail[0]}")
    return Point(axis, size, Cost(**json.loads(done.stdout.strip().splitlines()[-1])))


def sizes_of(args: argparse.Namespace) -> dict[str, list[int]]:
    return {"records": args.records, "sites": args.sites, "synthetic": args.synthetic,
            "narrate": args.narrate}


def run_all(axes: Sequence[str], args: argparse.Namespace, work: Path) -> list[Point]:
    """Every point of ``axes`` in turn; the sampling axes' model fitted first when needed."""
    points: list[Point] = []
    for axis in axes:
        if axis in ("synthetic", "narrate") and not model_dir(work, *SOURCE).exists():
            child("records", SOURCE[1], work, args)
        for size in sizes_of(args)[axis]:
            points.append(child(axis, size, work, args))
            p = points[-1]
            print(f"done: {axis}={size}: {p.status} {asdict(p.cost) if p.cost else ''}",
                  file=sys.stderr, flush=True)
    return points


def slope(sizes: Sequence[int], values: Sequence[float]) -> float:
    """The least-squares slope of log(value) on log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def verdict(exponent: float) -> str:
    return "sublinear" if exponent < 0.85 else ("linear" if exponent <= 1.15 else "superlinear")


def fit_line(points: Sequence[Point], cost: Callable[[Cost], float]) -> str:
    """'b (last two: b2, verdict)' over a row's measured points, or '-' below two."""
    measured = [(p.size, cost(p.cost)) for p in points if p.cost is not None and cost(p.cost) > 0]
    if len(measured) < 2:
        return "-"
    sizes, values = zip(*measured, strict=True)
    last = slope(sizes[-2:], values[-2:])
    return f"{slope(sizes, values):.2f} (last two {last:.2f}: {verdict(last)})"


def titles(args: argparse.Namespace) -> dict[str, str]:
    return {"records": f"records per site ({args.fixed_sites} sites): fit",
            "sites": f"sites ({args.fixed_records:,} records each): fit",
            "synthetic": f"synthetic records: sample ({SOURCE[0]} x {SOURCE[1]:,} fit)",
            "narrate": "records narrated (tiny)"}


def markdown(points: Sequence[Point], axes: Sequence[str], title: dict[str, str]) -> str:
    columns = ("axis", "N", "wall s", "CPU s", "sites s", "coordinator s", "peak MB",
               "above start MB", "note")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for p in points:
        c = p.cost
        if c is None:
            cells = [title[p.axis], f"{p.size:,}", p.status, *["-"] * 6]
        else:
            sites = "-" if c.sites_s is None else f"{c.sites_s:.1f}"
            coordinator = "-" if c.sites_s is None else f"{c.wall_s - c.sites_s:.1f}"
            cells = [title[p.axis], f"{p.size:,}", f"{c.wall_s:.2f}", f"{c.cpu_s:.2f}", sites,
                     coordinator, f"{c.peak_mb:,.0f}", f"{c.peak_mb - c.start_mb:,.0f}", c.note]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| axis | wall s exponent | CPU s | sites s | peak MB | above start MB |",
              "|---|---|---|---|---|---|"]
    for axis in axes:
        row = [p for p in points if p.axis == axis]
        lines.append(f"| {title[axis]} | " + " | ".join(fit_line(row, f) for f in (
            lambda c: c.wall_s, lambda c: c.cpu_s, lambda c: c.sites_s or 0.0,
            lambda c: c.peak_mb, lambda c: c.peak_mb - c.start_mb)) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[500, 2000, 8000, 32000])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 5, 10, 25])
    parser.add_argument("--synthetic", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--narrate", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--fixed-sites", type=int, default=3, help="sites of the records axis")
    parser.add_argument("--fixed-records", type=int, default=500, help="records per site of the sites axis")
    parser.add_argument("--limit", type=float, default=300, help="wall seconds per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help=f"comma list of axes: {','.join(AXES)}")
    parser.add_argument("--point", default="", help=argparse.SUPPRESS)  # AXIS=N: one point, here
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(argv)
    if args.point:
        axis, size = args.point.split("=")
        print(json.dumps(asdict(run_point(axis, int(size), args.work, args))))
        return 0
    axes = [a.strip() for a in args.only.split(",") if a.strip()] or list(AXES)
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        parser.error(f"unknown axis {unknown}; choose from {', '.join(AXES)}")
    command = " ".join(["python benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)])
    began, date = time.perf_counter(), time.strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory(prefix="fedsynth-scaling-") as folder:
        points = run_all(axes, args, Path(folder))
    print(f"# Cost curves: {DEFAULT_TABULAR_KIND} (epsilon {EPSILON:g} per site) and the tiny "
          f"narrator")
    print("command:", command)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU, torch "
          f"{torch.__version__} with 1 thread; started {date}; total wall "
          f"{(time.perf_counter() - began) / 60:.1f} min; limit {args.limit:.0f} s a point\n")
    print(markdown(points, axes, titles(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
