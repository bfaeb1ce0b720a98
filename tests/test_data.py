from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from common.data import load_site_data, stratified_split, validate_file
from common.errors import DataError
from tests.conftest import GOOD_ROWS, write_csv


def test_good_file_is_typed(good_csv: Path, schema) -> None:
    result = validate_file(good_csv, schema)
    assert result.ok, result.summary()
    frame = result.frame
    assert str(frame["age"].dtype) == "Int64"
    assert frame["sbp"].isna().tolist() == [False, True, False]
    assert frame["temp"].dtype == "float64"
    assert isinstance(frame["sex"].dtype, pd.CategoricalDtype)
    assert list(frame["sex"].cat.categories) == ["F", "M"]
    assert frame["alcohol"].tolist()[0] is False or frame["alcohol"].tolist()[0] == False  # noqa: E712
    assert pd.isna(frame["alcohol"].iloc[1])
    assert frame["seen"].iloc[0] == pd.Timestamp("2021-03-04")


def test_parquet_reads_like_csv(good_csv: Path, schema, tmp_path: Path) -> None:
    pq = tmp_path / "site.parquet"
    pd.read_csv(good_csv, dtype=str).to_parquet(pq)
    csv_frame = validate_file(good_csv, schema).frame
    pq_result = validate_file(pq, schema)
    assert pq_result.ok, pq_result.summary()
    pd.testing.assert_frame_equal(pq_result.frame, csv_frame)


def test_planted_bad_rows_are_each_named(tmp_path: Path, schema) -> None:
    rows = GOOD_ROWS + [
        "b1,abc,120,36.8,M,false,2021-03-04,fall,x",      # row 4: wrong type
        "b2,300,120,36.8,M,false,2021-03-04,fall,x",      # row 5: out of bounds
        "b3,40,120,36.8,X,false,2021-03-04,fall,x",       # row 6: unknown category
        "b4,40,120,36.8,M,maybe,2021-03-04,drowning,x",   # row 7: bad boolean + unknown label
        "b5,,120,36.8,M,false,2019-05-05,fall,x",         # row 8: missing required + date bounds
        "b6,4.5,120,36.8,M,false,not-a-date,fall,x",      # row 9: not whole + bad date
    ]
    result = validate_file(write_csv(tmp_path / "bad.csv", rows), schema)
    assert not result.ok
    found = {(p.row, p.column, p.kind) for p in result.problems}
    assert found == {
        (4, "age", "wrong_type"), (5, "age", "out_of_bounds"), (6, "sex", "unknown_category"),
        (7, "alcohol", "wrong_type"), (7, "mechanism", "unknown_category"),
        (8, "age", "missing_value"), (8, "seen", "out_of_bounds"),
        (9, "age", "wrong_type"), (9, "seen", "wrong_type"),
    }
    assert result.bad_rows == [4, 5, 6, 7, 8, 9]
    text = result.summary()
    assert "row 5, column 'age', value '300'" in text and "[0, 105]" in text
    assert "Fix:" in text and str(tmp_path / "bad.csv") in text


def test_summary_lists_first_twenty_and_counts(tmp_path: Path, schema) -> None:
    rows = GOOD_ROWS[:1] + [f"c{i},999,120,36.8,M,false,2021-03-04,fall,x" for i in range(30)]
    result = validate_file(write_csv(tmp_path / "many.csv", rows), schema)
    text = result.summary()
    assert "30 problem(s) in 30 row(s) [30 out_of_bounds]" in text
    assert "... and 10 more." in text
    assert text.count("out_of_bounds") == 1 and text.count("outside the schema bounds") == 20


def test_file_level_problems(tmp_path: Path, schema) -> None:
    missing_col = write_csv(tmp_path / "m.csv", [r.rsplit(",", 1)[0] for r in GOOD_ROWS])
    result = validate_file(missing_col, schema)
    assert [(p.kind, p.column) for p in result.file_problems] == [("missing_column", "note")]
    empty = write_csv(tmp_path / "e.csv", GOOD_ROWS[:1])
    assert [p.kind for p in validate_file(empty, schema).problems] == ["empty_file"]
    (tmp_path / "z.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        validate_file(tmp_path / "z.csv", schema)
    with pytest.raises(DataError, match="not found"):
        validate_file(tmp_path / "absent.csv", schema)
    with pytest.raises(DataError, match="unsupported"):
        validate_file(tmp_path / "schema.yaml", schema)


def test_extra_columns_are_noted_not_fatal(tmp_path: Path, schema) -> None:
    rows = [GOOD_ROWS[0] + ",extra"] + [r + ",1" for r in GOOD_ROWS[1:]]
    result = validate_file(write_csv(tmp_path / "x.csv", rows), schema)
    assert result.ok and "extra" in result.notes[0]
    assert "extra" not in result.frame.columns


def test_reject_and_quarantine_policies(tmp_path: Path, schema) -> None:
    path = write_csv(tmp_path / "q.csv", GOOD_ROWS + ["b1,300,120,36.8,M,false,2021-03-04,fall,x"])
    with pytest.raises(DataError, match="row 4"):
        load_site_data(path, schema, bad_rows="reject")
    quarantine = tmp_path / "state" / "quarantine.csv"
    frame = load_site_data(path, schema, bad_rows="quarantine", quarantine_path=quarantine)
    assert len(frame) == 3
    held = pd.read_csv(quarantine)
    assert held["_row"].tolist() == [4]
    assert "age: outside the schema bounds" in held["_reasons"].iloc[0]
    assert held["case_id"].tolist() == ["b1"]


def test_quarantine_still_rejects_file_level_problems(tmp_path: Path, schema) -> None:
    path = write_csv(tmp_path / "m.csv", [r.rsplit(",", 1)[0] for r in GOOD_ROWS])
    with pytest.raises(DataError, match="missing_column"):
        load_site_data(path, schema, bad_rows="quarantine", quarantine_path=tmp_path / "q.csv")
    assert not (tmp_path / "q.csv").exists()


def test_split_is_stratified_and_reproducible() -> None:
    labels = ["a"] * 500 + ["b"] * 100 + ["c"] * 10 + ["d"] * 2
    frame = pd.DataFrame({"y": labels, "i": range(len(labels))})
    parts = stratified_split(frame, "y", seed=3)
    again = stratified_split(frame, "y", seed=3)
    other = stratified_split(frame, "y", seed=4)
    for name in parts:
        pd.testing.assert_frame_equal(parts[name], again[name])
    assert not parts["test"]["i"].equals(other["test"]["i"])
    assert sorted(pd.concat(parts.values())["i"]) == list(range(len(labels)))
    counts = {name: part["y"].value_counts().to_dict() for name, part in parts.items()}
    assert counts["train"] == {"a": 300, "b": 60, "c": 6, "d": 2}
    assert counts["holdout"] == {"a": 100, "b": 20, "c": 2}
    assert counts["test"] == {"a": 100, "b": 20, "c": 2}
