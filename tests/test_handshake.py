"""The ClientApp's handshake handler, called directly with Flower Messages."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, RecordDict

from client.client_app import app
from common.run_plan import RunPlan
from common.schema import Schema
from common.stages.base import Payload
from common.version import __version__
from tests.conftest import GOOD_ROWS, write_csv
from tests.flower_helpers import ask

PLAN = RunPlan.standard(run="r", seed=0, kind="vae", rounds=1, local_steps=1, tabular_config={})


def _call(node_config: dict, schema_hash: str, version: str = __version__) -> dict:
    """The handshake's verdict: the reply's values, or its error."""
    ctx = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    offer = Payload(values={"schema_hash": schema_hash, "version": version, "plan": PLAN.to_json()})
    reply = ask(app, ctx, "query.handshake", offer)
    if reply.has_error():
        return {"accepted": False, "reason": reply.error.reason}
    from server.messaging import payload_of

    return {"accepted": True, **payload_of(reply).values}


def _node_config(tmp_path: Path, data: Path, schema_path: Path, **extra) -> dict:
    return {"site-name": "north", "data-path": str(data), "schema-path": str(schema_path),
            "state-dir": str(tmp_path / "state"), **extra}


def test_matching_site_is_accepted(tmp_path, schema_path, good_csv, schema: Schema) -> None:
    answer = _call(_node_config(tmp_path, good_csv, schema_path), schema.hash)
    assert answer == {"accepted": True, "site": "north", "version": __version__}


def test_schema_mismatch_is_refused_with_reason(tmp_path, schema_path, good_csv) -> None:
    answer = _call(_node_config(tmp_path, good_csv, schema_path), "0" * 64)
    assert not answer["accepted"] and "schema mismatch" in answer["reason"]
    assert answer["reason"].startswith("site north: ")


def test_version_mismatch_is_refused(tmp_path, schema_path, good_csv, schema) -> None:
    answer = _call(_node_config(tmp_path, good_csv, schema_path), schema.hash, version="9.9.0")
    assert not answer["accepted"] and "version mismatch" in answer["reason"]


def test_bad_data_is_a_refusal_not_a_crash(tmp_path, schema_path, schema) -> None:
    bad = write_csv(tmp_path / "bad.csv", GOOD_ROWS + ["b1,300,120,36.8,M,false,2021-03-04,fall,x"])
    answer = _call(_node_config(tmp_path, bad, schema_path), schema.hash)
    assert not answer["accepted"] and "failed validation" in answer["reason"]
    # Cell values are patient data: the reply names the fact, never the rows or values.
    assert "300" not in answer["reason"] and "row 4" not in answer["reason"]


def test_site_can_ask_to_be_excluded(tmp_path, schema_path, good_csv, schema) -> None:
    answer = _call(_node_config(tmp_path, good_csv, schema_path, exclude=True), schema.hash)
    assert not answer["accepted"] and "excluded" in answer["reason"]


def test_missing_node_config_is_a_refusal(schema) -> None:
    answer = _call({}, schema.hash)
    assert not answer["accepted"] and "could not take part" in answer["reason"]


def test_a_site_process_parses_its_file_once_and_again_when_it_changes(tmp_path, schema_path,
                                                                       monkeypatch) -> None:
    import common.stages.site as site
    from common.site_config import SiteConfig

    parsed = []
    real_load = site.load_site_data
    monkeypatch.setattr(site, "load_site_data", lambda *a, **k: parsed.append(1) or real_load(*a, **k))
    data = write_csv(tmp_path / "north.csv", GOOD_ROWS)
    config = SiteConfig(name="north", data_path=data, schema_path=schema_path,
                        state_dir=tmp_path / "state")
    first = site.SiteRun(config, PLAN).data
    again = site.SiteRun(config, PLAN).data
    assert len(parsed) == 1 and first.equals(again) and first is not again
    write_csv(data, GOOD_ROWS[:-1])  # the site's file is replaced: read again
    assert len(site.SiteRun(config, PLAN).data) == len(first) - 1 and len(parsed) == 2
