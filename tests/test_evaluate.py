"""One site's evaluation: privacy metrics, suppressed plot data, the summary and `fedsynth evaluate`.

Planted cases on simulated hospitals: a copy of the train split must be flagged by every privacy
metric and an independent sample of the same hospital by none; shuffled columns must lose their
associations; no released cell may hold fewer than 10 records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.data import load_site_data, stratified_split
from common.errors import DataError
from common.fileio import table_bytes
from common.metrics.bins import MIN_CELL, associations, cell_codes, plot_data, suppress
from common.metrics.evaluate import (
    SiteEvaluation,
    evaluate_site,
    evaluate_text,
    jsonable,
    load_synthetic,
    summarize,
)
from common.metrics.features import modeled
from common.metrics.privacy import closest_distance, dcr_overfitting_protection, exact_copies, mia_auc
from common.metrics.text import FLAG_COLUMN, text_metrics
from common.privacy.account import read_events
from common.privacy.disclosure import SMALL, rounded, small_count
from common.run_plan import RequestRefused, RunPlan
from common.schema import Schema
from common.site_config import SiteConfig
from common.stages import release as release_stage
from common.stages.base import Payload
from common.stages.site import SiteRun
from fedsynth.cli import main
from server.report import build_report
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site
from tests.test_metrics import shuffled_columns

SITE = "site-1-urban_trauma"
CONTRACT_METRICS = {
    "n_train": None, "n_test": None,
    "fidelity": {"column_shapes", "column_pair_trends", "detection_auc", "wasserstein_mean"},
    "utility": {"trtr_macro_f1", "tstr_macro_f1", "augmented_macro_f1", "per_class_recall_trtr",
                "per_class_recall_augmented"},
    "privacy": {"exact_copies", "dcr_overfitting_protection", "mia_auc"},
    "text": {"consistency_accuracy", "real_consistency_accuracy", "mauve", "mauve_ceiling", "mauve_alt",
             "mauve_alt_ceiling", "distinct_2", "real_distinct_2", "gate_pass_rate",
             "canary_exposure_bits", "train_8gram_share"},
}


@pytest.fixture(scope="module")
def site() -> tuple[Schema, dict[str, pd.DataFrame], pd.DataFrame]:
    """One hospital's splits (308 / 96 / 96) and an independent sample of the same hospital."""
    schema = ed_trauma_schema([SITE])
    splits = stratified_split(simulate_site("urban_trauma", 500, 3, SITE), "mechanism", seed=0)
    return schema, splits, simulate_site("urban_trauma", 600, 4, SITE)


def test_a_copy_of_train_is_flagged_by_every_privacy_metric(site) -> None:
    schema, split, independent = site
    train, holdout = split["train"], split["holdout"]
    copy = train.copy()
    distinct = len(modeled(train, schema).drop_duplicates())
    assert distinct > 0.9 * len(train)
    assert exact_copies(train, copy, schema) == distinct
    assert mia_auc(train, holdout, copy, schema) > 0.9
    copied = dcr_overfitting_protection(train, holdout, copy, schema)
    assert copied < 0.7

    assert exact_copies(train, independent, schema) == 0
    assert mia_auc(train, holdout, independent, schema) == pytest.approx(0.5, abs=0.08)
    assert dcr_overfitting_protection(train, holdout, independent, schema) > copied + 0.15
    # Seeded: the same inputs give the same figures.
    assert mia_auc(train, holdout, independent, schema, seed=3) == mia_auc(train, holdout, independent,
                                                                           schema, seed=3)


def test_exact_copies_need_every_modeled_column(site) -> None:
    schema, split, _ = site
    train = split["train"]
    near = train.iloc[:20].copy()
    ages = near["age"].iloc[:5]
    near.loc[near.index[:5], "age"] = ages.where(ages < 105, ages - 2) + 1  # one year off
    near["narrative"] = "different text"  # not modeled: never compared
    near["record_id"] = "x"
    assert exact_copies(train, near, schema) == 15


def test_exact_copies_count_distinct_rows(site) -> None:
    """A train row planted ten times is one memorised record: ten planted copies of a guessed
    record must not make the count a membership test."""
    schema, split, independent = site
    train = split["train"]
    planted = pd.concat([independent.iloc[:50], *[train.iloc[[0]]] * 10, train.iloc[[1, 2]]],
                        ignore_index=True)
    assert exact_copies(train, independent.iloc[:50], schema) == 0
    assert exact_copies(train, planted, schema) == 3
    assert exact_copies(train, pd.concat([train] * 3, ignore_index=True), schema) == \
        exact_copies(train, train, schema)


def test_small_number_rules() -> None:
    assert [rounded(n) for n in (0, 4, 5, 14, 15, 96, 308)] == [0, 0, 10, 10, 20, 100, 310]
    assert [small_count(n) for n in (0, 3, 9, 10, 14, 15, 96)] == [SMALL] * 3 + [10, 10, 20, 100]
    assert SMALL == "<10" and MIN_CELL == 10


def test_closest_distance_scales_by_schema_bounds(schema, good_csv) -> None:
    real = load_site_data(good_csv, schema)  # 7 modeled columns
    assert np.allclose(closest_distance(real, real, schema), 0.0)
    far = real.iloc[[0]].copy()
    far["age"] = pd.array([0 if real["age"].iloc[0] > 52 else 105], dtype="Int64")  # > half its range
    far["sex"] = "F" if real["sex"].iloc[0] == "M" else "M"
    moved = abs(int(far["age"].iloc[0]) - int(real["age"].iloc[0])) / 105
    assert closest_distance(far, real.iloc[[0]], schema)[0] == pytest.approx((moved + 1) / 7)
    gone = real.iloc[[0]].copy()
    gone["temp"] = np.nan  # missing vs present is the largest distance, 1; missing vs missing is 0
    assert closest_distance(gone, real.iloc[[0]], schema)[0] == pytest.approx(1 / 7)
    assert closest_distance(gone, gone, schema)[0] == 0.0


def test_suppression_rule() -> None:
    assert suppress([12, 15, 40]) == [12, 15, 40]
    assert suppress([0, 20, 30]) == [None, 20, 30]  # an empty cell reveals no record
    assert suppress([5, 20, 30]) == [None, None, 30]  # 5 alone would follow from n - 20 - 30
    assert suppress([3, 4, 12, 50]) == [None, None, None, 50]  # 7 hidden: the smallest shown goes
    assert suppress([3, 4, 5, 12, 50]) == [None, None, None, 12, 50]  # 12 hidden together: enough
    assert suppress([3]) == [None]


def test_plot_data_has_schema_bins_and_no_small_cells(site) -> None:
    schema, split, independent = site
    test = split["test"]
    plots = plot_data(test, independent, schema)
    assert plots["min_cell"] == MIN_CELL and "fewer than 10" in plots["note"]
    assert set(plots["histograms"]) == {c.name for c in schema.modeled_columns}
    real_test = modeled(test, schema)
    for name, hist in plots["histograms"].items():
        shown = [c for c in hist["synthetic"] if c is not None]
        assert all(c >= MIN_CELL for c in shown), (name, hist["synthetic"])
        hidden = len(independent) - sum(shown)
        assert hidden == 0 or hidden >= MIN_CELL, name  # no cell follows by subtraction
        assert len(hist["synthetic"]) == len(hist["cells"]) and hist["n_synthetic"] == len(independent)
        # the real side: suppressed on the exact counts (the same rule), then rounded to tens, and
        # the split's size rounded too, so the shown cells do not give the exact counts
        codes, _ = cell_codes(real_test[name], schema[name])
        exact = suppress(np.bincount(codes[codes >= 0], minlength=len(hist["cells"])))
        exact_shown = [c for c in exact if c is not None]
        hidden = len(test) - sum(exact_shown)
        assert hidden == 0 or hidden >= MIN_CELL, name
        assert hist["real"] == [None if c is None else rounded(c) for c in exact], name
        assert all(c >= MIN_CELL and c % MIN_CELL == 0 for c in hist["real"] if c is not None), name
        assert hist["n_real"] == rounded(len(test)) and hist["n_real"] % MIN_CELL == 0
    assert len(test) % MIN_CELL != 0  # 96 records: the exact size is not what is shown
    mechanism = plots["histograms"]["mechanism"]
    assert mechanism["cells"] == list(schema["mechanism"].categories)
    assert None in mechanism["real"]  # rare mechanisms at a 96-record test split
    assert plots["histograms"]["triage_level"]["cells"] == ["1", "2", "3", "4", "5"]
    assert plots["histograms"]["systolic_bp"]["cells"][-1] == "missing"
    # Bins come from the schema: the oldest patients' data alone gives the same cells.
    oldest = test[test["age"] > 70]
    age_cells = plot_data(oldest, independent, schema)["histograms"]["age"]["cells"]
    assert age_cells == plots["histograms"]["age"]["cells"]
    assert len(age_cells) == 10 and age_cells[0] == "0-10" and age_cells[-1].endswith("-105")
    json.dumps(plots, allow_nan=False)


def test_cell_codes_cover_every_value(schema, good_csv) -> None:
    real = load_site_data(good_csv, schema)
    codes, cells = cell_codes(real["seen"], schema["seen"])
    assert cells[0] == "2020-01-01 to 2020-07-01" and len(cells) == 10
    assert codes[2] == 0  # the lower bound itself
    codes, cells = cell_codes(real["alcohol"], schema["alcohol"])
    assert cells == ["false", "true", "missing"] and list(codes) == [0, 2, 1]


def test_shuffled_columns_lose_their_associations(site) -> None:
    schema, split, independent = site
    test = split["test"]

    def mean_gap(synth: pd.DataFrame) -> float:
        gaps = np.array(associations(test, synth, schema)["difference"], dtype=float)
        return float(np.nanmean(np.abs(gaps)))

    assert mean_gap(shuffled_columns(independent, schema, seed=1)) > mean_gap(independent) + 0.03
    tiny = associations(test.iloc[:5], independent, schema)
    assert tiny["difference"] is None  # under MIN_CELL records: no matrix at all


def test_summarize_weights_by_test_records_and_sums_counts() -> None:
    def metrics(n_test: int, f1: float, recall: float | None, copies: int) -> dict:
        return {"n_train": 3 * n_test, "n_test": n_test,
                "fidelity": {"column_shapes": f1, "column_pair_trends": f1, "detection_auc": 0.5,
                             "wasserstein_mean": None},
                "utility": {"trtr_macro_f1": f1, "per_class_recall_trtr": {"fall": f1, "firearm": recall}},
                "privacy": {"exact_copies": copies, "mia_auc": 0.5}, "text": None}

    summary = summarize({"a": metrics(100, 0.8, 0.5, 1), "b": metrics(300, 0.4, None, 2)})
    assert summary["n_test"] == 400 and summary["n_train"] == 1200
    assert summary["utility"]["trtr_macro_f1"] == pytest.approx(0.5)  # (100 * .8 + 300 * .4) / 400
    assert summary["utility"]["per_class_recall_trtr"] == {"fall": 0.5, "firearm": 0.5}
    assert summary["privacy"]["exact_copies"] == 3
    assert summary["fidelity"]["wasserstein_mean"] is None and summary["text"] is None
    with pytest.raises(ValueError):
        summarize({})


def test_summarize_nulls_a_figure_some_site_wrote_as_small() -> None:
    """"<10" has no known sum or mean: the federation's figure is null, not a guess."""
    def metrics(n_test: int, copies: int | str, share: float | str) -> dict:
        return {"n_train": 3 * n_test, "n_test": n_test, "privacy": {"exact_copies": copies},
                "text": {"train_8gram_share": share, "distinct_2": 0.5}}

    summary = summarize({"a": metrics(100, SMALL, 0.2), "b": metrics(300, 20, SMALL)})
    assert summary["privacy"]["exact_copies"] is None
    assert summary["text"]["train_8gram_share"] is None
    assert summary["text"]["distinct_2"] == pytest.approx(0.5) and summary["n_test"] == 400
    both = summarize({"a": metrics(100, 10, 0.2), "b": metrics(300, 20, 0.4)})
    assert both["privacy"]["exact_copies"] == 30
    assert both["text"]["train_8gram_share"] == pytest.approx(0.35)  # (100 * .2 + 300 * .4) / 400


def test_evaluate_site_rounds_sizes_and_reports_few_copies_as_small(site) -> None:
    schema, split, independent = site
    synthetic = pd.concat([independent.iloc[:200], split["train"].iloc[:3]], ignore_index=True)
    few = evaluate_site(schema, split, synthetic.drop(columns=["narrative"]), seed=0).metrics
    assert (few["n_train"], few["n_test"]) == (rounded(len(split["train"])), rounded(len(split["test"])))
    assert few["n_train"] % MIN_CELL == 0 and few["n_test"] % MIN_CELL == 0
    assert exact_copies(split["train"], synthetic, schema) == 3
    assert few["privacy"]["exact_copies"] == SMALL
    many = pd.concat([independent.iloc[:200], split["train"].iloc[:24]], ignore_index=True)
    assert exact_copies(split["train"], many, schema) == 24
    metrics = evaluate_site(schema, split, many.drop(columns=["narrative"]), seed=0).metrics
    assert metrics["privacy"]["exact_copies"] == 20  # rounded to ten


def test_jsonable_gives_plain_rounded_types() -> None:
    out = jsonable({"a": np.float32(0.123456), "b": np.int64(3), "c": float("nan"), "d": [np.bool_(True)],
                    "e": (np.inf, None, "x")})
    assert out == {"a": 0.1235, "b": 3, "c": None, "d": [True], "e": [None, None, "x"]}
    assert type(out["b"]) is int and type(out["d"][0]) is bool
    json.dumps(out, allow_nan=False)


# --- fedsynth evaluate ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(site, tmp_path_factory) -> dict[str, Path]:
    schema, _, independent = site
    root = tmp_path_factory.mktemp("evaluate")
    real = simulate_site("urban_trauma", 400, 5, SITE)
    paths = {"schema": root / "schema.yaml", "real": root / "site.csv", "synthetic": root / "synth.csv"}
    schema.save(paths["schema"])
    real.to_csv(paths["real"], index=False)
    independent.iloc[:400][schema.output_columns].to_csv(paths["synthetic"], index=False)
    return paths


@pytest.fixture(scope="module")
def evaluated(files) -> dict:
    out = files["real"].parent / "out" / "evaluation.json"
    assert main(["evaluate", "--schema", str(files["schema"]), "--real", str(files["real"]),
                 "--synthetic", str(files["synthetic"]), "--out", str(out), "--seed", "1"]) == 0
    return json.loads(out.read_text())


def test_evaluate_writes_every_contract_key(evaluated) -> None:
    for key, inner in CONTRACT_METRICS.items():
        assert key in evaluated
        if inner:
            assert set(evaluated[key]) == inner, key
    assert evaluated["text"]["canary_exposure_bits"] is None  # the synthetic file has narratives
    assert evaluated["n_train"] + evaluated["n_test"] < 400 and evaluated["n_test"] >= MIN_CELL
    assert evaluated["n_train"] % MIN_CELL == 0 and evaluated["n_test"] % MIN_CELL == 0
    assert 0 <= evaluated["fidelity"]["detection_auc"] <= 1
    assert evaluated["privacy"]["exact_copies"] == SMALL  # none: written "<10"
    assert set(evaluated["plots"]) == {"min_cell", "note", "label", "histograms", "associations"}


def test_evaluate_suppresses_recall_of_small_classes(evaluated, files) -> None:
    schema = Schema.load(files["schema"])
    test = stratified_split(load_site_data(files["real"], schema), "mechanism", seed=1)["test"]
    support = test["mechanism"].astype(str).value_counts()
    for key in ("per_class_recall_trtr", "per_class_recall_augmented"):
        recalls = evaluated["utility"][key]
        assert list(recalls) == list(schema["mechanism"].categories)  # absent classes too
        for cls, recall in recalls.items():
            assert (recall is None) == (support.get(cls, 0) < MIN_CELL), (key, cls)
            assert recall is None or 0 <= recall <= 1
    assert any(r is None for r in recalls.values()) and any(r is not None for r in recalls.values())


def _run_bad(files: dict[str, Path], tmp_path: Path, capsys, **swap: Path) -> str:
    out = tmp_path / "bad.json"
    args = {**files, **swap}
    code = main(["evaluate", "--schema", str(args["schema"]), "--real", str(args["real"]),
                 "--synthetic", str(args["synthetic"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".bad.json*"))
    return err


def test_evaluate_bad_input_exits_2_and_writes_nothing(files, tmp_path: Path, capsys) -> None:
    lines = files["synthetic"].read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("mechanism")] = "meteorite"
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    err = _run_bad(files, tmp_path, capsys, synthetic=unknown)
    assert "unknown.csv" in err and "row 1, column 'mechanism', value 'meteorite'" in err
    assert "Fix: pass a synthetic file" in err and "quarantine" not in err

    no_label = tmp_path / "no_label.csv"
    pd.read_csv(files["synthetic"]).drop(columns=["mechanism"]).to_csv(no_label, index=False)
    assert "'mechanism'" in _run_bad(files, tmp_path, capsys, synthetic=no_label)

    small = tmp_path / "small.csv"
    pd.read_csv(files["real"]).iloc[:30].to_csv(small, index=False)
    err = _run_bad(files, tmp_path, capsys, real=small)
    assert "small.csv" in err and "at least 50 valid records" in err

    assert "not found" in _run_bad(files, tmp_path, capsys, real=tmp_path / "none.csv")


# --- the gate's flag and the text floor ---------------------------------------------------------

NARRATED = 30  # narratives on the first records only: text figures, and too few for MAUVE (fast)


def narrated(records: pd.DataFrame, schema: Schema, notes: list[str], flags: list[bool]) -> pd.DataFrame:
    """``records``' released columns, the first len(notes) narrated and flagged as given."""
    out = records[schema.output_columns].reset_index(drop=True).copy()
    out["narrative"] = pd.array(list(notes) + [None] * (len(out) - len(notes)), dtype="string")
    out[FLAG_COLUMN] = pd.array(list(flags) + [None] * (len(out) - len(flags)), dtype="boolean")
    return out


def test_load_synthetic_keeps_the_gate_flag(site, tmp_path: Path) -> None:
    schema, _, independent = site
    frame = narrated(independent.iloc[:40], schema, independent["narrative"].iloc[:20].tolist(),
                     [i % 4 == 0 for i in range(20)])
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"synthetic{suffix}"
        frame.to_csv(path, index=False) if suffix == ".csv" else path.write_bytes(table_bytes(frame))
        loaded = load_synthetic(path, schema)
        assert str(loaded[FLAG_COLUMN].dtype) == "boolean", suffix
        assert loaded[FLAG_COLUMN].iloc[:20].tolist() == [i % 4 == 0 for i in range(20)]
        assert loaded[FLAG_COLUMN].iloc[20:].isna().all()
    bad = frame.astype({FLAG_COLUMN: "object"})
    bad.loc[3, FLAG_COLUMN] = "maybe"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=f"column '{FLAG_COLUMN}', value 'maybe'"):
        load_synthetic(tmp_path / "bad.csv", schema)
    # no narratives, no flag: the tabular baselines' sets load as before
    plain = load_synthetic(_csv(independent.iloc[:40][[c.name for c in schema.modeled_columns]],
                                tmp_path / "plain.csv"), schema)
    assert FLAG_COLUMN not in plain.columns


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_evaluate_text_fills_only_the_text_section(site) -> None:
    schema, split, independent = site
    notes = independent["narrative"].iloc[200:200 + NARRATED].tolist()
    floor = narrated(independent.iloc[:200], schema, notes, [i < 6 for i in range(NARRATED)])
    metrics = evaluate_text(schema, split, floor, seed=0)
    assert metrics["n_train"] == rounded(len(split["train"]))
    assert metrics["n_test"] == rounded(len(split["test"]))
    assert metrics["fidelity"] is None and metrics["utility"] is None and metrics["privacy"] is None
    assert set(metrics["text"]) == CONTRACT_METRICS["text"]
    assert metrics["text"]["gate_pass_rate"] == pytest.approx(0.8)  # 6 of 30 flagged
    assert metrics["text"]["mauve"] is None and metrics["text"]["mauve_ceiling"] is None  # 30 < 50
    # the text figures of evaluate_site: the same seeded shuffle, the holdout notes for the ceiling
    shuffled = floor.iloc[np.random.default_rng(0).permutation(len(floor))].reset_index(drop=True)
    assert metrics["text"] == jsonable(text_metrics(schema, split["train"], split["test"], shuffled, 0,
                                                    holdout=split["holdout"]))


@pytest.fixture()
def site_run(site, tmp_path: Path) -> SiteRun:
    """A site that trained in run-1 (its release announced); scoring itself is stubbed below."""
    schema, _, _ = site
    data, schema_path = tmp_path / "site.csv", tmp_path / "schema.yaml"
    simulate_site("urban_trauma", 500, 3, SITE).to_csv(data, index=False)
    schema.save(schema_path)
    config = SiteConfig(name=SITE, data_path=data, schema_path=schema_path, state_dir=tmp_path / "state")
    return SiteRun(config, RunPlan.standard("run-1", 0, "vae", rounds=1, local_steps=1, tabular_config={}))


def _score(run: SiteRun, release: pd.DataFrame, floor: pd.DataFrame | None, monkeypatch) -> dict:
    """``release.score`` with the release announced, the tabular scoring stubbed (its own tests
    are above): what comes back under ``scores``."""
    def fake(schema, splits, synthetic, seed=0):
        return SiteEvaluation({"n_train": 10, "n_test": 10, "text": None}, {})

    monkeypatch.setattr(release_stage, "evaluate_site", fake)
    monkeypatch.setattr(release_stage, "reference_scores", lambda run, n, seed: {})
    data = table_bytes(release)
    run.folder.mkdir(parents=True, exist_ok=True)
    announced = {"sha256": hashlib.sha256(data).hexdigest()}
    (run.folder / release_stage.ANNOUNCED).write_text(json.dumps(announced))
    blobs = {"release": data} | ({} if floor is None else {"text_floor": table_bytes(floor)})
    return release_stage.score(run, Payload(values={"seed": 0}, blobs=blobs)).values["scores"]


def test_a_site_scores_the_text_floor_beside_the_release(site, site_run, monkeypatch, tmp_path) -> None:
    schema, _, independent = site
    records = independent.iloc[:200]
    release = narrated(records, schema, records["narrative"].iloc[:NARRATED].tolist(), [False] * NARRATED)
    # the coordinator narrates the first released records again, with the public model alone
    floor = narrated(records.iloc[:150], schema, independent["narrative"].iloc[300:300 + NARRATED].tolist(),
                     [i < 9 for i in range(NARRATED)])
    scores = _score(site_run, release, floor, monkeypatch)
    assert set(scores) == {"federated", "text_floor"}
    text_floor = scores["text_floor"]
    received = load_synthetic(_csv(floor, tmp_path / "floor.csv"), schema)  # as the site reads it
    assert text_floor == evaluate_text(schema, site_run.splits, received, seed=0)
    assert text_floor["fidelity"] is None and text_floor["text"]["gate_pass_rate"] == pytest.approx(0.7)
    json.dumps(scores, allow_nan=False)
    # the report: per site under baselines.text_floor, summarized like the other variants
    report = build_report({}, {}, {SITE: {"scores": scores, "spend": {}}}, {})
    assert report["baselines"]["text_floor"] == {SITE: text_floor}
    summary = report["summary"]["text_floor"]
    assert summary["fidelity"] is None and summary["privacy"] is None
    assert summary["text"]["gate_pass_rate"] == pytest.approx(0.7)
    assert summary["n_test"] == text_floor["n_test"]


def test_a_floor_that_is_not_the_releases_records_is_refused(site, site_run, monkeypatch) -> None:
    schema, _, independent = site
    records = independent.iloc[:200]
    release = narrated(records, schema, records["narrative"].iloc[:NARRATED].tolist(), [False] * NARRATED)
    other = narrated(independent.iloc[200:400], schema, records["narrative"].iloc[:NARRATED].tolist(),
                     [False] * NARRATED)
    no_notes = release.drop(columns=["narrative", FLAG_COLUMN])
    one_more = pd.concat([release, release.iloc[[7]]], ignore_index=True)  # a copy the release lacks
    for floor in (other, no_notes, one_more):
        with pytest.raises(RequestRefused, match="text floor"):
            _score(site_run, release, floor, monkeypatch)
    assert not (site_run.folder / release_stage.SCORED).exists()  # refused: nothing was scored
    refusals = [e for e in read_events(site_run.account.folder) if e.kind == "refused"]
    assert len(refusals) == 3 and all("text floor" in e.detail for e in refusals)
    # a floor of a few records: scored, and too small for text figures (not an error)
    tiny = _score(site_run, release, release.iloc[:5], monkeypatch)["text_floor"]
    assert tiny["text"] is None and tiny["n_test"] > 0
    (site_run.folder / release_stage.SCORED).unlink()  # a fresh run, as far as the stub knows
    # without a floor the site scores the release alone, and the report has no floor
    scores = _score(site_run, release, None, monkeypatch)
    assert "text_floor" not in scores
    report = build_report({}, {}, {SITE: {"scores": scores, "spend": {}}}, {})
    assert report["baselines"]["text_floor"] is None and report["summary"]["text_floor"] is None


def test_the_local_only_baseline_has_no_text(site) -> None:
    """A tabular model writes no narratives: its text figures are null at every site and in the
    summary, beside a federated release that has them."""
    schema, split, independent = site
    tabular = independent.iloc[:200].drop(columns=["narrative"])
    assert text_metrics(schema, split["train"], split["test"], tabular) is None
    local = {"n_train": 300, "n_test": 100, "fidelity": {"column_shapes": 0.9}, "text": None, "plots": {}}
    federated = {"n_train": 300, "n_test": 100, "text": {"mauve": 0.9, "gate_pass_rate": 0.8}, "plots": {}}
    report = build_report({}, {}, {SITE: {"scores": {"federated": federated, "local_only": local},
                                          "spend": {}}}, {})
    assert report["baselines"]["local_only"][SITE]["text"] is None
    assert report["summary"]["local_only"]["text"] is None
    assert report["summary"]["federated"]["text"]["gate_pass_rate"] == pytest.approx(0.8)


def test_evaluate_at_sites_sends_the_floor_beside_the_release(monkeypatch) -> None:
    from server import evaluation
    from server.checkpoint import RunState

    sent: dict[str, Payload] = {}

    def fake_send(grid, nodes, message_type, payload, timeout_s, group="", names=None,
                  on_reply=None):
        sent[message_type] = payload
        for _ in nodes if on_reply is not None else ():
            on_reply()
        return {node: Payload(values={"announced": "x"} if message_type == "query.announce" else
                              {"scores": {}, "spend": {}}) for node in nodes}

    monkeypatch.setattr(evaluation, "send", fake_send)
    for floor in (None, b"floor-bytes"):
        sent.clear()
        out = evaluation.evaluate_at_sites(None, {1: "a"}, "{}", b"release-bytes", "ab" * 32, 0, 0, 1.0,
                                           RunState(), lambda: None, text_floor=floor)
        assert out == {"a": {"scores": {}, "spend": {}}}
        blobs = sent["evaluate.release"].blobs
        assert blobs["release"] == b"release-bytes"
        assert blobs.get("text_floor") == floor and ("text_floor" in blobs) == (floor is not None)
