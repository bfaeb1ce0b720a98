"""report.html: a run's report.json as one self-contained page, readable offline and safe to publish.

The page leads with what a coordinator needs first: a verdict (federated vs local-only vs
centralized vs the baseline to beat, each figure beside its ceiling, the privacy spent per site and
a few sentences saying what the figures mean), then the plots, then the full tables. It has inline
CSS and inline SVG plots, no script and no external URL, so it opens from a file on an air-gapped
machine. It shows only what report.json holds (aggregate figures, plot data already
small-cell-suppressed at the sites, kept under ``report["plots"][SITE]`` as written by
``common.metrics.bins.plot_data``) and a sample of synthetic records; every string from the report
or the records is escaped.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

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
body{font-family:system-ui,sans-serif;margin:1em auto;max-width:1200px;color:#222;line-height:1.4}
h1,h2,h3{font-weight:600} h1{margin:0 0 .2em} h2{font-size:1.3em;margin:.8em 0 .3em}
table{border-collapse:collapse;margin:.5em 0 1.5em} caption{text-align:left}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums} th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:1em} .note{color:#555;font-size:.9em}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
svg text{font-size:11px;fill:#222} nav{font-size:.9em} nav a{margin-right:1em}
summary{cursor:pointer;font-weight:600} p.verdict{margin:.3em 0}
.lead{display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start} .lead table{margin:.3em 0}
.lead th,.lead td{padding:.15em .45em}
.lead caption{caption-side:bottom;color:#555;font-size:.85em;padding-top:.2em}
"""


class VerdictRow(NamedTuple):
    """One row of the verdict: the figure, its ideal, the baseline it must beat, its ceiling."""

    label: str
    path: str
    ideal: str
    baseline: str
    ceiling: tuple[str, str] | None  # (variant, path) of the best a generator could score


VERDICT_RUNS = (("federated", "federated"), ("local-only", "local_only"), ("centralized", "centralized"))
VERDICT_ROWS = (
    VerdictRow("fidelity: pair trends", "fidelity.column_pair_trends", "1",
               "independent_marginals", ("real_train", "fidelity.column_pair_trends")),
    VerdictRow("fidelity: detection AUC", "fidelity.detection_auc", "0.5",
               "independent_marginals", ("real_train", "fidelity.detection_auc")),
    VerdictRow("utility: TSTR macro-F1", "utility.tstr_macro_f1", "ceiling",
               "independent_marginals", ("federated", "utility.trtr_macro_f1")),
    VerdictRow("privacy: MIA AUC", "privacy.mia_auc", "0.5", "independent_marginals", None),
    VerdictRow("privacy: exact copies", "privacy.exact_copies", "0", "independent_marginals", None),
    VerdictRow("narratives: consistency", "text.consistency_accuracy", "ceiling",
               "text_floor", ("federated", "text.real_consistency_accuracy")),
    VerdictRow("narratives: MAUVE", "text.mauve", "ceiling", "text_floor",
               ("federated", "text.mauve_ceiling")),
    VerdictRow("narratives: gate pass rate", "text.gate_pass_rate", "1", "text_floor", None),
)
VERDICT_CAPTION = ("Record-weighted means over the sites. Baseline: independent marginals (tabular), "
                   "the narrative model without private data (narratives). Ceiling: the real train "
                   "split, TRTR, the real notes.")
# (name in a sentence, path, ideal): the figures on which the federated release is compared with
# each baseline; an ideal of 0.5 means closer to 0.5 is better, None means higher is better.
COMPARED = (("pair trends", "fidelity.column_pair_trends", None),
            ("detection AUC", "fidelity.detection_auc", 0.5),
            ("TSTR macro-F1", "utility.tstr_macro_f1", None),
            ("membership-inference AUC", "privacy.mia_auc", 0.5),
            ("narrative consistency", "text.consistency_accuracy", None),
            ("MAUVE", "text.mauve", None))
NARRATIVE_SHARES = (("the real notes' consistency", "consistency_accuracy", "real_consistency_accuracy"),
                    ("the real-vs-real MAUVE", "mauve", "mauve_ceiling"))
BASELINES = (("independent marginals", "independent_marginals"), ("local-only generators", "local_only"),
             ("centralized training", "centralized"), ("the text floor", "text_floor"))


def render_report_html(report: Mapping[str, Any], samples: pd.DataFrame | None = None) -> str:
    """The whole page for ``report`` (CONTRACT report.json, plus optional ``plots``) and, when
    given, a sample of the released synthetic records (never real ones): the verdict first, then
    the figures (``#figures``), then the tables (``#tables``)."""
    verdict = [("verdict", "Verdict: federated vs baselines", _verdict(report))]
    figures = [
        ("utility", "Utility per site: TSTR vs TRTR", _utility(report.get("sites") or {})),
        ("distributions", "Distributions and associations: site test splits vs synthetic",
         _plots(report.get("plots") or {})),
        ("rare-classes", "Rare classes: per-class recall", _rare_classes(report)),
    ]
    tables = [
        ("summary", "Summary: every figure, federated vs baselines", _summary(report.get("summary") or {})),
        ("sites", "Per-site results", _sites(report)),
        ("privacy", "Privacy spent per site", _privacy(report.get("privacy") or {})),
        ("run", "Run settings", _run(report.get("run") or {})),
        ("samples", "Synthetic records: a sample", _samples(samples)),
    ]
    nav = "".join(f'<a href="#{key}">{_esc(title.split(":")[0])}</a>'
                  for key, title, _ in verdict + figures + tables)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>fedsynth report</title><style>{CSS}</style></head><body>"
            f"<h1>fedsynth report</h1><nav>{nav}</nav>{_sections(verdict)}"
            f'<div id="figures">{_sections(figures)}</div><div id="tables">{_sections(tables)}</div>'
            "</body></html>\n")


def _sections(sections: Sequence[tuple[str, str, str]]) -> str:
    return "".join(f'<section id="{key}"><h2>{_esc(title)}</h2>{content}</section>'
                   for key, title, content in sections)


# --- the verdict ----------------------------------------------------------------------------

def _verdict(report: Mapping[str, Any]) -> str:
    """One screen: what the figures mean in words, the headline figures beside their baseline
    and ceiling, and what each site spent."""
    summary = report.get("summary") or {}
    return (f'<p class="verdict">{_esc(" ".join(_sentences(report)))}</p>'
            f'<div class="lead">{_verdict_table(summary)}'
            f"{_spent((report.get('privacy') or {}).get('per_site') or {})}</div>")


def _verdict_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for row in VERDICT_ROWS:
        ceiling = _lookup(summary.get(row.ceiling[0]), row.ceiling[1]) if row.ceiling else None
        values = [_lookup(summary.get(v), row.path) for _, v in VERDICT_RUNS]
        values += [_lookup(summary.get(row.baseline), row.path), ceiling]
        if row.path.startswith("text.") and all(v is None for v in values):
            continue
        rows.append((row.label, row.ideal, *map(_fmt, values)))
    header = ["figure", "ideal", *(label for label, _ in VERDICT_RUNS), "baseline", "ceiling"]
    return _table(header, rows, table_id="verdict-table", caption=VERDICT_CAPTION)


def _spent(per_site: Mapping[str, Mapping[str, Any]]) -> str:
    columns = ("epsilon_tabular", "epsilon_text", "epsilon_total")
    rows = [(site, *(_fmt(spent.get(c)) for c in columns)) for site, spent in per_site.items()]
    return _table(["site", "ε tabular", "ε text", "ε run"], rows, table_id="spent",
                  caption="Privacy spent per site; ε run: the run's releases composed.")


def _sentences(report: Mapping[str, Any]) -> list[str]:
    """Plain words computed from the summary: fidelity, the comparison with each baseline,
    utility and privacy, narratives. A figure that is missing is left out, never guessed."""
    summary = report.get("summary") or {}
    federated = summary.get("federated") or {}
    sentences = [_fidelity_sentence(federated, summary.get("real_train")),
                 _comparison_sentence(federated, summary),
                 _utility_privacy_sentence(federated, report.get("sites") or {}),
                 _narrative_sentence(federated.get("text"))]
    return [s for s in sentences if s] or ["No federated figures in this report."]


def _fidelity_sentence(federated: Mapping[str, Any], real: Mapping[str, Any] | None) -> str:
    trends = _num(_lookup(federated, "fidelity.column_pair_trends"))
    ceiling = _num(_lookup(real, "fidelity.column_pair_trends"))
    detection = _num(_lookup(federated, "fidelity.detection_auc"))
    parts = []
    if trends is not None and ceiling:
        parts.append(f"the federated generator keeps {trends / ceiling:.0%} of the pair trends "
                     "real data keep")
    if detection is not None:
        parts.append(f"a detector tells its records from real ones with AUC {_fmt(detection)} "
                     "(0.5: indistinguishable)")
    return _as_sentence("; ".join(parts))


def _comparison_sentence(federated: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    clauses = [_versus(name, *_compare(federated, summary.get(variant))) for name, variant in BASELINES]
    return _as_sentence("; ".join(c for c in clauses if c))


def _versus(name: str, better: Sequence[str], worse: Sequence[str]) -> str:
    if better and worse:
        return f"it beats {name} on {_words(better)}, loses to them on {_words(worse)}"
    if better or worse:
        return f"it {'beats' if better else 'loses to'} {name} on {_words(better or worse)}"
    return ""


def _compare(federated: Mapping[str, Any], other: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """The figures on which the federated release does better and worse than ``other`` (a tie
    at the shown precision, or a figure missing on either side, is in neither)."""
    better, worse = [], []
    for name, path, ideal in COMPARED:
        ours, theirs = _num(_lookup(federated, path)), _num(_lookup(other, path))
        if ours is None or theirs is None or round(ours, 3) == round(theirs, 3):
            continue
        wins = abs(ours - ideal) < abs(theirs - ideal) if ideal is not None else ours > theirs
        (better if wins else worse).append(name)
    return better, worse


def _utility_privacy_sentence(federated: Mapping[str, Any], sites: Mapping[str, Any]) -> str:
    tstr = _num(_lookup(federated, "utility.tstr_macro_f1"))
    trtr = _num(_lookup(federated, "utility.trtr_macro_f1"))
    mia = _num(_lookup(federated, "privacy.mia_auc"))
    parts = []
    if tstr is not None and trtr:
        parts.append(f"trained on its records alone, a classifier reaches {tstr / trtr:.0%} of "
                     "real records' macro-F1")
    if mia is not None:
        parts.append(f"membership inference reaches AUC {_fmt(mia)} (0.5: chance)")
    parts.append(_copies_phrase(_lookup(federated, "privacy.exact_copies"), sites))
    return _as_sentence("; ".join(p for p in parts if p))


def _copies_phrase(total: Any, sites: Mapping[str, Any]) -> str:
    """Exact copies summed over the sites, or each site's count where one is suppressed."""
    if isinstance(total, int) and not isinstance(total, bool):
        return f"{total} synthetic rows copy a train row exactly"
    counts = [_fmt(_lookup(m, "privacy.exact_copies")) for m in sites.values()]
    return f"exact copies of train rows per site: {', '.join(counts)}" if counts else ""


def _narrative_sentence(text: Mapping[str, Any] | None) -> str:
    """The narratives as shares of their ceilings (the real notes), which the table does not show."""
    text = text or {}
    shares = [f"{ours / ceiling:.0%} of {name}" for name, ours, ceiling in
              ((name, _num(text.get(key)), _num(text.get(top))) for name, key, top in NARRATIVE_SHARES)
              if ours is not None and ceiling]
    parts = [f"narratives reach {_words(shares)}"] if shares else []
    gate = _num(text.get("gate_pass_rate"))
    if gate is not None:
        parts.append(f"{gate:.0%} passed the consistency gate")
    return _as_sentence("; ".join(parts))


def _as_sentence(text: str) -> str:
    """Clauses joined as one sentence: capitalised, with its full stop; nothing stays nothing."""
    return text[0].upper() + text[1:] + "." if text else ""


def _words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _num(value: Any) -> float | None:
    """A figure as a number, or None where it is missing or suppressed ("<10")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


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
    return ('<p class="note">Macro-F1 on each site\'s test split of the label classifier trained on '
            "real records (TRTR), synthetic ones (TSTR), or real plus synthetic rare classes "
            "(augmented).</p>"
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


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "",
           caption: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v, first=i == 0) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    opening = (f'<table id="{table_id}">' if table_id else "<table>") + (
        f"<caption>{_esc(caption)}</caption>" if caption else "")
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
