"""The researcher's pipeline on Flower's Simulation Engine: 3 simulated sites, tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.data import load_site_data
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from simulation.hospitals import write_sim_data
from simulation.pipeline import run_pipeline
from simulation.profiles import RunProfile
from tests.test_cli import fedsynth

pytestmark = pytest.mark.integration
TINY = RunProfile("quick", sites=3, records_per_site=300, rounds=3, local_steps=100,
                  synthetic_records=600,
                  tabular_config={"batch_size": 64, "lr": 3e-3,
                                  "model": {"hidden": [64, 64], "latent_dim": 8}})


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
    report = run_pipeline(files, root / "data" / "schema.yaml", root / "out", TINY,
                          epsilon_tabular=8.0, seed=4)
    return root, files, report


def test_outputs_and_report(run) -> None:
    root, files, report = run
    out = root / "out"
    for name in ("synthetic.csv", "synthetic.parquet", "report.json", "model/tabular.json"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint").exists()
    saved = json.loads((out / "report.json").read_text())
    assert saved["run"]["sites"] == sorted(files) and saved["run"]["rounds"] == 3
    for site in files:
        ledger = json.loads((out / "privacy" / f"{site}.json").read_text())
        assert [e["round"] for e in ledger] == [None, 1, 2, 3]
        spent = saved["privacy"]["per_site"][site]["epsilon_tabular"]
        assert 0 < spent <= 8.0 + 1e-9 and spent == ledger[-1]["epsilon_after"]


def test_federated_model_learned(run) -> None:
    root, files, _ = run
    schema = Schema.load(root / "data" / "schema.yaml")
    real = pd.concat([load_site_data(p, schema) for p in files.values()], ignore_index=True)
    synthetic = pd.read_csv(root / "out" / "synthetic.csv")
    untrained = TabularSynthesizer(schema, kind="vae", epsilon=None, config=TINY.tabular_config,
                                   seed=4).sample(600, seed=4)
    trained_gap = _categorical_gap(synthetic, real, schema)
    untrained_gap = _categorical_gap(untrained, real, schema)
    assert trained_gap < 0.6 * untrained_gap, (trained_gap, untrained_gap)


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


def test_simulate_needs_a_site_column_for_one_file(tmp_path) -> None:
    paths = write_sim_data(tmp_path / "data", 1, 40, seed=1)
    res = fedsynth("simulate", "--data", str(paths[0]), "--schema", str(paths[1]),
                   "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "--site-column" in res.stderr
