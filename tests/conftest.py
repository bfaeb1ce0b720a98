"""Shared fixtures: a small hand-written schema and a valid file for it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from common.schema import Schema

SMALL_SCHEMA = textwrap.dedent("""\
    name: small
    version: 1
    columns:
      - {name: case_id, type: text, role: identifier}
      - {name: age, type: integer, min: 0, max: 105}
      - {name: sbp, type: integer, min: 40, max: 250, nullable: true}
      - {name: temp, type: float, min: 32, max: 42, nullable: true}
      - {name: sex, type: categorical, categories: [F, M]}
      - {name: alcohol, type: boolean, nullable: true}
      - {name: seen, type: datetime, min: "2020-01-01", max: "2024-12-31"}
      - name: mechanism
        type: categorical
        role: label
        categories: [fall, cut_pierce, firearm]
        synonyms: {fall: [fell, GLF]}
      - {name: note, type: text, role: narrative}
    """)

GOOD_ROWS = [
    "case_id,age,sbp,temp,sex,alcohol,seen,mechanism,note",
    "a1,34,120,36.8,M,false,2021-03-04,fall,34YOM FELL",
    "a2,7,,37.2,F,,2022-11-30,cut_pierce,7YOF LAC",
    "a3,81,95,,F,true,2020-01-01,fall,81YOF GLF",
]


@pytest.fixture
def schema_path(tmp_path: Path) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(SMALL_SCHEMA)
    return path


@pytest.fixture
def schema(schema_path: Path) -> Schema:
    return Schema.load(schema_path)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "site.csv", GOOD_ROWS)


@pytest.fixture
def server_identity(monkeypatch):
    """Outside a live run Flower has no task identity; server-side code needs one to build messages."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


@pytest.fixture
def sites(tmp_path):
    """Three simulated hospitals (150 records each) as SiteConfigs by node id, and the schema."""
    from common.site_config import SiteConfig
    from simulation.hospitals import write_sim_data

    paths = write_sim_data(tmp_path / "data", 3, 150, seed=2)
    schema_path = tmp_path / "data" / "schema.yaml"
    configs = {i + 1: SiteConfig(name=p.stem, data_path=p, schema_path=schema_path,
                                 state_dir=tmp_path / "state" / p.stem, epsilon_tabular=4.0)
               for i, p in enumerate(q for q in paths if q.suffix == ".csv")}
    return schema_path, configs
