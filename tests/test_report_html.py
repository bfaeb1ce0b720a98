"""report.html: one self-contained, well-formed page with every section, every site, no external
URL and every string from the report or the records escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest

from common.data import stratified_split
from common.metrics.bins import plot_data
from common.metrics.evaluate import summarize
from server.report_html import render_report_html
from simulation.ed_schema import MECHANISMS, ed_trauma_schema
from simulation.hospitals import simulate_site

SITES = ("site-1-urban_trauma", "St <Mary's> & Co")
SECTIONS = ("run", "privacy", "summary", "sites", "utility", "rare-classes", "distributions", "samples")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class TagChecker(HTMLParser):
    """Records tag-nesting errors, sources of external resources and section ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]
        if "id" in values:
            self.ids.append(values["id"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def metrics(n_test: int, f1: float) -> dict:
    recall = {c: (f1 if i < 4 else None) for i, c in enumerate(MECHANISMS)}
    return {"n_train": 3 * n_test, "n_test": n_test,
            "fidelity": {"column_shapes": 0.95, "column_pair_trends": 0.8, "detection_auc": 0.6,
                         "wasserstein_mean": 0.01},
            "utility": {"trtr_macro_f1": f1, "tstr_macro_f1": f1 - 0.1, "augmented_macro_f1": f1 + 0.02,
                        "per_class_recall_trtr": recall, "per_class_recall_augmented": recall},
            "privacy": {"exact_copies": 0, "dcr_overfitting_protection": 0.9, "mia_auc": 0.51},
            "text": None}


@pytest.fixture(scope="module")
def report() -> dict:
    schema = ed_trauma_schema(list(SITES))
    sites = {site: metrics(100 + 50 * i, 0.4 + 0.1 * i) for i, site in enumerate(SITES)}
    local = {site: metrics(m["n_test"], 0.3) for site, m in sites.items()}
    plots = {}
    for i, site in enumerate(SITES):
        test = stratified_split(simulate_site("urban_trauma", 500, i, site), "mechanism", 0)["test"]
        plots[site] = plot_data(test, simulate_site("urban_trauma", 300, 10 + i, site), schema)
    return {"run": {"fedsynth_version": "0.1.0", "seed": 0, "profile": "quick", "generator": "vae",
                    "sites": list(SITES), "rounds": 3, "duration_s": 12.5,
                    "started_at": "2025-01-01T00:00:00+00:00"},
            "privacy": {"delta": 1e-5, "per_site": {s: {"epsilon_tabular": 2.9, "epsilon_text": None,
                                                        "epsilon_total": 2.9} for s in SITES}},
            "sites": sites, "baselines": {"local_only": local, "centralized": None},
            "summary": {"federated": summarize(sites), "local_only": summarize(local),
                        "centralized": None},
            "plots": plots}


@pytest.fixture(scope="module")
def page(report) -> str:
    samples = simulate_site("urban_trauma", 30, 7, SITES[0])
    samples.loc[0, "narrative"] = "<script>alert('x')</script> pt FELL"
    return render_report_html(report, samples[ed_trauma_schema(list(SITES)).output_columns])


def test_page_is_well_formed_with_every_section(page: str) -> None:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert page.startswith("<!DOCTYPE html>")
    for section in SECTIONS:
        assert section in checker.ids, section
    assert page.count("<svg") > 2 * 25  # a histogram per modeled column per site, and more


def test_page_is_self_contained(page: str) -> None:
    checker = TagChecker()
    checker.feed(page)
    assert checker.urls == []  # only in-page anchors
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_every_site_appears_escaped(page: str) -> None:
    for site in SITES:
        assert site.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
            "'", "&#x27;") in page
    assert "<Mary's>" not in page
    assert "&lt;script&gt;alert(" in page  # a narrative is text, never markup
    assert "pt FELL" in page  # the narrative column is shown


def test_tables_show_baselines_and_missing_centralized(page: str) -> None:
    assert "local-only" in page and "centralized" in page
    assert "Column Pair Trends" in page and "membership-inference AUC" in page
    assert "–" in page  # centralized was not run
    assert "suppressed" in page


def test_a_report_without_metrics_still_renders() -> None:
    page = render_report_html({"run": {"seed": 1, "sites": ["a"]},
                               "privacy": {"delta": 1e-5, "per_site": {"a": {"epsilon_tabular": 1.0}}}},
                              samples=None)
    checker = TagChecker()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == []
    assert "No site results" in page and "No synthetic records" in page


def test_samples_are_capped(report) -> None:
    samples = pd.DataFrame({"age": range(100), "mechanism": ["fall"] * 100})
    page = render_report_html(report, samples)
    assert "The first 20 of 100" in page
