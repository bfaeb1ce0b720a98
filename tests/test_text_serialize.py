"""The record serialisation that conditions the narrative model: it round-trips what it names."""

from __future__ import annotations

import pandas as pd
import pytest

from common.errors import InputError
from common.text.serialize import INSTRUCTION, RecordSerializer
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site


@pytest.fixture(scope="module")
def site() -> pd.DataFrame:
    return simulate_site("geriatric", 200, 3, "A")


def test_default_fields_are_the_label_then_the_features() -> None:
    schema = ed_trauma_schema(["A"])
    fields = RecordSerializer(schema).fields
    assert fields[0] == "mechanism"
    assert fields[1:] == [c.name for c in schema.columns if c.role == "feature"]
    assert not {"record_id", "hospital", "narrative"} & set(fields)


def test_round_trip_of_every_named_field(site: pd.DataFrame) -> None:
    serializer = RecordSerializer(ed_trauma_schema(["A"]))
    missing_seen = 0
    for record in site.to_dict("records"):
        prompt = serializer.prompt(record)
        assert prompt.startswith(INSTRUCTION + "\n")
        back = serializer.parse(prompt)
        for name in serializer.fields:
            value = record[name]
            if pd.isna(value):
                missing_seen += 1
                assert back[name] is None and f"{name.replace('_', ' ')}:" not in prompt
            else:
                assert back[name] == value, name
    assert missing_seen > 0  # nullable vitals, GCS, hospital stay


def test_prompt_reads_like_words_not_codes(site: pd.DataFrame) -> None:
    serializer = RecordSerializer(ed_trauma_schema(["A"]), ["mechanism", "body_region", "alcohol"])
    text = serializer.serialize({"mechanism": "motor_vehicle_occupant",
                                 "body_region": "upper_extremity", "alcohol": True})
    assert text == "mechanism: motor vehicle occupant\nbody region: upper extremity\nalcohol: yes"


def test_fields_must_be_modeled_columns() -> None:
    schema = ed_trauma_schema(["A"])
    for bad in (["hospital"], ["narrative"], ["no_such_column"]):
        with pytest.raises(InputError, match="narrative prompt field"):
            RecordSerializer(schema, bad)


def test_parse_refuses_what_it_did_not_write() -> None:
    serializer = RecordSerializer(ed_trauma_schema(["A"]), ["mechanism", "age"])
    with pytest.raises(ValueError, match="not a serialised field"):
        serializer.parse("mechanism: fall\nweight: 80")
    with pytest.raises(KeyError):
        serializer.parse("mechanism: parachute")
