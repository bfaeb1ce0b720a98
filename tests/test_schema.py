from __future__ import annotations

import copy

import pytest
import yaml

from common.errors import SchemaError
from common.schema import Schema
from tests.conftest import SMALL_SCHEMA


def _variant(edit) -> dict:
    data = yaml.safe_load(SMALL_SCHEMA)
    edit(data)
    return data


def test_roles_and_lookups(schema: Schema) -> None:
    assert schema.label.name == "mechanism"
    assert schema.narrative.name == "note"
    assert [c.name for c in schema.modeled_columns] == ["age", "sbp", "temp", "sex", "alcohol",
                                                         "seen", "mechanism"]
    assert schema.output_columns[-1] == "note"
    assert schema["mechanism"].synonyms == {"fall": ("fell", "GLF")}


def test_hash_ignores_formatting_and_descriptions_but_not_content(schema: Schema) -> None:
    data = yaml.safe_load(SMALL_SCHEMA)
    data["description"] = "some prose"
    data["columns"][1]["description"] = "years"
    assert Schema.from_dict(data).hash == schema.hash
    assert Schema.from_dict(yaml.safe_load(schema.to_yaml())).hash == schema.hash
    changed = copy.deepcopy(data)
    changed["columns"][1]["max"] = 110
    assert Schema.from_dict(changed).hash != schema.hash


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["columns"][1].pop("max"), ["age", "'max'", "public"]),
    (lambda d: d["columns"][1].update(type="number"), ["age", "'type'", "integer"]),
    (lambda d: d["columns"][4].update(categories=[True, False]), ["sex", "quote"]),
    (lambda d: d["columns"][7].update(role="feature"), ["exactly one", "label"]),
    (lambda d: d["columns"].append(dict(d["columns"][1])), ["duplicate", "age"]),
    (lambda d: d["columns"][7].update(nullable=True), ["label", "nullable"]),
    (lambda d: d["columns"][2].update(min=300), ["sbp", "below"]),
    (lambda d: d["columns"][1].update(colour="red"), ["age", "unknown key", "colour"]),
    (lambda d: d["columns"][6].update(min="yesterday"), ["seen", "ISO"]),
    (lambda d: d["columns"][7]["synonyms"].update(drowning=["water"]), ["unknown categories"]),
    (lambda d: d["columns"][8].update(role="feature"), ["note", "text column"]),
])
def test_schema_errors_name_the_column_and_fix(edit, words) -> None:
    with pytest.raises(SchemaError) as err:
        Schema.from_dict(_variant(edit), source="s.yaml")
    message = str(err.value)
    assert message.startswith("s.yaml")
    for word in words:
        assert word in message


def test_load_reports_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(SchemaError, match="not found"):
        Schema.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: [\n")
    with pytest.raises(SchemaError, match="not valid YAML"):
        Schema.load(bad)
