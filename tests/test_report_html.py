"""report.html: one self-contained, well-formed page with every section, every site, no external
URL and every string from the report or the records escaped, whose first screen in a browser holds
the verdict and a figure."""

from __future__ import annotations

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from common.data import stratified_split
from common.metrics.bins import plot_data
from common.metrics.evaluate import summarize
from common.privacy.disclosure import SMALL
from common.run_plan import RunPlan
from server.report import add_variant, build_report, privacy_section, summary_lines
from server.report_html import render_report_html
from simulation.ed_schema import MECHANISMS, ed_trauma_schema
from simulation.hospitals import simulate_site

SITES = ("site-1-urban_trauma", "St <Mary's> & Co")
SECTIONS = ("verdict", "run", "privacy", "summary", "sites", "utility", "rare-classes", "distributions",
            "samples")
PLAN = RunPlan.standard("run-1", 0, "vae", rounds=3, local_steps=5, tabular_config={},
                        text_config={"base": "tiny", "max_noise_per_batch": None},
                        text_rounds=2, text_local_steps=3,
                        local_only=True)
TABULAR_ONLY = RunPlan.standard("run-1", 0, "vae", rounds=3, local_steps=5, tabular_config={})
RELEASE = {"sha256": "ab" * 32, "records": 1200}
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
CHROMIUM = shutil.which("chromium")  # `make test` installs it (Debian package)
SCREEN = (1280, 900)  # the coordinator's first screen
NARRATIVES = {"consistency_accuracy": 0.7, "real_consistency_accuracy": 0.9, "mauve": 0.4,
              "mauve_ceiling": 0.8, "mauve_alt": 0.5, "mauve_alt_ceiling": 0.9, "distinct_2": 0.6,
              "real_distinct_2": 0.7, "gate_pass_rate": 0.95, "canary_exposure_bits": None}
FLOOR = {**NARRATIVES, "consistency_accuracy": 0.5, "mauve": 0.1}


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


def metrics(n_test: int, f1: float, copies: int | str = SMALL) -> dict:
    recall = {c: (f1 if i < 4 else None) for i, c in enumerate(MECHANISMS)}
    return {"n_train": 3 * n_test, "n_test": n_test,
            "fidelity": {"column_shapes": 0.95, "column_pair_trends": 0.8, "detection_auc": 0.6,
                         "wasserstein_mean": 0.01},
            "utility": {"trtr_macro_f1": f1, "tstr_macro_f1": f1 - 0.1, "augmented_macro_f1": f1 + 0.02,
                        "per_class_recall_trtr": recall, "per_class_recall_augmented": recall},
            "privacy": {"exact_copies": copies, "dcr_overfitting_protection": 0.9, "mia_auc": 0.51},
            "text": None}


def spend(tabular: float, local: float | None, text: float | None, run: float, lifetime: float,
          cap: float | None = 10.0, delta: float = 1e-5) -> dict:
    """A site's reported spend (``SiteRun.spends``): epsilon per ledger model name."""
    epsilon = {"tabular-vae": tabular}
    if local is not None:
        epsilon["tabular-vae-local"] = local
    if text is not None:
        epsilon["text-lora"] = text
    return {"epsilon": epsilon, "epsilon_run": run, "epsilon_lifetime": lifetime,
            "epsilon_cap": cap, "delta": delta}


SPENDS = {SITES[0]: spend(2.9, 2.8, 1.5, 4.1, 6.2),
          SITES[1]: spend(2.7, None, 1.4, 3.3, 3.3, cap=None, delta=1e-6)}
RUN = {"fedsynth_version": "0.1.0", "seed": 0, "profile": "quick", "generator": "vae",
       "sites": list(SITES), "rounds": 3, "duration_s": 12.5, "started_at": "2025-01-01T00:00:00+00:00"}


@pytest.fixture(scope="module")
def report() -> dict:
    schema = ed_trauma_schema(list(SITES))
    evaluations = {}
    for i, site in enumerate(SITES):
        test = stratified_split(simulate_site("urban_trauma", 500, i, site), "mechanism", 0)["test"]
        plots = plot_data(test, simulate_site("urban_trauma", 300, 10 + i, site), schema)
        scores = {"federated": {**metrics(100 + 50 * i, 0.4 + 0.1 * i, SMALL if i == 0 else 20),
                                "plots": plots}}
        if i == 0:  # only the first site trained and scored the local-only baseline
            scores["local_only"] = {**metrics(100, 0.3), "plots": plots}
        evaluations[site] = {"scores": scores, "spend": SPENDS[site]}
    privacy = privacy_section({site: e["spend"] for site, e in evaluations.items()}, PLAN)
    return build_report(RUN, privacy, evaluations, RELEASE)


def test_build_report_puts_each_variant_in_its_place(report) -> None:
    assert report["run"] == RUN and report["release"] == RELEASE
    assert list(report["sites"]) == sorted(SITES) and list(report["plots"]) == sorted(SITES)
    assert all("plots" not in m for m in report["sites"].values())  # plot data travels beside
    assert set(report["plots"][SITES[0]]["histograms"]) >= {"mechanism", "age"}
    assert list(report["baselines"]["local_only"]) == [SITES[0]]
    assert report["baselines"]["centralized"] is None and report["summary"]["centralized"] is None
    federated = report["summary"]["federated"]
    assert federated["n_test"] == 100 + 150
    assert federated["privacy"]["exact_copies"] is None  # one site wrote "<10": no known sum
    assert report["summary"]["local_only"] == summarize(report["baselines"]["local_only"])
    # a run without any local-only score has no such baseline at all
    federated_only = {site: {"scores": {"federated": {**metrics(100, 0.5), "plots": report["plots"][site]}},
                             "spend": SPENDS[site]} for site in SITES}
    bare = build_report(RUN, report["privacy"], federated_only, RELEASE)
    assert bare["baselines"]["local_only"] is None and bare["summary"]["local_only"] is None
    assert bare["summary"]["federated"]["privacy"]["exact_copies"] is None
    # a simulation adds the centralized baseline afterwards
    add_variant(bare, "centralized", {SITES[0]: {**metrics(100, 0.7, 30), "plots": {}}})
    assert list(bare["baselines"]["centralized"]) == [SITES[0]]
    assert bare["summary"]["centralized"]["utility"]["trtr_macro_f1"] == pytest.approx(0.7)
    assert bare["summary"]["centralized"]["privacy"]["exact_copies"] == 30
    assert list(bare["plots"]) == sorted(SITES)  # the federated plots are kept


def test_privacy_section_maps_ledger_names_to_contract_keys(report) -> None:
    privacy = report["privacy"]
    assert privacy["delta"] == 1e-5  # the largest site delta
    first, second = privacy["per_site"][SITES[0]], privacy["per_site"][SITES[1]]
    assert first == {"epsilon_tabular": 2.9, "epsilon_tabular_local_only": 2.8, "epsilon_text": 1.5,
                     "epsilon_total": 4.1, "epsilon_lifetime": 6.2, "epsilon_cap": 10.0}
    assert second["epsilon_tabular_local_only"] is None and second["epsilon_cap"] is None
    assert (second["epsilon_total"], second["epsilon_lifetime"]) == (3.3, 3.3)
    without_text = privacy_section(SPENDS, TABULAR_ONLY)
    assert {p["epsilon_text"] for p in without_text["per_site"].values()} == {None}
    nothing_spent = privacy_section({"a": spend(0.0, None, None, 0.0, 0.0)}, PLAN)["per_site"]["a"]
    assert (nothing_spent["epsilon_tabular"], nothing_spent["epsilon_text"]) == (0.0, 0.0)
    assert privacy_section({}, PLAN) == {"delta": None, "per_site": {}}


def test_summary_lines_give_the_run_and_the_lifetime_spend(report) -> None:
    lines = summary_lines(report)
    assert lines[1].startswith("federated") and lines[3].startswith("centralized")
    assert "(not run)" in lines[3]
    assert lines[-1] == ("sites 2; epsilon per site: federated model 2.70-2.90, narrative model "
                         "1.40-1.50, the run's releases composed 3.30-4.10 (lifetime 3.30-6.20); "
                         "delta 1e-05")


def scored(base: dict, pair_trends: float, detection: float, mia: float | None = 0.51) -> dict:
    """``base`` METRICS with other fidelity and membership-inference figures."""
    return {**base, "fidelity": {**base["fidelity"], "column_pair_trends": pair_trends,
                                 "detection_auc": detection},
            "privacy": {**base["privacy"], "mia_auc": mia}}


@pytest.fixture(scope="module")
def demo_like(report) -> dict:
    """The demo's shape, the tallest verdict: five sites, every baseline but centralized, and
    narratives with their floor."""
    sites = [f"site-{i}" for i in range(1, 6)]
    federated = {**metrics(100, 0.5), "text": NARRATIVES, "plots": report["plots"][SITES[0]]}
    scores = {"federated": federated, "local_only": metrics(100, 0.4),
              "independent_marginals": scored(metrics(100, 0.3), 0.6, 0.9, mia=0.5),
              "real_train": scored(metrics(100, 0.5), 0.9, 0.52, mia=None),
              "text_floor": {**metrics(100, 0.5), "text": FLOOR}}
    evaluations = {site: {"scores": scores, "spend": SPENDS[SITES[0]]} for site in sites}
    privacy = privacy_section({site: e["spend"] for site, e in evaluations.items()}, PLAN)
    return build_report(RUN, privacy, evaluations, RELEASE)


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
    assert "<td>&lt;10</td>" in page  # a small count as the site wrote it, escaped


def test_privacy_table_shows_run_lifetime_and_cap(page: str) -> None:
    for column in ("epsilon_tabular", "epsilon_tabular_local_only", "epsilon_text", "epsilon_total",
                   "epsilon_lifetime", "epsilon_cap"):
        assert f"<th>{column}</th>" in page, column
    assert '<td class="num">6.200</td>' in page and '<td class="num">10.000</td>' in page
    assert "lifetime" in page and "never from its record count" in page


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


def test_verdict_says_what_the_figures_mean(demo_like) -> None:
    page = render_report_html(demo_like)
    verdict = page[page.index('<section id="verdict">'):page.index('<div id="figures">')]
    assert ("The federated generator keeps 89% of the pair trends real data keep; a detector tells "
            "its records from real ones with AUC 0.600 (0.5: indistinguishable).") in verdict
    assert ("It beats independent marginals on pair trends, detection AUC and TSTR macro-F1, loses "
            "to them on membership-inference AUC; it beats local-only generators on TSTR macro-F1; "
            "it beats the text floor on narrative consistency and MAUVE.") in verdict
    assert "centralized training" not in verdict  # not run: no comparison, a blank column
    assert "a classifier reaches 80% of real records&#x27; macro-F1" in verdict
    assert "exact copies of train rows per site: &lt;10, &lt;10" in verdict  # no known sum
    assert ("Narratives reach 78% of the real notes&#x27; consistency and 50% of the real-vs-real "
            "MAUVE; 95% passed the consistency gate.") in verdict
    assert ('<tr><td>narratives: MAUVE</td><td>ceiling</td><td class="num">0.400</td><td>–</td>'
            '<td>–</td><td class="num">0.100</td><td class="num">0.800</td></tr>') in verdict
    assert verdict.count("<tr><td>site-") == 5 and "ε text" in verdict


def test_verdict_survives_missing_figures() -> None:
    summary = {"federated": {"fidelity": None, "utility": {"tstr_macro_f1": SMALL}, "text": None},
               "centralized": None, "real_train": {"fidelity": {"column_pair_trends": 0.0}}}
    page = render_report_html({"summary": summary, "sites": {}, "privacy": {"per_site": {
        "a": {"epsilon_tabular": 1.0, "epsilon_text": None}}}})
    verdict = page[page.index('<section id="verdict">'):page.index('<div id="figures">')]
    assert '<td>fidelity: pair trends</td><td class="num">1</td><td>–</td>' in verdict
    assert "<td>utility: TSTR macro-F1</td><td>ceiling</td><td>&lt;10</td>" in verdict
    assert "narratives:" not in verdict  # no text section: no narrative rows
    assert '<td>a</td><td class="num">1.000</td><td>–</td><td>–</td>' in verdict
    assert "No federated figures in this report." in verdict
    assert "No federated figures" in render_report_html({"summary": {"federated": None}})


def first_screen(page: str, folder: Path, hidden: str = "") -> bytes:
    """Headless Chromium's screenshot (PNG) of the top SCREEN of ``page``, the elements matching
    the CSS selector ``hidden`` made invisible while keeping their place, so nothing else moves
    and the screenshot changes only if they were drawn in it."""
    if hidden:
        page = page.replace("</head>", f"<style>{hidden}{{visibility:hidden}}</style></head>", 1)
    source, shot = folder / "page.html", folder / "shot.png"
    source.write_text(page, encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={folder / 'profile'}", f"--window-size={SCREEN[0]},{SCREEN[1]}"]
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", source.as_uri()], capture_output=True,
                   timeout=60, check=True)
    return shot.read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make test installs it)")
def test_first_screen_shows_the_whole_verdict_and_a_whole_figure(demo_like, tmp_path) -> None:
    """Hiding what lies below the first screen leaves its screenshot byte for byte the same (so
    the comparison is deterministic); hiding the verdict's last rows, or the first figure's last
    mark, changes it: they are drawn within the top 900 px."""
    page = render_report_html(demo_like)
    shot = first_screen(page, tmp_path)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", shot[16:24]) == SCREEN
    assert first_screen(page, tmp_path, "#tables") == shot
    for drawn in ("#verdict-table tbody tr:last-child", "#spent tbody tr:last-child",
                  "#figures section:first-child svg > :last-child"):
        assert first_screen(page, tmp_path, drawn) != shot, f"{drawn} is not on the first screen"
