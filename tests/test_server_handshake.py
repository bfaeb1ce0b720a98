from __future__ import annotations

import logging

import pytest

from client.client_app import app as client_app
from common.run_plan import RunPlan
from server.handshake import QuorumError, run_handshake
from tests.conftest import GOOD_ROWS, write_csv
from tests.flower_helpers import InProcessGrid

PLAN = RunPlan.standard(run="r", seed=0, kind="vae", rounds=1, local_steps=1, tabular_config={})


@pytest.fixture
def grid(tmp_path, schema_path, good_csv, server_identity) -> InProcessGrid:
    other = tmp_path / "other.yaml"
    other.write_text(schema_path.read_text().replace("max: 105", "max: 110"))
    bad = write_csv(tmp_path / "bad.csv", GOOD_ROWS + ["b,300,120,36.8,M,false,2021-03-04,fall,x"])
    base = {"state-dir": str(tmp_path / "state")}
    return InProcessGrid(client_app, {
        1: {**base, "site-name": "north", "data-path": str(good_csv), "schema-path": str(schema_path)},
        2: {**base, "site-name": "south", "data-path": str(good_csv), "schema-path": str(other)},
        3: {**base, "site-name": "east", "data-path": str(bad), "schema-path": str(schema_path)},
    })


def test_only_compatible_sites_pass(grid, schema, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fedsynth.server"):
        accepted = run_handshake(grid, schema, PLAN, min_sites=1, timeout_s=5)
    assert accepted == {1: "north"}
    assert "south" in caplog.text and "schema mismatch" in caplog.text
    assert "east" in caplog.text and "failed validation" in caplog.text


def test_quorum_not_met_stops_cleanly(grid, schema) -> None:
    with pytest.raises(QuorumError, match="only 1 site"):
        run_handshake(grid, schema, PLAN, min_sites=2, timeout_s=1)
