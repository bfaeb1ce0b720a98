"""The researcher's pipeline on Flower's Simulation Engine: 3 simulated sites, tiny settings,
with the baselines (each site's local-only model, the centralized one) trained for evaluation."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from common.data import load_site_data, stratified_split
from common.metrics.fidelity import quality_scores
from common.privacy.disclosure import rounded
from common.privacy.ledger import LedgerEntry, epsilon_from_ledger
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from fedsynth.console import run_console
from server.report import summary_lines
from simulation.baselines import pooled_split
from simulation.hospitals import write_sim_data
from simulation.pipeline import SimulatedRun, run_pipeline
from simulation.profiles import RunProfile
from tests.test_cli import fedsynth

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # `make test` installs it (Debian package)
TINY = RunProfile("quick", sites=3, records_per_site=300, rounds=3, local_steps=100,
                  synthetic_records=600,
                  tabular_config={"batch_size": 64, "lr": 3e-3,
                                  "model": {"hidden": [64, 64], "latent_dim": 8}},
                  text_rounds=2, text_local_steps=2, narrated_records=60,
                  text_config={"base": "tiny", "max_noise_per_batch": None,  # mechanics
                               "batch_size": 32, "max_target_tokens": 32,
                               "sampling": {"max_new_tokens": 24, "batch_size": 30, "retries": 1}})
TEXT_KEYS = {"consistency_accuracy", "real_consistency_accuracy", "mauve", "mauve_ceiling", "mauve_alt",
             "mauve_alt_ceiling", "distinct_2", "real_distinct_2", "gate_pass_rate",
             "canary_exposure_bits", "train_8gram_share"}


def _categorical_gap(synthetic: pd.DataFrame, real: pd.DataFrame, schema: Schema) -> float:
    """Mean total-variation distance of the categorical features' marginals."""
    gaps = []
    for col in schema.modeled_columns:
        if col.type == "categorical" and col.role == "feature":
            p = real[col.name].value_counts(normalize=True)
            q = synthetic[col.name].value_counts(normalize=True)
            gaps.append(0.5 * p.sub(q, fill_value=0).abs().sum())
    return float(np.mean(gaps))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    paths = write_sim_data(root / "data", TINY.sites, TINY.records_per_site, seed=4)
    files = {p.stem: p for p in paths if p.suffix == ".csv"}
    kept: list[SimulatedRun] = []

    def keep(simulated: SimulatedRun) -> None:
        kept.append(simulated)

    transcript = io.StringIO()  # what the console shows, as `fedsynth simulate` runs it
    with contextlib.redirect_stderr(transcript), run_console(root / "out"):
        report = run_pipeline(files, root / "data" / "schema.yaml", root / "out", TINY,
                              generator="vae", epsilon_tabular=8.0, seed=4, inspect=keep,
                              epsilon_text=5.0)
    (root / "transcript.txt").write_text(transcript.getvalue())
    return root, files, report, kept[0]


def test_the_console_shows_one_line_per_phase_and_the_log_keeps_the_rest(run) -> None:
    root, _, report, _ = run
    lines = (root / "transcript.txt").read_text().splitlines()
    phases = list(report["run"]["phases"])
    assert phases[:2] == ["input check", "handshake"] and "narration" in phases
    assert {"stage 1-label_counts-tabular", "evaluation at the sites", "centralized baseline",
            "canary exposure", "simulation engine start/stop"} <= set(phases)
    for phase in phases:
        assert sum(line.strip().startswith(phase) for line in lines) == 1, (phase, lines)
    assert len(lines) <= 20, lines
    for noise in ("DEBUG", "DEPRECATED", "Warning", "Traceback"):
        assert noise not in "\n".join(lines), noise
    log = (root / "out" / "logs" / "run.log").read_text()
    assert " DEBUG flwr: " in log and " INFO fedsynth.server: handshake " in log
    assert "DEPRECATED FEATURE: The `run_simulation`" not in log  # the one record filtered
    assert any((root / "out" / "logs" / "sites").glob("worker-*.err"))


def test_outputs_and_report(run) -> None:
    root, files, report, simulated = run
    out = root / "out"
    for name in ("synthetic.csv", "synthetic.parquet", "report.json", "model/tabular.json"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint").exists()
    saved = json.loads((out / "report.json").read_text())
    assert saved["run"]["sites"] == sorted(files) and saved["run"]["rounds"] == 3
    # what the sites scored is what was published: the announced hash is the file's
    published = hashlib.sha256((out / "synthetic.parquet").read_bytes()).hexdigest()
    assert saved["release"] == {"sha256": published, "records": TINY.synthetic_records}
    assert set(simulated.local_only) == set(files)
    for frame in (simulated.synthetic, simulated.centralized, *simulated.local_only.values()):
        assert len(frame) == TINY.synthetic_records
    for site in files:
        ledger = json.loads((out / "privacy" / f"{site}.json").read_text())
        federated = [e for e in ledger if e["model"] == "tabular-vae"]
        local = [e for e in ledger if e["model"] == "tabular-vae-local"]
        assert [e["round"] for e in federated] == [None, 1, 2, 3]
        assert [e["steps"] for e in local] == [1, TINY.rounds * TINY.local_steps]
        assert {e["run"] for e in ledger} == {"sim"}
        spent = saved["privacy"]["per_site"][site]
        assert 0 < spent["epsilon_tabular"] <= 8.0 + 1e-9
        assert spent["epsilon_tabular"] == pytest.approx(federated[-1]["epsilon_after"], abs=1e-4)
        assert 0 < spent["epsilon_tabular_local_only"] <= 8.0 + 1e-9
        assert spent["epsilon_tabular_local_only"] == pytest.approx(local[-1]["epsilon_after"], abs=1e-4)
        composed = epsilon_from_ledger([LedgerEntry(**e) for e in ledger], ledger[0]["delta"])
        assert spent["epsilon_total"] == pytest.approx(composed, abs=1e-4)
        assert spent["epsilon_lifetime"] == spent["epsilon_total"]  # a fresh site: this run only
        assert spent["epsilon_lifetime"] <= spent["epsilon_cap"]


def test_narratives_their_adapter_budget_and_text_metrics(run) -> None:
    """The narrative stage ran federated (train.lora at every site, in its ledger, within its text
    budget), its adapter is in model/ (peft format), the first narrated_records released records
    have narratives, and every site scored them: text metrics, canary exposure at the site whose
    narratives carried the canaries (the first), null elsewhere."""
    root, files, report, simulated = run
    out = root / "out"
    assert (out / "model" / "adapter" / "adapter_config.json").exists()
    assert (out / "model" / "narrative.json").exists()
    narratives = simulated.synthetic["narrative"]
    assert narratives.iloc[:TINY.narrated_records].notna().all()
    assert narratives.iloc[TINY.narrated_records:].isna().all()
    canary_site = sorted(files)[0]
    for site in files:
        ledger = json.loads((out / "privacy" / f"{site}.json").read_text())
        text = [e for e in ledger if e["model"] == "text-lora"]
        assert [e["round"] for e in text] == [1, 2]
        spent = report["privacy"]["per_site"][site]
        assert spent["epsilon_text"] == pytest.approx(text[-1]["epsilon_after"], abs=1e-4)
        assert 0 < spent["epsilon_text"] <= 5.0
        metrics = report["sites"][site]["text"]
        assert set(metrics) == TEXT_KEYS
        assert 0 <= metrics["consistency_accuracy"] <= 1 and 0 < metrics["real_consistency_accuracy"] <= 1
        assert (metrics["canary_exposure_bits"] is not None) == (site == canary_site)
    assert 0 <= report["sites"][canary_site]["text"]["canary_exposure_bits"] <= 6.0
    # the local-only and centralized baselines are tabular: no narratives, no text figures
    assert all(m["text"] is None for m in report["baselines"]["local_only"].values())


def test_federated_model_learned(run) -> None:
    root, files, _, _ = run
    schema = Schema.load(root / "data" / "schema.yaml")
    real = pd.concat([load_site_data(p, schema) for p in files.values()], ignore_index=True)
    synthetic = pd.read_csv(root / "out" / "synthetic.csv")
    untrained = TabularSynthesizer(schema, kind="vae", epsilon=None, config=TINY.tabular_config,
                                   seed=4).sample(600, seed=4)
    trained_gap = _categorical_gap(synthetic, real, schema)
    untrained_gap = _categorical_gap(untrained, real, schema)
    assert trained_gap < 0.6 * untrained_gap, (trained_gap, untrained_gap)


def _quality(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema) -> float:
    """sdmetrics' overall quality score: the mean of Column Shapes and Column Pair Trends."""
    scores = quality_scores(real, synthetic, schema)
    return (scores["column_shapes"] + scores["column_pair_trends"]) / 2


def test_federated_model_beats_untrained_and_the_worst_local_only_model(run) -> None:
    """Scored on the sites' test splits pooled (records no model trained on) with sdmetrics'
    overall quality score, the mean of Column Shapes and Column Pair Trends. What a site gains by
    federating is the other hospitals' case mixes, and DP noise averaged over three sites'
    updates: a local-only model reproduces its own hospital, so on the pooled population its
    columns and pairs are off, most for the hospital least like the others (the urban trauma
    centre). At these settings the federated model scored 0.74-0.75, the worst local-only model
    0.72-0.73 and the untrained one 0.51 (five runs, DP noise unseeded). It can fail: at 800
    records per site, where each local model has data enough to learn its own pairs well, the
    federated one fell below every local-only model on pair trends. Column Shapes alone would
    reward marginals only (BRIEF), and the detection AUC is 0.92-0.97 for every DP model here:
    it does not separate them."""
    root, files, _, simulated = run
    schema = simulated.schema
    test = pooled_split(files, schema, seed=4, part="test")
    untrained = TabularSynthesizer(schema, kind="vae", epsilon=None, config=TINY.tabular_config,
                                   seed=4).sample(TINY.synthetic_records, seed=4)
    federated = _quality(test, simulated.synthetic, schema)
    local = {site: _quality(test, frame, schema) for site, frame in simulated.local_only.items()}
    assert federated > _quality(test, untrained, schema), federated
    assert federated > min(local.values()), (federated, local)


METRIC_KEYS = {"n_train", "n_test", "fidelity", "utility", "privacy", "text"}


def test_report_compares_federated_local_only_and_centralized_at_every_site(run) -> None:
    """Every figure was computed at a site against its own held-out split (CONTRACT report.json)."""
    root, files, report, _ = run
    assert set(report) >= {"run", "privacy", "sites", "baselines", "summary", "plots"}
    assert set(report["sites"]) == set(files)
    assert set(report["baselines"]["local_only"]) == set(files)
    assert set(report["baselines"]["centralized"]) == set(files)
    for variant in ("federated", "local_only", "centralized", "independent_marginals", "real_train"):
        summary = report["summary"][variant]
        assert set(summary) >= METRIC_KEYS, variant
        assert set(summary["fidelity"]) == {"column_shapes", "column_pair_trends", "detection_auc",
                                            "wasserstein_mean"}
        assert set(summary["privacy"]) == {"exact_copies", "dcr_overfitting_protection", "mia_auc"}
        assert 0 <= summary["fidelity"]["column_pair_trends"] <= 1
    for site, metrics in report["sites"].items():
        split = stratified_split(load_site_data(files[site], Schema.load(root / "data" / "schema.yaml")),
                                 "mechanism", 4)
        # sizes leave a site rounded to ten, small counts as "<10" (CONTRACT, small numbers)
        assert (metrics["n_train"], metrics["n_test"]) == (rounded(len(split["train"])),
                                                           rounded(len(split["test"])))
        assert metrics["privacy"]["exact_copies"] == "<10"
        assert report["privacy"]["per_site"][site]["epsilon_tabular_local_only"] <= 8.0 + 1e-9
    assert report["summary"]["federated"]["n_test"] == sum(m["n_test"] for m in report["sites"].values())
    # the yardsticks every site scores beside the release: the ceiling beats the no-structure
    # baseline on pair trends (by 0.02-0.06 on these 150-record test splits), and the ceiling's
    # privacy figures are null (they would describe the train split itself)
    ceiling, marginals = report["summary"]["real_train"], report["summary"]["independent_marginals"]
    assert ceiling["fidelity"]["column_pair_trends"] > marginals["fidelity"]["column_pair_trends"]
    assert set(ceiling["privacy"].values()) == {None}
    # the text floor (the warm start alone, no private data) is scored at every site, text only
    floor = report["baselines"]["text_floor"]
    assert set(floor) == set(files) and all(set(m["text"]) == TEXT_KEYS for m in floor.values())
    assert all(m["fidelity"] is None for m in floor.values())
    assert 0 < report["run"]["duration_s"] < 3600
    lines = summary_lines(report)  # what `fedsynth demo` prints
    assert len(lines) == 8 and lines[6].startswith("narratives: gate pass") and "floor" in lines[6]
    assert lines[1].startswith("federated") and lines[3].startswith("centralized")
    assert lines[4].startswith("marginals") and lines[5].startswith("real train")
    federated = {p["epsilon_tabular"] for p in report["privacy"]["per_site"].values()}
    assert f"federated model {min(federated):.2f}" in lines[-1]
    assert f"narrative model {min(p['epsilon_text'] for p in report['privacy']['per_site'].values()):.2f}" \
        in lines[-1]
    text = report["summary"]["federated"]["text"]
    assert lines[1].endswith(f"{text['consistency_accuracy']:.3f}/{text['real_consistency_accuracy']:.3f}")
    assert lines[2].endswith(" -")  # the local-only baseline writes no narratives


def test_no_real_narrative_is_published(run) -> None:
    root, files, _, _ = run
    published = "".join((root / "out" / name).read_text()
                        for name in ("report.json", "report.html", "synthetic.csv"))
    schema = Schema.load(root / "data" / "schema.yaml")
    notes = pd.concat([load_site_data(p, schema) for p in files.values()])["narrative"].dropna()
    long_notes = [n for n in notes if len(n) >= 30]
    assert long_notes and not [n for n in long_notes if n in published]


def test_report_page_renders_its_plots_in_chromium(run, tmp_path) -> None:
    """Headless Chromium loads report.html (no network), draws it, and the drawn page has the
    report's sections and SVG figures."""
    root, files, _, _ = run
    page = root / "out" / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") >= 3 and all(site in dom for site in files)
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = shot.read_bytes()
    assert pixels[:8] == b"\x89PNG\r\n\x1a\n" and len(pixels) > 20_000  # a blank page is ~5 kB


def test_simulate_rejects_bad_data_and_writes_nothing(tmp_path) -> None:
    paths = write_sim_data(tmp_path / "data", 2, 40, seed=1)
    bad = paths[0]
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].replace(",M,", ",X,", 1).replace(",F,", ",X,", 1)
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    res = fedsynth("simulate", "--data", str(tmp_path / "data"), "--schema",
                   str(tmp_path / "data" / "schema.yaml"), "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "row 3, column 'sex', value 'X'" in res.stderr
    assert not out.exists()
    assert f"(log: {tmp_path / 'out-failed.log'})" in res.stderr  # kept beside, for the record


def test_simulate_needs_a_site_column_for_one_file(tmp_path) -> None:
    paths = write_sim_data(tmp_path / "data", 1, 40, seed=1)
    res = fedsynth("simulate", "--data", str(paths[0]), "--schema", str(paths[1]),
                   "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "--site-column" in res.stderr
