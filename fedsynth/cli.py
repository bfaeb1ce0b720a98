"""The ``fedsynth`` command line: parse, call ``common``/``simulation``/``server``, report errors.

Every user-fixable problem is an ``InputError``: printed as one paragraph on stderr with exit
code 2 and no traceback. Commands write their outputs atomically, so a failed command leaves
nothing half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import InputError
from common.run_plan import DEFAULT_TABULAR_KIND as DEFAULT_GENERATOR
from common.run_plan import MARGINAL_KINDS
from common.run_plan import TABULAR_KINDS as GENERATORS
from fedsynth import __version__
from fedsynth.console import RunFailed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seed(text: str) -> int:
    """A seed for numpy's generators, which take whole numbers from 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def cmd_sim_data(args: argparse.Namespace) -> int:
    from simulation.hospitals import write_sim_data

    paths = write_sim_data(Path(args.out), args.sites, args.records_per_site, args.seed)
    print(f"Wrote {len(paths) - 1} simulated site file(s) and the schema to {args.out}:")
    for path in paths:
        print(f"  {path}")
    return 0


def cmd_schema_infer(args: argparse.Namespace) -> int:
    from common.schema_infer import infer_schema

    proposal = infer_schema(args.file, label=args.label, text=args.text, site=args.site,
                            max_categories=args.max_categories)
    sys.stdout.write(proposal.schema.to_yaml())
    print(proposal.confirmation_notice(), file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from common.data import validate_file
    from common.schema import Schema

    schema = Schema.load(args.schema)
    result = validate_file(args.file, schema)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.ok:
        print(result.summary())
        return 0
    print(result.summary(), file=sys.stderr)
    return 2


def _print_run(report: dict, out: Path, log_path: Path) -> None:
    from server.report import summary_lines

    run = report["run"]
    rounds = "" if run["generator"] in MARGINAL_KINDS else f"{run['rounds']} rounds, "
    print(f"fedsynth {run['profile']} run, {run['generator']} generator, {len(run['sites'])} sites, "
          f"{rounds}{run['duration_s']} s. Scored at each site on its held-out data:")
    for line in summary_lines(report):
        print(f"  {line}")
    print(f"Report: {out / 'report.html'} (and report.json). Synthetic data: {out / 'synthetic.csv'} "
          f"(and .parquet); global model: {out / 'model'}; ledgers: {out / 'privacy'}; "
          f"log: {log_path} (the sites': {out / 'logs' / 'sites'})")


def cmd_demo(args: argparse.Namespace) -> int:
    from fedsynth.console import run_console
    from simulation.demo import run_demo

    corpus, out = _public_corpus(args), Path(args.out)
    print(f"fedsynth demo: {args.profile} profile, simulated hospitals -> {out}", file=sys.stderr)
    with run_console(out, args.verbose) as log_path:
        report = run_demo(out=out, profile=args.profile, seed=args.seed, text=not args.no_text,
                          generator=args.generator, site_logs_to_console=args.verbose, **corpus)
    _print_run(report, out, log_path)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import tempfile

    from fedsynth.console import run_console
    from simulation.inputs import site_files_from
    from simulation.pipeline import run_pipeline
    from simulation.profiles import PROFILES

    corpus, out = _public_corpus(args), Path(args.out)  # flags first: before any file is read
    with tempfile.TemporaryDirectory(prefix="fedsynth-sites-in-") as work:
        files = site_files_from(Path(args.data), args.site_column, Path(work))
        print(f"fedsynth simulate: {len(files)} site(s), {args.profile} profile -> {out}",
              file=sys.stderr)
        with run_console(out, args.verbose) as log_path:
            report = run_pipeline(files, Path(args.schema), out, PROFILES[args.profile],
                                  generator=args.generator, epsilon_tabular=args.epsilon_tabular,
                                  seed=args.seed, text=not args.no_text,
                                  epsilon_text=args.epsilon_text, text_model=args.text_model,
                                  site_logs_to_console=args.verbose, **corpus)
    _print_run(report, out, log_path)
    return 0


def cmd_warm_start(args: argparse.Namespace) -> int:
    """Train the narrative model's public warm start for a profile's narrative config; cached,
    or with ``--ship`` written beside the default corpus (examples/neiss/warm_start)."""
    from common.cache import cache_dir
    from common.text.narrative_model import resolve_config
    from common.text.public_corpus import public_corpus
    from common.text.warm_start import SHIPPED, save_adapter, train_adapter, warm_key
    from simulation.profiles import PROFILES

    paths = _public_corpus(args)
    if paths["public_corpus"] is None:
        raise InputError("--public-corpus none: there is nothing to warm-start from.")
    corpus = public_corpus(paths["public_corpus"], paths["public_schema"])
    config = resolve_config({**PROFILES[args.profile].text_config,
                             **({"base": args.text_model} if args.text_model else {})})
    weights = train_adapter(corpus, config, log=print)
    folder = SHIPPED if args.ship else cache_dir() / "warm-start"
    print(save_adapter(folder, warm_key(corpus, config), weights, corpus, config))
    return 0


def _public_corpus(args: argparse.Namespace) -> dict[str, Path | None]:
    """``--public-corpus FILE|none`` and ``--public-schema S`` as run_pipeline's arguments."""
    from common.text.public_corpus import DEFAULT_CORPUS

    if args.public_corpus is None:
        return {"public_corpus": DEFAULT_CORPUS, "public_schema": None}
    if args.public_corpus.lower() == "none":
        return {"public_corpus": None, "public_schema": None}
    if args.public_schema is None:
        raise InputError(f"--public-corpus {args.public_corpus} needs --public-schema S: the "
                         f"corpus is read and validated like a site's file.")
    for path in (args.public_corpus, args.public_schema):
        if not Path(path).is_file():
            raise InputError(f"{path}: file not found (--public-corpus / --public-schema).")
    return {"public_corpus": Path(args.public_corpus), "public_schema": Path(args.public_schema)}


def _add_public_corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-corpus", metavar="FILE|none",
                        help="the narrative model's public warm start: record -> note pairs in a "
                             "public file (default: the NEISS sample in examples/neiss); none: "
                             "no warm start")
    parser.add_argument("--public-schema", metavar="S", help="the schema of --public-corpus")


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print Flower's, Ray's, the sites' and the libraries' messages too "
                             "(always in OUT/logs/)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be above 0")
    return value


def cmd_generate(args: argparse.Namespace) -> int:
    from common.fileio import write_table
    from common.synthesis import has_narratives, parse_conditions, synthesize

    conditions = parse_conditions(args.condition)
    text = not args.no_text and has_narratives(args.model)
    if not args.no_text and not text:
        print(f"note: {args.model} holds no narrative model (a run with --no-text); these records "
              f"are tabular only.", file=sys.stderr)
    narrate = _narrated(args.narrate, args.n) if text else 0
    frame = synthesize(args.model, args.n, conditions, seed=args.seed, text=text,
                       narrate=narrate, label="narratives")
    write_table(frame, args.out)
    notes = "" if not text else (f", {narrate} with a narrative" if narrate < args.n
                                 else ", each with a narrative")
    print(f"Wrote {len(frame)} synthetic records to {args.out}{notes}"
          + (f" (conditioned on {conditions})" if conditions else "") + ".")
    return 0


def _narrated(flag: str | None, n: int) -> int:
    """How many records ``generate`` narrates (``--narrate N|all``; on a CPU without the flag,
    a subset that takes about a minute), said up front."""
    import torch

    from common.synthesis import CPU_NARRATED

    device = "GPU" if torch.cuda.is_available() else "CPU"
    if flag is None:
        count = n if device == "GPU" else min(n, CPU_NARRATED)
    elif flag.strip().lower() == "all":
        count = n
    elif flag.strip().isdigit():
        count = min(n, int(flag))
    else:
        raise InputError(f"--narrate {flag!r}: give a number of records or 'all'.")
    why = (" (the default on a CPU, about a minute; --narrate all for every record)"
           if flag is None and count < n else "")
    print(f"Narrating {count:,} of {n:,} records on the {device}{why}; with SmolLM2 a note "
          f"takes about a second on 2 CPU cores; the bar shows the rate and the time left.", file=sys.stderr)
    return count


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from common.fileio import atomic_write_text
    from common.metrics.evaluate import evaluate_files

    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out takes the path of the JSON file to write "
                         f"(e.g. {out / 'evaluation.json'}).")
    result = evaluate_files(args.schema, args.real, args.synthetic, seed=args.seed)
    atomic_write_text(out, json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    m = result.metrics
    fid, util, priv = m["fidelity"], m["utility"], m["privacy"]
    print(f"{args.real}: train {m['n_train']}, test {m['n_test']} records. Fidelity: column shapes "
          f"{fid['column_shapes']}, column pair trends {fid['column_pair_trends']}, detection AUC "
          f"{fid['detection_auc']}. Macro-F1: TRTR {util['trtr_macro_f1']}, TSTR "
          f"{util['tstr_macro_f1']}, augmented {util['augmented_macro_f1']}. Privacy: exact copies "
          f"{priv['exact_copies']}, DCR overfitting protection {priv['dcr_overfitting_protection']}, "
          f"MIA AUC {priv['mia_auc']}.")
    print(f"Wrote {out} (small cells suppressed: under {result.plots['min_cell']} records).")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from common.certs import write_certificates

    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    paths = write_certificates(Path(args.out), sites, hosts, days=args.days, force=args.force)
    print(f"Wrote a CA, the SuperLink certificate for {', '.join(hosts)} and keys for "
          f"{len(sites)} site(s) in {args.out}:")
    for path in paths:
        print(f"  {path}")
    print("Give each site ca.crt and its own sites/NAME key; register sites/NAME.pub with "
          "'flwr supernode register'. Keep ca.key offline.")
    return 0


def cmd_ledger_show(args: argparse.Namespace) -> int:
    from common.privacy.account import describe

    print("\n".join(describe(Path(args.state_dir))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsynth",
        description="Federated, differentially private synthetic ED trauma records.")
    parser.add_argument("--version", action="version", version=f"fedsynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="simulated hospitals through the whole pipeline")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--profile", choices=("quick", "full"), default="quick")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-text", action="store_true", help="tabular records only, no narratives")
    demo.add_argument("--generator", choices=GENERATORS, default=DEFAULT_GENERATOR,
                      help=f"the tabular generator ({DEFAULT_GENERATOR})")
    _add_public_corpus(demo)
    _add_verbose(demo)
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser("simulate", help="the federated pipeline on your own data")
    simulate.add_argument("--data", required=True, help="a pooled file (with --site-column) or a folder")
    simulate.add_argument("--schema", required=True)
    simulate.add_argument("--site-column", help="column that names each record's site")
    simulate.add_argument("--out", default="runs/simulate")
    simulate.add_argument("--profile", choices=("quick", "full"), default="quick")
    simulate.add_argument("--generator", choices=GENERATORS, default=DEFAULT_GENERATOR,
                          help=f"the tabular generator: vae, ddpm, mst or aim (federated MST or AIM, "
                               f"marginal models on private-pgm); default {DEFAULT_GENERATOR}")
    simulate.add_argument("--epsilon-tabular", type=_positive_float, default=3.0,
                          help="each site's budget for the tabular generator (3.0)")
    simulate.add_argument("--epsilon-text", type=_positive_float, default=3.0,
                          help="each site's budget for the narrative model (3.0)")
    simulate.add_argument("--no-text", action="store_true",
                          help="tabular records only: no narrative model, no narratives")
    simulate.add_argument("--text-model", metavar="BASE",
                          help="the narrative base model: smollm2 (the profiles' default), tiny "
                               "(tests), or local:PATH (a Hugging Face causal LM folder, e.g. "
                               "MedGemma 27B text-it on a GPU)")
    simulate.add_argument("--seed", type=int, default=0)
    _add_public_corpus(simulate)
    _add_verbose(simulate)
    simulate.set_defaults(func=cmd_simulate)

    warm = sub.add_parser("warm-start", help="train the narrative model's public warm start")
    warm.add_argument("--profile", choices=("quick", "full"), default="quick",
                      help="whose narrative config (base model, LoRA settings) it is for")
    warm.add_argument("--text-model", metavar="BASE", help="the base model (the profile's if unset)")
    warm.add_argument("--ship", action="store_true",
                      help="write it beside the default corpus (examples/neiss/warm_start)")
    _add_public_corpus(warm)
    warm.set_defaults(func=cmd_warm_start)

    sim = sub.add_parser("sim-data", help="write simulated hospital data files and their schema")
    sim.add_argument("--sites", type=_positive_int, required=True)
    sim.add_argument("--records-per-site", type=_positive_int, required=True)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", required=True, help="output folder")
    sim.set_defaults(func=cmd_sim_data)

    schema = sub.add_parser("schema", help="schema tools")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    infer = schema_sub.add_parser("infer", help="propose a schema from a data file (prints YAML)")
    infer.add_argument("file")
    infer.add_argument("--label", help="the label column (mechanism)")
    infer.add_argument("--text", help="the narrative column")
    infer.add_argument("--site", help="the site (hospital) column")
    infer.add_argument("--max-categories", type=_positive_int, default=60,
                       help="at most this many distinct values makes a column categorical (60)")
    infer.set_defaults(func=cmd_schema_infer)

    val = sub.add_parser("validate", help="check a site's data file against the schema")
    val.add_argument("--schema", required=True)
    val.add_argument("file")
    val.set_defaults(func=cmd_validate)

    gen = sub.add_parser("generate", help="sample records from released global generators")
    gen.add_argument("--model", required=True, help="a run's model/ folder")
    gen.add_argument("--n", type=_positive_int, required=True, help="number of records")
    gen.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                     help="fix a column's value (repeatable), e.g. mechanism=drowning")
    gen.add_argument("--no-text", action="store_true", help="tabular records only, no narratives")
    gen.add_argument("--narrate", metavar="N|all",
                     help="how many records get a narrative (default: all on a GPU; on a CPU "
                          "the first few dozen, about a minute); the others keep an empty one")
    gen.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    gen.add_argument("--out", required=True, help="output .csv or .parquet file")
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("evaluate", help="score a synthetic file against one site's data, locally")
    ev.add_argument("--schema", required=True)
    ev.add_argument("--real", required=True, help="the site's data file (.csv or .parquet)")
    ev.add_argument("--synthetic", required=True, help="the synthetic file (.csv or .parquet)")
    ev.add_argument("--out", required=True, help="the JSON file to write (METRICS and plot data)")
    ev.add_argument("--seed", type=_seed, default=0, help="split and metric seed (0)")
    ev.set_defaults(func=cmd_evaluate)

    ledger = sub.add_parser("ledger", help="a site's lifetime privacy ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    show = ledger_sub.add_parser("show", help="every release from the site's data: when, run, model, "
                                              "epsilon; refusals; the total and what is left")
    show.add_argument("--state-dir", required=True, help="the SuperNode's state-dir (node config)")
    show.set_defaults(func=cmd_ledger_show)

    certs = sub.add_parser("certs", help="CA, SuperLink certificate and one key pair per site")
    certs.add_argument("--out", required=True)
    certs.add_argument("--sites", required=True, help="comma-separated site names")
    certs.add_argument("--hosts", default="localhost,127.0.0.1",
                       help="SuperLink host names/IPs for its certificate (default localhost,127.0.0.1)")
    certs.add_argument("--days", type=_positive_int, default=825, help="validity in days (825)")
    certs.add_argument("--force", action="store_true", help="write into a non-empty folder")
    certs.set_defaults(func=cmd_certs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        message = " ".join(str(exc).split()) if "\n" not in str(exc) else str(exc)
        print(f"fedsynth {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(f"fedsynth {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fedsynth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
