"""report.html: a run's report.json as one self-contained page, readable offline and safe to publish.

The page has inline CSS and inline SVG plots, no script and no external URL, so it opens from a
file on an air-gapped machine. It shows only what report.json holds (aggregate figures, plot data
already small-cell-suppressed at the sites, kept under ``report["plots"][SITE]`` as written by
``common.metrics.bins.plot_data``) and a sample of synthetic records; every string from the report
or the records is escaped.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

SERIES_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
SAMPLE_ROWS = 20
HEAT_SCALE = 0.5  # an association difference of this size or more gets the full colour
# (path in METRICS, what it is, its best value): the rows of every metrics table.
METRIC_ROWS = (
    ("n_train", "train records", ""),
    ("n_test", "test records", ""),
    ("fidelity.column_shapes", "Column Shapes", "1"),
    ("fidelity.column_pair_trends", "Column Pair Trends", "1"),
    ("fidelity.detection_auc", "detection AUC", "0.5"),
    ("fidelity.wasserstein_mean", "mean scaled Wasserstein", "0"),
    ("utility.trtr_macro_f1", "TRTR macro-F1 (real ceiling)", "higher"),
    ("utility.tstr_macro_f1", "TSTR macro-F1", "up to TRTR"),
    ("utility.augmented_macro_f1", "augmented macro-F1", "above TRTR"),
    ("privacy.exact_copies", "exact copies of train rows", "0"),
    ("privacy.dcr_overfitting_protection", "DCR overfitting protection", "1"),
    ("privacy.mia_auc", "membership-inference AUC", "0.5"),
    ("text.consistency_accuracy", "narrative consistency accuracy", "up to real"),
    ("text.real_consistency_accuracy", "real narratives' consistency accuracy", ""),
    ("text.mauve", "MAUVE (MiniLM)", "up to its ceiling"),
    ("text.mauve_ceiling", "MAUVE ceiling: real vs real notes (MiniLM)", ""),
    ("text.mauve_alt", "MAUVE (lexical embedding)", "up to its ceiling"),
    ("text.mauve_alt_ceiling", "MAUVE ceiling (lexical embedding)", ""),
    ("text.distinct_2", "distinct-2", "near real"),
    ("text.real_distinct_2", "real distinct-2", ""),
    ("text.gate_pass_rate", "narratives passing the consistency gate", "1"),
    ("text.canary_exposure_bits", "canary exposure (bits)", "low"),
)
UTILITY_SERIES = (("TRTR", "trtr_macro_f1"), ("TSTR", "tstr_macro_f1"),
                  ("augmented", "augmented_macro_f1"))
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;line-height:1.4}
h1,h2,h3{font-weight:600} table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums} th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:1em} .note{color:#555;font-size:.9em}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
svg text{font-size:11px;fill:#222} nav a{margin-right:1em} summary{cursor:pointer;font-weight:600}
"""


def render_report_html(report: Mapping[str, Any], samples: pd.DataFrame | None = None) -> str:
    """The whole page for ``report`` (CONTRACT report.json, plus optional ``plots``) and, when
    given, a sample of the released synthetic records (never real ones)."""
    sections = [
        ("run", "Run settings", _run(report.get("run") or {})),
        ("privacy", "Privacy spent per site", _privacy(report.get("privacy") or {})),
        ("summary", "Summary: federated vs baselines", _summary(report.get("summary") or {})),
        ("sites", "Per-site results", _sites(report)),
        ("utility", "Utility per site", _utility(report.get("sites") or {})),
        ("rare-classes", "Per-class recall of the rare classes", _rare_classes(report)),
        ("distributions", "Distributions and associations (site test splits vs synthetic)",
         _plots(report.get("plots") or {})),
        ("samples", "Synthetic records (a sample)", _samples(samples)),
    ]
    nav = "".join(f'<a href="#{key}">{_esc(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{_esc(title)}</h2>{content}</section>'
                   for key, title, content in sections)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>fedsynth report</title><style>{CSS}</style></head><body>"
            f"<h1>fedsynth report</h1><nav>{nav}</nav>{body}</body></html>\n")


# --- sections -------------------------------------------------------------------------------

def _run(run: Mapping[str, Any]) -> str:
    rows = [(key, ", ".join(map(str, value)) if isinstance(value, list) else _fmt(value))
            for key, value in run.items()]
    return _table(["setting", "value"], rows)


def _privacy(privacy: Mapping[str, Any]) -> str:
    per_site = privacy.get("per_site") or {}
    columns = ("epsilon_tabular", "epsilon_tabular_local_only", "epsilon_text", "epsilon_total",
               "epsilon_lifetime", "epsilon_cap")
    table = _table(["site", *columns], [(site, *(_fmt(spent.get(c)) for c in columns))
                                        for site, spent in per_site.items()])
    totals = {site: spent.get("epsilon_total", spent.get("epsilon_tabular"))
              for site, spent in per_site.items()}
    return (f'<p class="note">delta = {_esc(_fmt(privacy.get("delta")))} (the largest over the '
            f"sites; each site sets its own, never from its record count); epsilon is what each "
            f"site's ledger records: per model, the run's releases composed (total), and every "
            f"release ever made from the site's data file (lifetime) against the cap the site "
            f"set.</p>{table}"
            + _hbars(list(totals), {"epsilon spent": list(totals.values())}, fmt="{:.2f}"))


RUNS = {"federated": "federated", "local-only": "local_only", "centralized": "centralized",
        "marginals": "independent_marginals", "real train": "real_train", "text floor": "text_floor"}


def _summary(summary: Mapping[str, Any]) -> str:
    runs = {label: summary.get(variant) for label, variant in RUNS.items()}
    return ('<p class="note">Record-weighted means over the sites (weights: test records); counts '
            "are summed. Local-only: each site's own generator; centralized: one generator on the "
            "pooled records (simulation only; blank when not run); marginals: each column of the "
            "site's train split resampled on its own, the baseline every generator must beat (it "
            "scores about 0.95 on Column Shapes, so that figure alone says little); real train: "
            "the site's train split itself, the ceiling at this test size; text floor: the "
            "release's records with narratives by the narrative model without private data (its "
            "public warm start, epsilon 0), text figures only (blank when not run). A MAUVE "
            "ceiling is the site's real notes against its other real notes at the same sample "
            "size: what a perfect generator would score.</p>" + _metrics_table(runs))


def _sites(report: Mapping[str, Any]) -> str:
    baselines = report.get("baselines") or {}
    parts = []
    for site, metrics in (report.get("sites") or {}).items():
        runs = {label: metrics if variant == "federated" else (baselines.get(variant) or {}).get(site)
                for label, variant in RUNS.items()}
        parts.append(f"<h3>{_esc(site)}</h3>{_metrics_table(runs)}")
    return "".join(parts) or '<p class="note">No site results in this report.</p>'


def _utility(sites: Mapping[str, Any]) -> str:
    series = {name: [(m.get("utility") or {}).get(key) for m in sites.values()]
              for name, key in UTILITY_SERIES}
    return ('<p class="note">Macro-F1 of the label classifier on each site\'s real test split, '
            "trained on real train records (TRTR), on synthetic records only (TSTR), or on real "
            "records plus synthetic records of the rare classes (augmented).</p>"
            + _hbars(list(sites), series, value_max=1.0))


def _rare_classes(report: Mapping[str, Any]) -> str:
    """Recall with and without synthetic augmentation, for the classes rare at each site: those
    whose test count is suppressed or below the median class count of the site's (published,
    suppressed) label histogram."""
    plots = report.get("plots") or {}
    parts = []
    for site, metrics in (report.get("sites") or {}).items():
        utility = metrics.get("utility") or {}
        trtr = utility.get("per_class_recall_trtr") or {}
        boosted = utility.get("per_class_recall_augmented") or {}
        rare = _rare(plots.get(site)) or list(trtr)
        series = {"TRTR": [trtr.get(c) for c in rare], "augmented": [boosted.get(c) for c in rare]}
        parts.append(f"<h3>{_esc(site)}</h3>" + _hbars(rare, series, value_max=1.0))
    return ('<p class="note">Blank bars are suppressed: the class has fewer than 10 test records '
            "at the site.</p>" + "".join(parts))


def _rare(plots: Mapping[str, Any] | None) -> list[str]:
    if not plots or plots.get("label") not in plots.get("histograms", {}):
        return []
    hist = plots["histograms"][plots["label"]]
    counts = [c or 0 for c in hist["real"]]
    median = statistics.median(counts)
    # A suppressed count (None) reads as 0, so suppressed classes are always rare.
    return [cell for cell, count in zip(hist["cells"], counts, strict=True)
            if count < median or count == 0]


def _plots(plots: Mapping[str, Any]) -> str:
    if not plots:
        return '<p class="note">No plot data in this report.</p>'
    parts = []
    for i, (site, data) in enumerate(plots.items()):
        sides = ["real (test)", "synthetic"]
        charts = "".join(
            f"<div><b>{_esc(column)}</b>"
            + _hbars(hist["cells"], dict(zip(sides, (_shares(hist["real"], hist["n_real"]),
                                                     _shares(hist["synthetic"], hist["n_synthetic"])),
                                              strict=True)),
                     fmt="{:.0%}", width=300, legend=False) + "</div>"
            for column, hist in data.get("histograms", {}).items())
        assoc = data.get("associations") or {}
        heat = (_heatmap(assoc["columns"], assoc["difference"]) if assoc.get("difference")
                else '<p class="note">No association matrix (too few records).</p>')
        parts.append(f'<details{" open" if i == 0 else ""}><summary>{_esc(site)}</summary>'
                     f'<p class="note">{_esc(data.get("note", ""))}</p>{_legend(sides)}'
                     f'<div class="grid">{charts}</div><h3>Association difference, synthetic minus real '
                     f"(bias-corrected Cramér's V)</h3>"
                     f'<p class="note">Red: the pair is more associated in the synthetic records than '
                     f"in the site's test split; blue: less; full colour at a difference of "
                     f"{HEAT_SCALE} or more.</p>{heat}</details>")
    return "".join(parts)


def _samples(samples: pd.DataFrame | None) -> str:
    if samples is None or samples.empty:
        return '<p class="note">No synthetic records given.</p>'
    head = samples.head(SAMPLE_ROWS)
    rows = [[_fmt(None if pd.isna(v) else v) for v in row] for row in head.itertuples(index=False)]
    return (f'<p class="note">The first {len(head)} of {len(samples)} released synthetic records '
            "(no real record appears in this report).</p>" + _table(list(map(str, head.columns)), rows))


# --- building blocks -------------------------------------------------------------------------

def _metrics_table(runs: Mapping[str, Mapping[str, Any] | None]) -> str:
    rows = []
    for path, label, best in METRIC_ROWS:
        values = [_lookup(m, path) for m in runs.values()]
        if path.startswith("text.") and all(v is None for v in values):
            continue
        rows.append((label, best, *map(_fmt, values)))
    return _table(["metric", "best", *runs], rows)


def _lookup(metrics: Mapping[str, Any] | None, path: str) -> Any:
    value: Any = metrics
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _shares(counts: Sequence[int | None], n: int) -> list[float | None]:
    return [None if c is None or not n else c / n for c in counts]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v, first=i == 0) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, first: bool) -> str:
    text = str(value)
    numeric = not first and text.replace(".", "", 1).replace("-", "", 1).isdigit()
    return f'<td class="num">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _legend(names: Sequence[str]) -> str:
    return '<div class="legend">' + "".join(
        f'<span style="background:{SERIES_COLOURS[i % len(SERIES_COLOURS)]}"></span>{_esc(n)}'
        for i, n in enumerate(names)) + "</div>"


def _hbars(rows: Sequence[str], series: Mapping[str, Sequence[float | None]],
           value_max: float | None = None, fmt: str = "{:.3f}", width: int = 560,
           legend: bool = True) -> str:
    """Horizontal grouped bars: one group per row label, one bar per series; a missing value
    (suppressed or undefined) leaves its bar blank and says so in the tooltip."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = value_max or max(values, default=0.0) or 1.0
    bar, label_w, value_w = 11, 150, 50
    plot_w = width - label_w - value_w
    group_h = bar * len(series) + 6
    parts = []
    for r, row in enumerate(rows):
        y0 = r * group_h
        parts.append(f'<text x="{label_w - 4}" y="{y0 + group_h / 2 + 4:.1f}" text-anchor="end">'
                     f"{_esc(_short(row))}<title>{_esc(row)}</title></text>")
        for s, (name, vs) in enumerate(series.items()):
            value, y = vs[r], y0 + s * bar + 3
            colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
            if value is None:
                parts.append(f'<rect x="{label_w}" y="{y}" width="{plot_w}" height="{bar - 1}" '
                             f'fill="none" stroke="#ddd" stroke-dasharray="2,2"><title>'
                             f"{_esc(name)}: suppressed or not available</title></rect>")
                continue
            w, shown = max(0.0, min(1.0, value / top)) * plot_w, _esc(fmt.format(value))
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 1}" '
                         f'fill="{colour}"><title>{_esc(name)}: {shown}</title></rect>'
                         f'<text x="{label_w + w + 3:.1f}" y="{y + bar - 2}">{shown}</text>')
    height = max(1, len(rows)) * group_h
    svg = (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
           + "".join(parts) + "</svg>")
    return (_legend(list(series)) if legend and len(series) > 1 else "") + svg


def _heatmap(labels: Sequence[str], matrix: Sequence[Sequence[float | None]]) -> str:
    """A diverging heat map: red where synthetic is more associated than real, blue where less,
    full colour from a difference of HEAT_SCALE; grey where undefined."""
    cell, margin, slant = 14, 150, 80  # slant: room on the right for the tilted column labels
    size = margin + cell * len(labels)
    parts = []
    for i, name in enumerate(labels):
        parts.append(f'<text x="{margin - 4}" y="{margin + i * cell + cell - 3}" text-anchor="end">'
                     f"{_esc(_short(name))}</text>")
        x = margin + i * cell + cell - 3
        parts.append(f'<text x="{x}" y="{margin - 4}" transform="rotate(-60 {x} {margin - 4})">'
                     f"{_esc(_short(name))}</text>")
        for j, value in enumerate(matrix[i]):
            tip = f"{labels[i]} x {labels[j]}: " + ("n/a" if value is None else f"{value:+.3f}")
            parts.append(f'<rect x="{margin + j * cell}" y="{margin + i * cell}" width="{cell}" '
                         f'height="{cell}" fill="{_diverging(value)}"><title>{_esc(tip)}</title></rect>')
    return (f'<svg width="{size + slant}" height="{size}" viewBox="0 0 {size + slant} {size}" '
            f'role="img">' + "".join(parts) + "</svg>")


def _diverging(value: float | None) -> str:
    if value is None:
        return "#e0e0e0"
    t = max(-1.0, min(1.0, value / HEAT_SCALE))
    fade = int(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t > 0 else f"rgb({fade},{fade},255)"


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
