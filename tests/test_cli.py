"""The command line as a user runs it: exit codes, messages on stderr, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import GOOD_ROWS, write_csv


def fedsynth(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedsynth", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_validate_ok_and_bad(tmp_path: Path, schema_path: Path, good_csv: Path) -> None:
    ok = fedsynth("validate", "--schema", str(schema_path), str(good_csv))
    assert ok.returncode == 0, ok.stderr
    assert "valid (3 rows" in ok.stdout
    bad = write_csv(tmp_path / "bad.csv", GOOD_ROWS + ["b1,300,120,36.8,Q,false,2021-03-04,fall,x"])
    res = fedsynth("validate", "--schema", str(schema_path), str(bad))
    assert res.returncode == 2
    assert "row 4, column 'age', value '300'" in res.stderr
    assert "row 4, column 'sex', value 'Q'" in res.stderr
    assert "Traceback" not in res.stderr


def test_input_errors_exit_2_with_one_paragraph(tmp_path: Path, schema_path: Path) -> None:
    for args in (["validate", "--schema", str(tmp_path / "none.yaml"), "x.csv"],
                 ["validate", "--schema", str(schema_path), str(tmp_path / "none.csv")]):
        res = fedsynth(*args)
        assert res.returncode == 2
        assert "Traceback" not in res.stderr
        assert "not found" in res.stderr
        assert res.stderr.strip().count("\n") == 0


def test_schema_infer_proposes_a_loadable_schema(tmp_path: Path, good_csv: Path) -> None:
    res = fedsynth("schema", "infer", str(good_csv), "--label", "mechanism", "--text", "note")
    assert res.returncode == 0, res.stderr
    proposed = yaml.safe_load(res.stdout)
    by_name = {c["name"]: c for c in proposed["columns"]}
    assert by_name["age"]["type"] == "integer" and by_name["age"]["max"] == 100  # 7..81 widened
    assert by_name["temp"]["type"] == "float" and by_name["temp"].get("nullable")
    assert by_name["mechanism"]["role"] == "label"
    assert by_name["note"]["role"] == "narrative"
    assert by_name["alcohol"]["type"] == "boolean"
    assert by_name["seen"]["type"] == "datetime" and by_name["seen"]["min"] == "2020-01-01"
    assert "PUBLIC" in res.stderr and "age: bounds [0, 100]" in res.stderr
    assert by_name["case_id"]["role"] == "identifier"
    schema_file = tmp_path / "proposed.yaml"
    schema_file.write_text(res.stdout)
    check = fedsynth("validate", "--schema", str(schema_file), str(good_csv))
    assert check.returncode == 0, check.stderr


def test_schema_infer_needs_a_known_label(good_csv: Path) -> None:
    res = fedsynth("schema", "infer", str(good_csv), "--label", "nope")
    assert res.returncode == 2 and "'nope'" in res.stderr and "Traceback" not in res.stderr


def test_bad_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    res = fedsynth("sim-data", "--sites", "0", "--records-per-site", "10", "--out", str(tmp_path))
    assert res.returncode == 2 and "at least 1" in res.stderr


def test_text_flags_reach_the_pipeline(monkeypatch, tmp_path: Path) -> None:
    """simulate's --no-text, --epsilon-text and --text-model (and demo's --no-text) are handed to
    the pipeline as given; a non-positive text budget is a usage error."""
    from fedsynth import cli

    calls: list[dict] = []
    report = {"run": {"profile": "quick", "generator": "vae", "sites": [], "rounds": 1,
                      "duration_s": 1.0}}
    monkeypatch.setattr("simulation.pipeline.run_pipeline",
                        lambda *args, **kwargs: calls.append(kwargs) or report)
    monkeypatch.setattr("simulation.inputs.site_files_from", lambda *args: {})
    monkeypatch.setattr("simulation.demo.run_demo", lambda **kwargs: calls.append(kwargs) or report)
    monkeypatch.setattr(cli, "_print_run", lambda *args: None)
    base = ["simulate", "--data", str(tmp_path), "--schema", "s.yaml"]
    assert cli.main([*base, "--epsilon-text", "1.5", "--text-model", "local:/models/medgemma"]) == 0
    assert cli.main([*base, "--no-text"]) == 0
    assert cli.main(["demo", "--no-text", "--out", str(tmp_path / "d")]) == 0
    assert (calls[0]["text"], calls[0]["epsilon_text"], calls[0]["text_model"]) == \
        (True, 1.5, "local:/models/medgemma")
    assert calls[1]["text"] is False and calls[2]["text"] is False
    res = fedsynth(*base, "--epsilon-text", "0")
    assert res.returncode == 2 and "must be above 0" in res.stderr
    from common.text.public_corpus import DEFAULT_CORPUS

    assert calls[0]["public_corpus"] == DEFAULT_CORPUS  # the NEISS warm start by default
    assert cli.main([*base, "--public-corpus", "none"]) == 0 and calls[-1]["public_corpus"] is None
    schema = tmp_path / "public.yaml"
    schema.write_text("name: p\n", encoding="utf-8")
    assert cli.main([*base, "--public-corpus", str(schema), "--public-schema", str(schema)]) == 0
    assert calls[-1]["public_schema"] == schema
    res = fedsynth(*base, "--public-corpus", "notes.csv")
    assert res.returncode == 2 and "--public-schema" in res.stderr and "Traceback" not in res.stderr


def test_ledger_show_prints_a_sites_spends_and_refuses_a_folder_without_one(tmp_path, sites) -> None:
    """``fedsynth ledger show``: what a site released (run, model, epsilon), what it refused, the
    lifetime total and what is left; a state folder with no account is bad input (exit 2)."""
    from dataclasses import replace

    from common.run_plan import RunPlan
    from common.site_actions import SITE_ACTIONS
    from common.stages.base import Payload

    site = replace(sites[1][1], epsilon_total=6.0)
    plan = RunPlan.standard(run="spring", seed=1, kind="vae", rounds=1, local_steps=2,
                            tabular_config={"batch_size": 32, "model": {"hidden": [16]}})
    SITE_ACTIONS["query.label_counts"](site, Payload(values={"plan": plan.to_json(), "stage": 0}))
    shown = fedsynth("ledger", "show", "--state-dir", str(site.state_dir))
    assert shown.returncode == 0, shown.stderr
    assert "spring" in shown.stdout and "tabular-vae" in shown.stdout
    assert "cap epsilon-total 6" in shown.stdout and "left" in shown.stdout
    empty = fedsynth("ledger", "show", "--state-dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no privacy account" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_a_run_that_fails_says_what_in_one_paragraph_and_keeps_its_log(tmp_path: Path, capsys) -> None:
    import logging

    from fedsynth.console import RunFailed, run_console

    out = tmp_path / "out"
    with pytest.raises(RunFailed) as failed, run_console(out):
        logging.getLogger("flwr").debug("a library's detail")
        logging.getLogger("fedsynth.server").info("handshake done")
        raise RuntimeError("the SuperLink went away")
    log = tmp_path / "out-failed.log"
    assert "RuntimeError: the SuperLink went away" in str(failed.value) and str(log) in str(failed.value)
    assert not out.exists()
    text = log.read_text()
    assert "a library's detail" in text and "Traceback" in text and "handshake done" in text
    shown = capsys.readouterr().err
    assert "handshake done" in shown and "a library's detail" not in shown and "Traceback" not in shown
    assert logging.getLogger("fedsynth").handlers == []  # the console's routing is undone
