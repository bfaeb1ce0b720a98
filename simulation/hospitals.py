"""Simulated hospitals: profiles with different case mixes, and the site files they produce.

This is fedsynth's embedded default data and the ground truth of its tests. Each profile only
shifts the case mix (age, mechanisms, places, referral severity, transfers); the clinical chain
that links a mechanism to injuries, severity, vitals and disposition is shared
(``simulation.injury`` and ``simulation.severity``), as it is between real hospitals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.data import atomic_write_text
from simulation.ed_schema import ed_trauma_schema
from simulation.injury import draw_injuries
from simulation.narratives import write_narrative
from simulation.severity import draw_course

# Age bands (inclusive) that profiles weight; ages are uniform within a band, except the last,
# which thins out towards the upper bound as real populations do.
AGE_BANDS = ((0, 4), (5, 12), (13, 17), (18, 29), (30, 44), (45, 64), (65, 79), (80, 105))


@dataclass(frozen=True)
class HospitalProfile:
    """How one kind of hospital differs from the shared clinical model.

    Weights are relative multipliers on the shared model (1.0 = no change); shifts are added to
    log-odds or to the latent severity score.
    """

    name: str
    description: str
    age_band_weights: tuple[float, ...]
    mechanism_weights: dict[str, float] = field(default_factory=dict)
    place_weights: dict[str, float] = field(default_factory=dict)
    assault_weight: float = 1.0
    severity_shift: float = 0.0      # referral case mix: trauma centres see worse injuries
    air_shift: float = 0.0           # log-odds of arriving by helicopter
    transfer_shift: float = 0.0      # log-odds of transfer to another hospital
    transfer_wait: float = 1.0       # ED hours waiting for transport, relative
    anticoagulant_rate: float = 0.2  # share of patients 65+ on anticoagulants
    ed_crowding: float = 1.0         # ED length of stay, relative

    def __post_init__(self) -> None:
        if len(self.age_band_weights) != len(AGE_BANDS) or sum(self.age_band_weights) <= 0:
            raise ValueError(f"profile {self.name}: age_band_weights needs {len(AGE_BANDS)} "
                             f"non-negative weights, not all zero")


PROFILES: dict[str, HospitalProfile] = {p.name: p for p in (
    HospitalProfile(
        "urban_trauma", "Level-1 urban trauma centre: young adults, road traffic, violence, "
        "helicopter referrals, the most severe injuries.",
        age_band_weights=(4, 5, 4, 24, 24, 22, 11, 6),
        mechanism_weights={"motor_vehicle_occupant": 1.4, "motorcyclist": 1.5, "pedestrian": 1.7,
                           "firearm": 2.2, "cut_pierce": 1.3, "struck_by_against": 1.1,
                           "fall": 0.8, "machinery": 0.4, "drowning": 0.6, "bite_sting": 0.6},
        place_weights={"street": 1.3, "farm": 0.1},
        assault_weight=1.6, severity_shift=0.45, air_shift=1.2, transfer_shift=-2.0,
        anticoagulant_rate=0.18, ed_crowding=1.25),
    HospitalProfile(
        "community", "Suburban community hospital: a broad, mostly minor case mix.",
        age_band_weights=(7, 8, 6, 15, 17, 20, 15, 12),
        place_weights={"farm": 0.3},
        transfer_shift=0.7, anticoagulant_rate=0.2),
    HospitalProfile(
        "rural", "Rural hospital: farm and machinery injuries, long transport, more transfers.",
        age_band_weights=(6, 8, 6, 14, 16, 24, 15, 11),
        mechanism_weights={"machinery": 2.5, "motor_vehicle_occupant": 1.3, "motorcyclist": 1.3,
                           "bite_sting": 1.8, "drowning": 1.5, "pedestrian": 0.4,
                           "pedal_cyclist": 0.6, "firearm": 0.8},
        place_weights={"farm": 5.0, "water": 1.5, "public_place": 0.6},
        assault_weight=0.7, severity_shift=0.1, air_shift=1.5, transfer_shift=1.8,
        transfer_wait=1.8, anticoagulant_rate=0.2, ed_crowding=0.85),
    HospitalProfile(
        "paediatric", "Children's hospital: ages 0-17, falls, sport, bicycles, bites, burns.",
        age_band_weights=(35, 40, 25, 0, 0, 0, 0, 0),
        mechanism_weights={"pedal_cyclist": 1.4, "bite_sting": 1.4, "fire_burn": 1.3,
                           "firearm": 0.4, "machinery": 0.2},
        place_weights={"school": 1.4, "sports_area": 1.3},
        assault_weight=0.5, severity_shift=-0.2, air_shift=0.3, transfer_shift=-0.5,
        anticoagulant_rate=0.0, ed_crowding=0.9),
    HospitalProfile(
        "geriatric", "Hospital serving an old population: ground-level falls at home, "
        "anticoagulated head injuries, many admissions.",
        age_band_weights=(0, 0, 0, 3, 5, 12, 40, 40),
        mechanism_weights={"fall": 1.2, "firearm": 0.3, "motorcyclist": 0.5},
        place_weights={"home": 1.4},
        assault_weight=0.5, severity_shift=0.1, transfer_shift=0.2,
        anticoagulant_rate=0.38, ed_crowding=1.1),
)}


def site_name(index: int, profile_name: str) -> str:
    """``site-<n>-<profile>``, numbered from 1; the file stem and the hospital code."""
    return f"site-{index + 1}-{profile_name}"


def draw_ages(profile: HospitalProfile, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ages in years from the profile's age-band mix."""
    weights = np.asarray(profile.age_band_weights, dtype=float)
    band = rng.choice(len(AGE_BANDS), size=n, p=weights / weights.sum())
    lo = np.array([b[0] for b in AGE_BANDS])[band]
    hi = np.array([b[1] for b in AGE_BANDS])[band]
    uniform = lo + np.floor(rng.random(n) * (hi - lo + 1))
    oldest = lo + np.floor(rng.exponential(6.0, n))
    return np.minimum(np.where(band == len(AGE_BANDS) - 1, oldest, uniform), hi).astype(int)


def simulate_site(profile_name: str, n: int, seed: int, site_name: str) -> pd.DataFrame:
    """``n`` records of one simulated hospital, typed as ``common.data`` types a valid file."""
    if profile_name not in PROFILES:
        raise ValueError(f"unknown hospital profile {profile_name!r}; use one of {list(PROFILES)}")
    if n < 1:
        raise ValueError(f"a site needs at least one record (asked for {n})")
    profile = PROFILES[profile_name]
    rng = np.random.default_rng(seed)
    rec = draw_injuries(profile, draw_ages(profile, n, rng), rng)
    rec |= draw_course(rec, profile, rng)
    schema = ed_trauma_schema([site_name])
    frame = pd.DataFrame({"record_id": pd.array([f"{site_name}-{i:05d}" for i in range(1, n + 1)],
                                                dtype="string"),
                          "hospital": pd.Categorical([site_name] * n, categories=[site_name])})
    for col in schema.columns:
        if col.name in rec:
            frame[col.name] = _typed(rec[col.name], col.type, col.categories)
    records = frame.to_dict("records")
    for record, anticoagulated in zip(records, rec["anticoagulated"], strict=True):
        record["anticoagulated"] = bool(anticoagulated)
    frame["narrative"] = pd.array([write_narrative(r, rng) for r in records], dtype="string")
    return frame[schema.names]


def _typed(values: np.ndarray, col_type: str, categories: tuple[str, ...] | None) -> pd.Series:
    """Simulator arrays (category codes, NaN for missing) in the typed-frame conventions."""
    if col_type == "categorical":
        return pd.Series(pd.Categorical.from_codes(values, categories=list(categories)))
    if col_type == "integer":
        return pd.Series(pd.array(np.where(np.isnan(values), None, values), dtype="Int64"))
    if col_type == "boolean":
        return pd.Series(pd.array(np.where(np.isnan(values), None, values == 1), dtype="boolean"))
    return pd.Series(values, dtype="float64")


def site_seed(seed: int, index: int) -> int:
    """Site ``index``'s own seed: independent streams, and adding sites never changes earlier ones."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])


def simulate_sites(n_sites: int, records_per_site: int, seed: int) -> dict[str, pd.DataFrame]:
    """``n_sites`` hospitals, profiles assigned in ``PROFILES`` order and cycling."""
    if n_sites < 1:
        raise ValueError(f"need at least one site (asked for {n_sites})")
    order = list(PROFILES)
    sites = {}
    for index in range(n_sites):
        profile = order[index % len(order)]
        name = site_name(index, profile)
        sites[name] = simulate_site(profile, records_per_site, site_seed(seed, index), name)
    return sites


def write_sim_data(out_dir: str | Path, n_sites: int, records_per_site: int,
                   seed: int) -> list[Path]:
    """Write ``out_dir/site-*.csv`` (one per site) and ``out_dir/schema.yaml``.

    Returns the site files in site order, then the schema. The same arguments always give the
    same bytes; each file is written atomically.
    """
    out_dir = Path(out_dir)
    sites = simulate_sites(n_sites, records_per_site, seed)
    paths = []
    for name, frame in sites.items():
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))
        paths.append(path)
    schema_path = out_dir / "schema.yaml"
    atomic_write_text(schema_path, ed_trauma_schema(list(sites)).to_yaml())
    paths.append(schema_path)
    return paths
