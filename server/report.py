"""The coordinator's report: ``report.json`` (CONTRACT.md) and ``report.html`` from the sites'
evaluation replies.

Every figure in it was computed at a site on data that never left it; the server only arranges
them: the federated generators' METRICS per site, the baselines' (local-only at each site,
centralized in simulation, the yardsticks, the text floor where the coordinator sent one),
record-weighted summaries, each site's suppressed plot data, and the
privacy spend per site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from common.fileio import atomic_write_text
from common.metrics.evaluate import summarize
from common.run_plan import RunPlan
from server.report_html import render_report_html

VARIANTS = ("federated", "local_only", "centralized", "independent_marginals", "real_train",
            "text_floor")
SAMPLE_ROWS = 20  # synthetic records shown in report.html


def build_report(run: Mapping[str, Any], privacy: Mapping[str, Any],
                 evaluations: Mapping[str, Mapping[str, Any]],
                 release: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluations``: per site, its reply (``scores`` per variant, METRICS plus ``plots``; a
    variant a site did not score is absent). Centralized is null until a simulation adds it
    (``add_variant``); ``text_floor`` (the narrative model without private data, text figures
    only) is null when no site scored one; ``release`` is what the sites scored (its SHA-256 and
    size)."""
    scores = {site: e["scores"] for site, e in sorted(evaluations.items())}
    report: dict[str, Any] = {"run": dict(run), "privacy": dict(privacy), "release": dict(release),
                              "sites": {}, "baselines": {}, "summary": {}, "plots": {}}
    for variant in VARIANTS:
        add_variant(report, variant, {site: s[variant] for site, s in scores.items() if s.get(variant)})
    return report


def add_variant(report: dict[str, Any], variant: str, per_site: Mapping[str, Mapping[str, Any]]) -> None:
    """Put one variant's per-site evaluations (METRICS plus ``plots``) and their summary in
    ``report``: the federated release under ``sites`` (its plots under ``plots``), a baseline
    under ``baselines`` (null when no site scored it, as centralized is outside simulation)."""
    metrics = {site: _metrics(result) for site, result in sorted(per_site.items())}
    if variant == "federated":
        report["sites"] = metrics
        report["plots"] = {site: result["plots"] for site, result in sorted(per_site.items())
                           if result.get("plots")}
    else:
        report["baselines"][variant] = metrics or None
    report["summary"][variant] = summarize(metrics) if metrics else None


def privacy_section(spends: Mapping[str, Mapping[str, Any]], plan: RunPlan) -> dict[str, Any]:
    """CONTRACT's ``privacy`` from each site's reported spend (``SiteRun.spends``): the epsilon
    of the run's tabular model, of its local-only twin, of the narrative model (null in a run
    without narratives), of the whole run composed, the site's lifetime spend and its cap."""
    names = {spec.family: spec.ledger_name for spec in plan.models.values()}
    per_site = {}
    for site, spend in sorted(spends.items()):
        epsilon = spend["epsilon"]
        per_site[site] = {
            "epsilon_tabular": epsilon.get(names["tabular"], 0.0),
            "epsilon_tabular_local_only": epsilon.get(f"{names['tabular']}-local"),
            "epsilon_text": epsilon.get(names["text"], 0.0) if "text" in names else None,
            "epsilon_total": spend["epsilon_run"], "epsilon_lifetime": spend["epsilon_lifetime"],
            "epsilon_cap": spend["epsilon_cap"]}
    deltas = [spend["delta"] for spend in spends.values()]
    return {"delta": max(deltas, default=None), "per_site": per_site}


def _metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "plots"}


def write_report(folder: Path, report: Mapping[str, Any], synthetic: pd.DataFrame) -> None:
    """``report.json`` and the self-contained ``report.html`` (with a few synthetic records)."""
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    samples = synthetic.head(SAMPLE_ROWS) if len(synthetic) else None
    atomic_write_text(folder / "report.html", render_report_html(report, samples))


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Seven lines (eight with narratives) for a terminal: federated vs local-only vs centralized,
    beside the yardsticks (independent marginals, which every generator must beat, and the real
    train split, the ceiling), on the figures that tell generators apart (pair trends, detection
    AUC, TSTR against TRTR, membership inference, the narratives' consistency against the real
    notes'), then the narratives against their ceilings and floor, then the privacy spend."""
    rows = [("federated", report["summary"]["federated"]),
            ("local-only", report["summary"]["local_only"]),
            ("centralized", report["summary"]["centralized"]),
            ("marginals", report["summary"].get("independent_marginals")),
            ("real train", report["summary"].get("real_train"))]
    lines = [f"{'':12} {'pair trends':>11} {'detection':>9} {'TSTR/TRTR':>12} {'MIA AUC':>7} "
             f"{'narrative consistency/real':>26}"]
    for name, metrics in rows:
        if metrics is None:
            lines.append(f"{name:12} {'(not run)':>11}")
            continue
        fidelity, utility, text = metrics["fidelity"], metrics["utility"], metrics.get("text")
        narratives = "-" if not text else \
            f"{_fmt(text['consistency_accuracy'])}/{_fmt(text['real_consistency_accuracy'])}"
        lines.append(f"{name:12} {_fmt(fidelity['column_pair_trends']):>11} "
                     f"{_fmt(fidelity['detection_auc']):>9} "
                     f"{_fmt(utility['tstr_macro_f1']) + '/' + _fmt(utility['trtr_macro_f1']):>12} "
                     f"{_fmt(metrics['privacy']['mia_auc']):>7} {narratives:>26}")
    text = (report["summary"]["federated"] or {}).get("text")
    if text:
        lines.append(narratives_line(text, (report["summary"].get("text_floor") or {}).get("text")))
    per_site = report["privacy"]["per_site"].values()
    federated = [p["epsilon_tabular"] for p in per_site]
    text = [p["epsilon_text"] for p in per_site if p.get("epsilon_text") is not None]
    total = [p["epsilon_total"] for p in per_site]
    lifetime = [p["epsilon_lifetime"] for p in per_site]
    lines.append(f"sites {len(report['sites'])}; epsilon per site: federated model "
                 f"{_span(federated)}" + (f", narrative model {_span(text)}" if text else "")
                 + f", the run's releases composed {_span(total)} (lifetime {_span(lifetime)}); "
                 f"delta {report['privacy'].get('delta')}")
    return lines


def narratives_line(text: Mapping[str, Any], floor: Mapping[str, Any] | None) -> str:
    """The narratives against their ceilings (real notes) and their floor (no private data)."""
    line = (f"narratives: gate pass {_fmt(text.get('gate_pass_rate'))}; consistency "
            f"{_fmt(text['consistency_accuracy'])} (real {_fmt(text['real_consistency_accuracy'])}); "
            f"MAUVE {_fmt(text['mauve'])} (real vs real {_fmt(text.get('mauve_ceiling'))}), lexical "
            f"{_fmt(text.get('mauve_alt'))} ({_fmt(text.get('mauve_alt_ceiling'))}); distinct-2 "
            f"{_fmt(text['distinct_2'])} (real {_fmt(text['real_distinct_2'])})")
    if floor:
        line += (f"; floor (no private data): consistency {_fmt(floor['consistency_accuracy'])}, "
                 f"MAUVE {_fmt(floor['mauve'])}")
    return line


def _span(values: list[float]) -> str:
    low, high = min(values, default=0.0), max(values, default=0.0)
    return f"{low:.2f}" if round(low, 2) == round(high, 2) else f"{low:.2f}-{high:.2f}"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
