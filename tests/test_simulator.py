"""The built-in hospital simulator: valid files, realistic dependencies, consistent narratives.

One 5 x 2,000 simulation (seed 7) is written once and shared by the tests; each test checks a
property the rest of fedsynth relies on when it uses the simulator as ground truth.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.data import validate_file
from common.schema import Schema
from simulation.ed_schema import ADMITTED, MECHANISMS, ed_trauma_schema
from simulation.hospitals import PROFILES, simulate_site, simulate_sites, site_seed, write_sim_data
from simulation.narratives import DISPOSITION_PHRASES, write_narrative

SEED = 7
SITES = 5
PER_SITE = 2000
SITE_NAMES = ["site-1-urban_trauma", "site-2-community", "site-3-rural", "site-4-paediatric",
              "site-5-geriatric"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> list[Path]:
    return write_sim_data(tmp_path_factory.mktemp("sim"), SITES, PER_SITE, SEED)


@pytest.fixture(scope="module")
def schema(written) -> Schema:
    return Schema.load(written[-1])


@pytest.fixture(scope="module")
def sites(written, schema) -> dict[str, pd.DataFrame]:
    """Each site's file as a site reads it: validated and typed by ``common.data``."""
    results = {path.stem: validate_file(path, schema) for path in written[:-1]}
    for result in results.values():
        assert result.ok, result.summary()
    return {name: result.frame for name, result in results.items()}


@pytest.fixture(scope="module")
def pooled(sites) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


def _words(phrases) -> re.Pattern:
    """Whole-word, case-insensitive match of any phrase, as a public-synonym checker would."""
    alternatives = "|".join(re.escape(p) for p in phrases)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _share(mask: pd.Series) -> float:
    return float(mask.astype(bool).mean())


# --- files and schema -------------------------------------------------------------------------
def test_writes_one_valid_file_per_site_and_the_schema(written, schema, sites):
    assert [p.name for p in written] == [f"{n}.csv" for n in SITE_NAMES] + ["schema.yaml"]
    assert list(schema["hospital"].categories) == SITE_NAMES
    for name, frame in sites.items():
        assert len(frame) == PER_SITE
        assert set(frame["hospital"].astype(str)) == {name}
        assert frame["record_id"].is_unique
        assert frame["narrative"].str.len().min() > 20


def test_schema_columns_roles_and_label():
    schema = ed_trauma_schema(["a", "b"])
    assert schema.names == [
        "record_id", "hospital", "age", "sex", "arrival_mode", "arrival_hour", "arrival_weekday",
        "triage_level", "systolic_bp", "heart_rate", "resp_rate", "spo2", "temperature_c", "gcs",
        "pain_score", "alcohol", "drugs", "intent", "mechanism", "place", "activity", "body_region",
        "injury_type", "max_ais", "iss", "ct_done", "disposition", "ed_los_hours",
        "hospital_los_days", "narrative"]
    assert schema.label.name == "mechanism" and schema.narrative.name == "narrative"
    assert schema.site.name == "hospital" and schema["record_id"].role == "identifier"
    assert schema["mechanism"].categories == MECHANISMS
    assert set(schema["mechanism"].synonyms) == set(MECHANISMS)
    assert set(schema["body_region"].synonyms) == set(schema["body_region"].categories)
    assert schema["ed_los_hours"].transform == "log"
    assert schema["hospital_los_days"].transform == "log" and schema["hospital_los_days"].nullable
    assert Schema.from_dict(schema.to_dict()).hash == schema.hash


def test_simulate_site_is_typed_like_the_validated_file(sites):
    frame = simulate_site("urban_trauma", PER_SITE, site_seed(SEED, 0), SITE_NAMES[0])
    read_back = sites[SITE_NAMES[0]]
    assert list(frame.columns) == list(read_back.columns)
    for column in frame.columns.drop("hospital"):
        pd.testing.assert_series_equal(frame[column], read_back[column], check_names=False)


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    def files(seed: int, folder: str, n_sites: int = 2) -> dict[str, bytes]:
        paths = write_sim_data(tmp_path / folder, n_sites, 150, seed)
        return {p.name: p.read_bytes() for p in paths}

    first, again, other = files(3, "a"), files(3, "b"), files(4, "c")
    assert first == again
    assert all(first[name] != other[name] for name in first if name.endswith(".csv"))
    three_sites = files(3, "d", n_sites=3)
    assert all(three_sites[f"{n}.csv"] == first[f"{n}.csv"] for n in SITE_NAMES[:2])


def test_profiles_cycle_when_there_are_more_sites_than_profiles():
    names = list(simulate_sites(len(PROFILES) + 2, 20, 0))
    assert names[:5] == SITE_NAMES
    assert names[5:] == ["site-6-urban_trauma", "site-7-community"]
    with pytest.raises(ValueError, match="unknown hospital profile"):
        simulate_site("spaceport", 10, 0, "x")


def test_five_sites_of_2000_simulate_fast():
    start = time.process_time()
    simulate_sites(SITES, PER_SITE, SEED + 1)
    assert time.process_time() - start < 5.0


# --- case mix ---------------------------------------------------------------------------------
def test_paediatric_site_is_younger_than_geriatric_site(sites):
    paediatric, geriatric = sites["site-4-paediatric"]["age"], sites["site-5-geriatric"]["age"]
    assert paediatric.max() <= 17
    assert paediatric.median() < 12 < 65 <= geriatric.median()


def test_rare_mechanisms_present_but_under_one_percent(pooled):
    shares = pooled["mechanism"].value_counts(normalize=True)
    for rare in ("firearm", "drowning", "machinery"):
        assert 0 < shares[rare] < 0.01, (rare, shares[rare])
    assert 0.008 <= shares["fire_burn"] <= 0.025


def test_profiles_differ_in_case_mix(sites):
    def share(site: str, column: str, *values: str) -> float:
        return _share(sites[site][column].isin(values))

    urban, rural, kids, old = SITE_NAMES[0], SITE_NAMES[2], SITE_NAMES[3], SITE_NAMES[4]
    assert share(urban, "mechanism", "motor_vehicle_occupant") > 1.5 * share(
        kids, "mechanism", "motor_vehicle_occupant")
    assert share(urban, "mechanism", "firearm") > share(kids, "mechanism", "firearm")
    assert share(rural, "mechanism", "machinery") > 2 * share(urban, "mechanism", "machinery")
    assert share(rural, "place", "farm") > 3 * share(urban, "place", "farm")
    assert share(rural, "disposition", "transferred") > 3 * share(urban, "disposition", "transferred")
    assert share(old, "mechanism", "fall") == max(share(s, "mechanism", "fall") for s in sites)
    assert share(old, "disposition", *ADMITTED) > 2 * share(kids, "disposition", *ADMITTED)
    assert share(urban, "intent", "assault") > share(old, "intent", "assault")


def test_mechanism_depends_on_age_and_intent_on_mechanism(pooled):
    children, adults = pooled[pooled["age"] < 15], pooled[pooled["age"].between(18, 40)]
    assert _share(children["mechanism"] == "bite_sting") > _share(adults["mechanism"] == "bite_sting")
    assert _share(adults["mechanism"] == "motor_vehicle_occupant") > 2 * _share(
        children["mechanism"] == "motor_vehicle_occupant")
    elderly_falls = pooled[(pooled["age"] >= 65) & (pooled["mechanism"] == "fall")]
    assert _share(elderly_falls["place"] == "home") > 0.5
    firearm = pooled[pooled["mechanism"] == "firearm"]
    assert _share(firearm["intent"].isin(["assault", "self_harm"])) > 0.6
    assert _share(pooled.loc[pooled["mechanism"] == "fall", "intent"] == "unintentional") > 0.9
    assert not ((pooled["age"] < 10) & (pooled["intent"] == "self_harm")).any()


def test_alcohol_more_likely_in_assault_and_at_night(pooled):
    known = pooled[pooled["alcohol"].notna() & (pooled["age"] >= 18)]
    alcohol = known["alcohol"].astype(bool)
    assault = known["intent"] == "assault"
    night = known["arrival_hour"].isin([22, 23, 0, 1, 2, 3, 4])
    assert alcohol[assault].mean() > 2 * alcohol[~assault].mean()
    assert alcohol[night].mean() > 1.5 * alcohol[~night].mean()
    assert _share(pooled.loc[pooled["intent"] == "assault", "arrival_hour"].isin(
        [22, 23, 0, 1, 2, 3, 4])) > 0.3


# --- severity chain ---------------------------------------------------------------------------
def test_iss_is_consistent_with_max_ais(pooled):
    ais, iss = pooled["max_ais"].astype(int), pooled["iss"].astype(int)
    assert (iss >= ais ** 2).all() and (iss <= 75).all()
    assert (iss[ais == 6] == 75).all() and (ais == 6).any()


def test_severity_lowers_gcs_and_causes_shock(pooled):
    severe, minor = pooled[pooled["max_ais"] >= 4], pooled[pooled["max_ais"] <= 2]
    assert severe["gcs"].median() < minor["gcs"].median()
    head = pooled[(pooled["body_region"] == "head") & (pooled["max_ais"] >= 3)]
    limbs = pooled[pooled["body_region"].isin(["upper_extremity", "lower_extremity"])
                   & (pooled["max_ais"] >= 3)]
    assert head["gcs"].mean() < limbs["gcs"].mean()
    adults_severe, adults_minor = (f[f["age"] >= 18] for f in (severe, minor))
    assert adults_severe["systolic_bp"].median() < adults_minor["systolic_bp"].median()
    assert adults_severe["heart_rate"].median() > adults_minor["heart_rate"].median()
    assert _share(severe["triage_level"] <= 2) > 3 * _share(minor["triage_level"] <= 2)
    assert _share(severe["ct_done"]) > 2 * _share(minor["ct_done"])


def test_critical_dispositions_rise_with_iss(pooled):
    bands = pd.cut(pooled["iss"].astype(int), [0, 8, 15, 24, 75])
    critical = pooled["disposition"].isin(["admitted_icu", "operating_room", "died_in_ed"])
    by_band = critical.groupby(bands, observed=True).mean()
    assert len(by_band) == 4 and by_band.is_monotonic_increasing
    assert by_band.iloc[-1] > 0.4 > 0.05 > by_band.iloc[0]
    assert set(pooled.loc[pooled["max_ais"] == 1, "disposition"]) >= {"discharged"}
    assert (pooled["disposition"] == "died_in_ed").any()


def test_hospital_stay_missing_exactly_when_not_admitted(pooled):
    admitted = pooled["disposition"].isin(ADMITTED)
    assert (pooled["hospital_los_days"].notna() == admitted).all()
    stays = pooled.loc[admitted, "hospital_los_days"]
    icu = pooled.loc[pooled["disposition"] == "admitted_icu", "hospital_los_days"]
    assert icu.median() > stays.median()
    assert pooled["ed_los_hours"].between(0.1, 72).all()
    assert pooled.loc[admitted, "ed_los_hours"].median() > pooled.loc[
        pooled["disposition"] == "discharged", "ed_los_hours"].median()


def test_missing_values_where_real_eds_have_them(pooled):
    assert 0.1 < _share(pooled["gcs"].isna()) < 0.3
    assert _share(pooled["alcohol"].isna()) > 0.25
    minor_walk_in = pooled[(pooled["max_ais"] == 1) & (pooled["arrival_mode"] == "walk_in")]
    severe = pooled[pooled["max_ais"] >= 3]
    assert _share(minor_walk_in["systolic_bp"].isna()) > 5 * max(
        _share(severe["systolic_bp"].isna()), 0.01)
    assert pooled.loc[pooled["age"] < 4, "pain_score"].isna().all()
    for always in ("age", "mechanism", "max_ais", "disposition", "narrative"):
        assert pooled[always].notna().all()


# --- narratives -------------------------------------------------------------------------------
def test_every_narrative_names_its_mechanism_and_region_only(pooled, schema):
    mechanisms = {m: _words(w) for m, w in schema["mechanism"].synonyms.items()}
    regions = {r: _words(w) for r, w in schema["body_region"].synonyms.items()}
    for text, mechanism, region in zip(pooled["narrative"], pooled["mechanism"],
                                       pooled["body_region"], strict=True):
        named = {m for m, pattern in mechanisms.items() if pattern.search(text)}
        assert named == {mechanism}, (mechanism, text)
        sites = {r for r, pattern in regions.items() if pattern.search(text)}
        assert sites == {region}, (region, text)


def test_every_narrative_states_its_disposition(pooled):
    phrases = {d: _words(p) for d, p in DISPOSITION_PHRASES.items()}
    for text, disposition in zip(pooled["narrative"], pooled["disposition"], strict=True):
        assert phrases[disposition].search(text), (disposition, text)


def test_narratives_read_like_ed_notes(pooled):
    notes = pooled["narrative"]
    assert (notes == notes.str.upper()).all()
    assert notes.nunique() > 0.98 * len(notes)
    assert 0.02 < _share(notes.str.contains(r"\*\*\*", regex=True)) < 0.25
    assert _share(notes.str.contains(r"\b\d+ ?(?:YO ?|Y/O |Y|MO ?|MONTH OLD )[MF]", regex=True)) > 0.99
    assert _share(notes.str.contains(r"\bDX\b", regex=True)) > 0.99
    drunk = pooled["alcohol"].fillna(False).astype(bool)
    assert _share(notes[drunk].str.contains("ETOH|INTOXICATED", regex=True)) > 0.97
    coma = pooled["gcs"].fillna(15) <= 8
    assert notes[coma].str.contains(r"GCS ?\d", regex=True).all()


def test_narratives_carry_occasional_typos(pooled):
    vocabulary = pd.Series(" ".join(pooled["narrative"]).split()).value_counts()
    rare_long_words = vocabulary[(vocabulary == 1) & (vocabulary.index.str.fullmatch(r"[A-Z]{6,}"))]
    assert 5 < len(rare_long_words) < 0.05 * len(pooled)


def test_write_narrative_is_deterministic_given_the_generator(pooled):
    record = pooled.iloc[0].to_dict()
    first = write_narrative(record, np.random.default_rng(11))
    assert first == write_narrative(record, np.random.default_rng(11))
    variants = {write_narrative(record, np.random.default_rng(s)) for s in range(20)}
    assert len(variants) > 10


def test_write_narrative_accepts_generator_output_with_floats_and_gaps():
    record = {"age": 34.0, "sex": "F", "mechanism": "pedestrian", "body_region": "thorax",
              "injury_type": "fracture", "disposition": "admitted_icu", "gcs": 9.0,
              "systolic_bp": 82.0, "heart_rate": float("nan"), "spo2": None, "place": None,
              "alcohol": pd.NA, "arrival_mode": "ambulance", "pain_score": float("nan")}
    notes = [write_narrative(record, np.random.default_rng(s)) for s in range(10)]
    assert all("GCS 9" in n.replace("GCS9", "GCS 9") and ".0" not in n for n in notes)
