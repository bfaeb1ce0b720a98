"""The NEISS bring-your-own-data example: the data copy, the derived mechanism label, the schema.

The example is only useful if it is exactly the published sample, if its label can be rebuilt
byte for byte by the documented rules, and if the shipped schema accepts the file (and rejects a
bad row with its row and column). Each test checks one of those promises or a claim the README
makes about the data.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from common.data import validate_file
from common.schema import Schema
from fedsynth.cli import main as cli_main
from simulation.ed_schema import MECHANISMS as SIMULATOR_MECHANISMS

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "neiss"
SAMPLE = EXAMPLE / "neiss_sample_1k.csv"
DERIVED = EXAMPLE / "neiss_1k.csv"
SCHEMA = EXAMPLE / "schema.yaml"
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "neiss_sample_1k.csv"

# LLM mechanism strings (lower-cased) that name a fall, a cut, a blow; measured agreement of the
# rules with these groups on this sample: 95.2 %, 91.2 %, 90.2 % (README). The floors leave room
# for rule edits but fail if the rules stop recognising the common cases.
LLM_GROUPS = {
    "fall": (r"fell|fall|trip|slip", 0.90),
    "cut_pierce": (r"\bcut|lacerat|slic|stab|punctur", 0.85),
    "struck_by_against": (r"\bhit|struck|punch|kick|collid|bump|slam|jamm|tackl", 0.85),
}


@pytest.fixture(scope="module")
def rules() -> ModuleType:
    """derive_mechanism.py, imported from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("neiss_derive_mechanism",
                                                  EXAMPLE / "derive_mechanism.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def derived() -> pd.DataFrame:
    return pd.read_csv(DERIVED, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load(SCHEMA)


def test_sample_is_the_published_file() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    recorded = re.search(r"neiss_sample_1k\.csv.*?sha256 `([0-9a-f]{64})`", readme, re.S)
    assert recorded, "README.md must record the sample's sha256"
    data = SAMPLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == recorded.group(1)
    if SHARED_SAMPLE.exists():  # the shared design folder is beside the checkout in development
        assert data == SHARED_SAMPLE.read_bytes()


def test_derivation_is_reproducible(rules: ModuleType, tmp_path: Path) -> None:
    rebuilt = tmp_path / "neiss_1k.csv"
    counts = rules.derive(SAMPLE, rebuilt)
    assert rebuilt.read_bytes() == DERIVED.read_bytes()
    assert sum(counts.values()) == 1000
    assert list(counts) == list(rules.MECHANISMS)


def test_derived_file_keeps_every_original_cell() -> None:
    with SAMPLE.open(newline="", encoding="utf-8") as fh:
        original = list(csv.reader(fh))
    with DERIVED.open(newline="", encoding="utf-8") as fh:
        derived_rows = list(csv.reader(fh))
    assert derived_rows[0] == original[0] + ["mechanism", "mechanism_rule"]
    assert len(derived_rows) == len(original) == 1001
    assert [row[:-2] for row in derived_rows] == original


def test_schema_accepts_the_example(schema: Schema, capsys: pytest.CaptureFixture[str]) -> None:
    result = validate_file(DERIVED, schema)
    assert result.ok, result.summary()
    assert result.problems == [] and result.notes == []  # every column is declared
    assert (schema.label.name, schema.site.name, schema.narrative.name) == (
        "mechanism", "Stratum", "Narrative")
    assert schema["CPSC_Case_Number"].role == "identifier"
    assert cli_main(["validate", "--schema", str(SCHEMA), str(DERIVED)]) == 0
    assert "valid" in capsys.readouterr().out


def test_labels_are_the_simulator_classes(rules: ModuleType, schema: Schema,
                                          derived: pd.DataFrame) -> None:
    assert tuple(rules.MECHANISMS) == tuple(SIMULATOR_MECHANISMS) == schema.label.categories
    assert set(derived["mechanism"]) <= set(rules.MECHANISMS)
    assert set(schema.label.synonyms) == set(rules.MECHANISMS)
    # The audit trail is consistent: each row's rule id exists and gives that row's label.
    by_id = {rule.rule_id: rule.mechanism for rule in rules.RULES}
    by_id[rules.FALLBACK_RULE] = "other"
    assert len(by_id) == len(rules.RULES) + 1, "rule ids must be unique"
    assert [by_id[r] for r in derived["mechanism_rule"]] == derived["mechanism"].tolist()


@pytest.mark.parametrize(("narrative", "products", "expected"), [
    ("45YOF SLIPPED ON ICE AND FELL DX WRIST FX", [], "fall"),
    ("DOG BIT HAND", [], "bite_sting"),
    ("79YOF WALKING DOG TRIPPED OVER LEASH FELL DX HIP FX", ["PET SUPPLIES"], "fall"),
    ("75YOF FELL ASLEEP IN RECLINER WOKE WITH NECK PAIN", [], "other"),
    ("3YOF SWALLOWED A COIN DX FB", ["COINS"], "other"),
    ("8YOM FELL OFF BICYCLE DX FOREARM FX", [], "pedal_cyclist"),
    ("5YOM CRUSH INJURY FINGER WHEN TV FELL ON PATIENT", ["TELEVISIONS"], "struck_by_against"),
    ("12YOM PUNCHED A WALL DX HAND FX", [], "struck_by_against"),
    ("34YOF CUT FINGER WITH KNIFE WHILE COOKING DX LAC", [], "cut_pierce"),
    ("36YOF KNIFE SLIPPED AND CUT HAND DX LAC", [], "cut_pierce"),
    ("60YOM LIFTING HEAVY BOX FELT POP IN BACK DX LUMBAR STRAIN", [], "overexertion"),
    ("23MOM SPILLED HOT WATER ON CHEST DX SCALD BURN", ["HOT WATER"], "fire_burn"),
    ("30YOM MVC RESTRAINED DRIVER DX NECK STRAIN", [], "motor_vehicle_occupant"),
    ("19YOM MOTORCYCLE CRASH DX CLAVICLE FX", [], "motorcyclist"),
    ("8YOM STRUCK BY A CAR WHILE CROSSING THE STREET", [], "pedestrian"),
    ("16YOM GSW TO LEFT THIGH", [], "firearm"),
    ("3YOF FOUND FACE DOWN IN POOL NEAR DROWNING", [], "drowning"),
    ("64YOM USING A TABLE SAW AND CAUGHT FINGER DX AMPUTATION", [], "machinery"),
    ("PT INJURED HAND AT HOME", ["KNIVES, NOT ELSEWHERE CLASSIFIED"], "cut_pierce"),
    ("44YOF HURT KNEE DX KNEE PAIN", ["STAIRS OR STEPS"], "fall"),
])
def test_rules_on_hand_written_narratives(rules: ModuleType, narrative: str, products: list[str],
                                          expected: str) -> None:
    mechanism, rule_id = rules.classify(narrative, products)
    assert mechanism == expected, rule_id


def test_first_matching_rule_wins(rules: ModuleType) -> None:
    # A fall rule and a blow rule both match; falls come first, and the id says which fired.
    assert rules.classify("2YOM FELL AND HIT HEAD ON TABLE DX LAC", []) == ("fall", "fall.narrative")
    assert rules.classify("no mechanism words at all", []) == ("other", rules.FALLBACK_RULE)


@pytest.mark.parametrize("mechanism", list(LLM_GROUPS))
def test_rules_agree_with_the_llm_column(derived: pd.DataFrame, mechanism: str) -> None:
    """Agreement with another non-gold labeller: a sanity floor, not an accuracy claim."""
    pattern, floor = LLM_GROUPS[mechanism]
    said = derived["injury_mechanism"].str.lower().str.contains(pattern, regex=True)
    assert said.sum() >= 50
    agreement = (derived.loc[said, "mechanism"] == mechanism).mean()
    assert agreement >= floor, f"{mechanism}: {agreement:.3f} < {floor}"


def test_documented_quirks_hold(derived: pd.DataFrame) -> None:
    dates = pd.to_datetime(derived["Treatment_Date"])
    assert (dates.dt.year.astype(str) == derived["Year"]).all()
    assert (dates.dt.month.astype(str) == derived["Month"]).all()
    assert (dates.dt.day.astype(str) == derived["Day"]).all()
    no_second = derived["Diagnosis_2"] == ""
    assert ((derived["Body_Part_2"] == "INTERNAL") == no_second).all()
    assert no_second.sum() == 894
    assert derived.loc[derived["Age"] == "0.0", "CPSC_Case_Number"].tolist() == ["210342205"]
    assert derived["Stratum"].value_counts().to_dict() == {"V": 401, "C": 196, "L": 150,
                                                           "M": 128, "S": 125}


def test_bad_row_is_named(schema: Schema, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(DERIVED, dtype=str, keep_default_na=False)
    frame.loc[2, "Age"] = "300"  # data row 3
    frame.loc[2, "Sex"] = "M"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    result = validate_file(bad, schema)
    assert not result.ok
    found = {(p.row, p.column, p.kind) for p in result.problems}
    assert found == {(3, "Age", "out_of_bounds"), (3, "Sex", "unknown_category")}
    assert cli_main(["validate", "--schema", str(SCHEMA), str(bad)]) == 2
    report = capsys.readouterr().err
    assert "row 3, column 'Age', value '300'" in report
    assert "row 3, column 'Sex', value 'M'" in report
