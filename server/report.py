"""The coordinator's report: ``report.json`` (CONTRACT.md) and ``report.html`` from the sites'
evaluation replies.

Every figure in it was computed at a site on data that never left it; the server only arranges
them: the federated generators' METRICS per site, the baselines' (local-only at each site,
centralized in simulation), record-weighted summaries, each site's suppressed plot data, and the
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
from server.report_html import render_report_html

VARIANTS = ("federated", "local_only", "centralized")
SAMPLE_ROWS = 20  # synthetic records shown in report.html


def build_report(run: Mapping[str, Any], privacy: Mapping[str, Any],
                 evaluations: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``evaluations``: per site, per variant (``VARIANTS``), the site's evaluation (METRICS plus
    ``plots``); a variant a site did not score is absent. Centralized is null outside simulation."""
    per_variant = {variant: {site: _metrics(result[variant])
                             for site, result in sorted(evaluations.items()) if result.get(variant)}
                   for variant in VARIANTS}
    centralized = per_variant["centralized"] or None
    return {
        "run": dict(run),
        "privacy": dict(privacy),
        "sites": per_variant["federated"],
        "baselines": {"local_only": per_variant["local_only"], "centralized": centralized},
        "summary": {variant: summarize(per_variant[variant]) if per_variant[variant] else None
                    for variant in VARIANTS},
        "plots": {site: result["federated"]["plots"] for site, result in sorted(evaluations.items())
                  if result.get("federated")},
    }


def privacy_section(spends: Mapping[str, Mapping[str, Any]], model: str,
                    text_model: str | None = None) -> dict[str, Any]:
    """CONTRACT's ``privacy`` from each site's reported spend (``SiteTask.spends``): the federated
    ``model``'s epsilon, the local-only baseline's, the narrative model's (``text_model``; null
    in a run without narratives), and the site's total over every release."""
    per_site = {site: {"epsilon_tabular": spend["epsilon"].get(model, 0.0),
                       "epsilon_tabular_local_only": spend["epsilon"].get(f"{model}-local"),
                       "epsilon_text": spend["epsilon"].get(text_model, 0.0) if text_model else None,
                       "epsilon_total": spend["epsilon_total"]}
                for site, spend in sorted(spends.items())}
    deltas = [spend["delta"] for spend in spends.values() if spend["delta"] is not None]
    return {"delta": max(deltas, default=None), "per_site": per_site}


def _metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "plots"}


def write_report(folder: Path, report: Mapping[str, Any], synthetic: pd.DataFrame) -> None:
    """``report.json`` and the self-contained ``report.html`` (with a few synthetic records)."""
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    samples = synthetic.head(SAMPLE_ROWS) if len(synthetic) else None
    atomic_write_text(folder / "report.html", render_report_html(report, samples))


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Five lines for a terminal: federated vs local-only vs centralized on the figures that tell
    generators apart (pair trends, detection AUC, TSTR against TRTR, membership inference, and
    the narratives' consistency against the real notes' when the run wrote narratives)."""
    rows = [("federated", report["summary"]["federated"]),
            ("local-only", report["summary"]["local_only"]),
            ("centralized", report["summary"]["centralized"])]
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
    per_site = report["privacy"]["per_site"].values()
    federated = [p["epsilon_tabular"] for p in per_site]
    text = [p["epsilon_text"] for p in per_site if p.get("epsilon_text") is not None]
    total = [p["epsilon_total"] for p in per_site]
    lines.append(f"sites {len(report['sites'])}; epsilon per site: federated model "
                 f"{_span(federated)}" + (f", narrative model {_span(text)}" if text else "")
                 + f", all releases incl. the local-only baseline {_span(total)}; "
                 f"delta {report['privacy'].get('delta')}")
    return lines


def _span(values: list[float]) -> str:
    low, high = min(values, default=0.0), max(values, default=0.0)
    return f"{low:.2f}" if round(low, 2) == round(high, 2) else f"{low:.2f}-{high:.2f}"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
