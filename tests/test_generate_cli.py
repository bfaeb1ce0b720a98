"""``fedsynth generate`` on a saved model folder, as a researcher runs it."""

from __future__ import annotations

import pandas as pd
import pytest

from common.tabular.synthesizer import TabularSynthesizer
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site
from tests.test_cli import fedsynth


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    schema = ed_trauma_schema(["site-1"])
    frame = simulate_site("urban_trauma", 300, seed=1, site_name="site-1")
    synth = TabularSynthesizer(schema, kind="vae", epsilon=5.0,
                               config={"steps": 20, "batch_size": 64,
                                       "model": {"hidden": [32, 32], "latent_dim": 8}})
    synth.fit(frame)
    folder = tmp_path_factory.mktemp("run") / "model"
    synth.save(folder)
    return folder


def test_generate_csv_and_parquet(model_dir, tmp_path) -> None:
    for name in ("out.csv", "out.parquet"):
        res = fedsynth("generate", "--model", str(model_dir), "--n", "25", "--seed", "3",
                       "--no-text", "--out", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
    csv = pd.read_csv(tmp_path / "out.csv")
    parquet = pd.read_parquet(tmp_path / "out.parquet")
    assert len(csv) == len(parquet) == 25
    assert "mechanism" in csv.columns and "record_id" not in csv.columns
    assert csv["age"].between(0, 105).all()


def test_generate_conditioned_on_a_rare_mechanism(model_dir, tmp_path) -> None:
    out = tmp_path / "rare.csv"
    res = fedsynth("generate", "--model", str(model_dir), "--n", "40", "--condition",
                   "mechanism=drowning", "--no-text", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert set(pd.read_csv(out)["mechanism"]) == {"drowning"}


@pytest.mark.parametrize("args, words", [
    (["--condition", "mechanism=tsunami"], ["tsunami", "drowning"]),
    (["--condition", "colour=red"], ["colour"]),
    (["--condition", "mechanism"], ["COL=VALUE"]),
])
def test_bad_conditions_exit_2_and_write_nothing(model_dir, tmp_path, args, words) -> None:
    out = tmp_path / "x.csv"
    res = fedsynth("generate", "--model", str(model_dir), "--n", "5", *args, "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr
    assert not out.exists()


def test_missing_model_folder(tmp_path) -> None:
    res = fedsynth("generate", "--model", str(tmp_path / "nope"), "--n", "5", "--out",
                   str(tmp_path / "x.csv"))
    assert res.returncode == 2 and "model folder not found" in res.stderr
