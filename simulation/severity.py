"""How bad the injury is and what the ED does about it: the second half of the causal chain.

mechanism/injury -> max AIS -> ISS -> GCS and vitals -> arrival mode, triage level, CT ->
disposition -> ED and hospital length of stay. A latent severity score drives the chain, so
that every downstream variable moves with it the way trauma registries show: high-energy and
penetrating mechanisms score higher AIS; head injuries lower the GCS; haemorrhage lowers blood
pressure and raises heart rate; the severe go to the ICU, the theatre or the mortuary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from simulation.ed_schema import ADMITTED, ARRIVAL_MODES, DISPOSITIONS
from simulation.injury import HIGH_ENERGY, INJURY, INTENT, MECH, REGION, ROAD, among
from simulation.sampling import bernoulli, by_name, choose_softmax, lognormal, table

if TYPE_CHECKING:
    from simulation.hospitals import HospitalProfile

ARRIVAL = {m: i for i, m in enumerate(ARRIVAL_MODES)}
DISPOSITION = {m: i for i, m in enumerate(DISPOSITIONS)}

# Latent severity contributions (log-odds scale of the ordinal AIS model).
_ENERGY = by_name({
    "fall": 0.0, "struck_by_against": -0.1, "cut_pierce": 0.1, "motor_vehicle_occupant": 1.0,
    "motorcyclist": 1.5, "pedal_cyclist": 0.5, "pedestrian": 1.5, "overexertion": -1.0,
    "fire_burn": 0.5, "bite_sting": -0.9, "firearm": 2.2, "drowning": 2.6, "machinery": 1.0,
    "other": -0.4,
}, MECH, 0.0)
_INJURY_SCORE = by_name({
    "fracture": 0.9, "contusion": -0.6, "laceration": -0.4, "sprain_strain": -1.0, "burn": 0.3,
    "concussion": 0.5, "dislocation": 0.5, "internal_organ": 2.3, "asphyxia": 1.5,
    "puncture": 0.0, "other": -0.6,
}, INJURY, 0.0)
_AIS_CUTS = np.array([1.3, 2.6, 3.7, 4.6, 5.9])  # latent score thresholds for AIS 2..6

# GCS points lost with a head injury of each AIS (1..6), before individual variation.
_HEAD_GCS_DROP = np.array([0.0, 0.5, 2.0, 5.5, 9.0, 12.0])

# Typical disposition shares (%) by maximum AIS, before individual modifiers:
#   discharged ward ICU OR transferred died_in_ed left_ama
_DISPOSITION_BY_AIS = table({
    "1": (93, 5, 0.2, 0.3, 0.5, 0, 1),
    "2": (62, 30, 2, 2, 3, 0.05, 1),
    "3": (15, 55, 12, 10, 7, 0.5, 0.5),
    "4": (2, 30, 40, 18, 8, 2, 0),
    "5": (0.5, 8, 50, 25, 7, 10, 0),
    "6": (0, 0, 20, 10, 0, 70, 0),
}, ("1", "2", "3", "4", "5", "6"), DISPOSITIONS)
# Typical self-reported pain (0-10) by injury type, before individual variation.
_PAIN_BY_INJURY = by_name({
    "fracture": 7, "contusion": 5, "laceration": 4, "sprain_strain": 6, "burn": 7,
    "concussion": 4, "dislocation": 8, "internal_organ": 7, "asphyxia": 2, "puncture": 5,
    "other": 4,
}, INJURY, 0.0)


def draw_course(rec: dict[str, np.ndarray], profile: HospitalProfile,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Severity, physiology and ED course for records drawn by ``injury.draw_injuries``."""
    n = len(rec["age"])
    age, mechanism, region, injury = (rec["age"], rec["mechanism"], rec["body_region"],
                                      rec["injury_type"])
    head = among(region, REGION, "head", "multiple") | (mechanism == MECH["drowning"])
    old = age >= 65

    score = (_ENERGY[mechanism] + _INJURY_SCORE[injury] + 0.8 * (region == REGION["multiple"])
             + 0.4 * old + 0.8 * (rec["anticoagulated"] & head) + profile.severity_shift
             + rng.logistic(0.0, 0.7, n))
    ais = 1 + (score[:, None] > _AIS_CUTS).sum(axis=1)
    iss = _iss(rng, ais, region == REGION["multiple"] | among(mechanism, MECH, *HIGH_ENERGY))

    drop = (np.where(head, 1.0, 0.25) * _HEAD_GCS_DROP[ais - 1] + 0.7 * (rec["alcohol"] == 1)
            + rng.exponential(0.25 + 0.5 * head * (ais - 1)))
    gcs = np.clip(15 - np.floor(drop), 3, 15)
    gcs[ais == 6] = np.minimum(gcs[ais == 6], rng.integers(3, 6, (ais == 6).sum()))

    vitals = _vitals(rng, rec, ais, gcs, head)
    arrival = _arrival(rng, rec, ais, profile)
    triage = _triage(rng, rec, ais, gcs, vitals, arrival)
    ct = bernoulli(rng, -3.2 + 2.6 * (region == REGION["head"]) + 1.6 * (region == REGION["face"])
                   + 1.8 * among(region, REGION, "neck", "spine") + 1.2 * (ais - 1)
                   + 1.5 * (region == REGION["multiple"])
                   + 1.0 * among(mechanism, MECH, *HIGH_ENERGY)
                   + 1.8 * (rec["anticoagulated"] & head) + 1.0 * (old & head)
                   - 1.0 * (age < 15) + 1.0 * (gcs < 15))
    disposition = _disposition(rng, rec, ais, gcs, vitals["systolic_bp"], profile)
    ed_los, hospital_los = _lengths_of_stay(rng, disposition, iss, old, profile)

    pain = np.clip(np.round(_PAIN_BY_INJURY[injury] + rng.normal(0.0, 1.6, n)), 0, 10)
    no_self_report = (age < 4) | (gcs < 13) | (rng.random(n) < 0.12)
    gcs_missing = rng.random(n) < np.select([ais == 1, ais == 2], [0.25, 0.12], 0.04)
    vitals = _mask_vitals(rng, vitals, (ais == 1) & (triage >= 4) & among(
        arrival, ARRIVAL, "walk_in", "private_vehicle"))

    return {
        "max_ais": ais, "iss": iss, "gcs": np.where(gcs_missing, np.nan, gcs),
        "pain_score": np.where(no_self_report, np.nan, pain), "arrival_mode": arrival,
        "triage_level": triage, "ct_done": ct.astype(float), "disposition": disposition,
        "ed_los_hours": ed_los, "hospital_los_days": hospital_los, **vitals,
    }


def hypotension_limit(age: np.ndarray | int) -> np.ndarray:
    """Systolic pressure below which a patient of this age is hypotensive (PALS / adult 90)."""
    return np.where(np.asarray(age) < 10, 70 + 2 * np.asarray(age), 90)


def tachycardia_limit(age: np.ndarray | int) -> np.ndarray:
    """Heart rate above which a patient of this age is tachycardic (children run faster)."""
    age = np.asarray(age)
    return np.select([age < 2, age < 10], [160, 140], 120)


def _iss(rng: np.random.Generator, ais: np.ndarray, multi: np.ndarray) -> np.ndarray:
    """ISS = sum of squares of the three worst regions' AIS; 75 when any AIS is 6.

    The second and third regions are injured more often with high energy or multiple injuries,
    and never worse than the worst, so ``max_ais**2 <= iss <= 75`` always holds.
    """
    n = len(ais)
    p_second = np.where(multi, 0.9, np.clip(0.1 + 0.12 * (ais - 1), 0, 0.8))
    second = np.where(rng.random(n) < p_second, 1 + np.floor(rng.random(n) * ais), 0)
    third = np.where((second > 0) & (rng.random(n) < 0.5),
                     1 + np.floor(rng.random(n) * second), 0)
    iss = ais ** 2 + second ** 2 + third ** 2
    return np.where(ais == 6, 75, np.minimum(iss, 75)).astype(int)


def _vitals(rng: np.random.Generator, rec: dict[str, np.ndarray], ais: np.ndarray,
            gcs: np.ndarray, head: np.ndarray) -> dict[str, np.ndarray]:
    """Triage vitals: age-normal values, shifted by haemorrhage, chest injury and drowning."""
    n = len(ais)
    age, mechanism, region = rec["age"], rec["mechanism"], rec["body_region"]
    bleeding_site = np.select(
        [among(region, REGION, "abdomen", "multiple"), region == REGION["thorax"],
         among(region, REGION, "lower_extremity", "spine")], [1.0, 0.8, 0.5], 0.2)
    bleeding_site += 0.5 * among(mechanism, MECH, "firearm", "cut_pierce")
    shock = np.maximum(ais - 2, 0) * bleeding_site * rng.uniform(0.2, 1.3, n)
    chest = region == REGION["thorax"]
    drowned = mechanism == MECH["drowning"]
    cushing = head & (ais >= 4)
    pain_stress = 3.0 * (ais - 1) + 6.0 * (rec["alcohol"] == 1)

    sbp = (np.where(age < 13, 90 + 2 * age + rng.normal(0, 8, n),
                    118 + 0.45 * np.maximum(age - 18, 0) + rng.normal(0, 14, n))
           - 14 * shock + 12 * cushing)
    hr = (78 + 52 * np.exp(-age / 5) + rng.normal(0, 11, n) + 13 * shock + pain_stress
          - 25 * cushing)
    rr = ((16 + 20 * np.exp(-age / 4)) * (1 + rng.normal(0, 0.12, n)) + 2.5 * shock
          + 2.0 * chest * (ais - 1) - 4 * (gcs <= 8))
    spo2 = (98.5 - 1.5 * (age >= 65) + rng.normal(0, 1.0, n)
            - 1.5 * chest * np.maximum(ais - 2, 0) * rng.random(n)
            - drowned * rng.uniform(4, 25, n) - 4 * (gcs <= 8) * rng.random(n))
    temp = (36.8 + rng.normal(0, 0.35, n) - drowned * rng.uniform(1, 4, n)
            - 0.6 * (ais >= 4) * rng.random(n))
    return {
        "systolic_bp": np.clip(np.round(sbp), 40, 250),
        "heart_rate": np.clip(np.round(hr), 20, 220),
        "resp_rate": np.clip(np.round(rr), 4, 60), "spo2": np.clip(np.round(spo2), 50, 100),
        "temperature_c": np.clip(np.round(temp, 1), 32.0, 42.0),
    }


def _mask_vitals(rng: np.random.Generator, vitals: dict[str, np.ndarray],
                 minor: np.ndarray) -> dict[str, np.ndarray]:
    """Missing vitals: whole sets in minor walk-ins, temperature often, SpO2 occasionally."""
    n = len(minor)
    skipped = minor & (rng.random(n) < 0.35)
    extra = {"temperature_c": 0.25, "spo2": 0.04}
    return {name: np.where(skipped | (rng.random(n) < extra.get(name, 0.01)), np.nan, values)
            for name, values in vitals.items()}


def _arrival(rng: np.random.Generator, rec: dict[str, np.ndarray], ais: np.ndarray,
             profile: HospitalProfile) -> np.ndarray:
    """Arrival mode: the severe come by ambulance or air, the minor by car or on foot."""
    age, mechanism, intent = rec["age"], rec["mechanism"], rec["intent"]
    d = ais - 1
    logits = np.empty((len(ais), len(ARRIVAL_MODES)))
    logits[:, ARRIVAL["ambulance"]] = (-0.3 + 0.9 * d + 0.9 * (age >= 75)
                                       + 0.9 * among(mechanism, MECH, *ROAD)
                                       + 1.5 * (mechanism == MECH["drowning"]))
    logits[:, ARRIVAL["helicopter"]] = np.where(
        ais >= 2, -6.2 + 1.6 * d + profile.air_shift
        + 1.0 * among(mechanism, MECH, *ROAD, "machinery", "drowning"), -np.inf)
    logits[:, ARRIVAL["private_vehicle"]] = 0.8 - 0.6 * d + 0.6 * (age < 15)
    logits[:, ARRIVAL["walk_in"]] = (0.2 - 1.1 * d + 0.3 * ((age >= 15) & (age < 65))
                                     - 1.5 * (age < 12))
    logits[:, ARRIVAL["police"]] = (-4.5 + 2.4 * (intent == INTENT["assault"])
                                    + 1.4 * (intent == INTENT["self_harm"])
                                    + 0.9 * (rec["alcohol"] == 1))
    return choose_softmax(rng, logits)


def _triage(rng: np.random.Generator, rec: dict[str, np.ndarray], ais: np.ndarray,
            gcs: np.ndarray, vitals: dict[str, np.ndarray], arrival: np.ndarray) -> np.ndarray:
    """ESI level from the ESI decision points, with the nurse-to-nurse variation real triage has."""
    age, injury = rec["age"], rec["injury_type"]
    sbp, hr, spo2 = vitals["systolic_bp"], vitals["heart_rate"], vitals["spo2"]
    low_bp = hypotension_limit(age)
    level = np.select(
        [(gcs <= 8) | (sbp < low_bp - 10) | (spo2 < 85) | (ais >= 5),
         (gcs <= 13) | (sbp < low_bp) | (hr > tachycardia_limit(age)) | (spo2 < 92) | (ais >= 3)
         | (rec["anticoagulated"] & (rec["body_region"] == REGION["head"]))
         | (rec["intent"] == INTENT["self_harm"]),
         (ais == 2) | among(injury, INJURY, "fracture", "dislocation", "internal_organ")
         | (age >= 65) | among(arrival, ARRIVAL, "ambulance", "helicopter"),
         among(injury, INJURY, "laceration", "puncture", "burn", "concussion")],
        [1, 2, 3, 4], 5)
    shift = np.where(rng.random(len(ais)) < 0.12, rng.choice([-1, 1], len(ais)), 0)
    return np.where(level == 1, 1, np.clip(level + shift, 2, 5))


def _disposition(rng: np.random.Generator, rec: dict[str, np.ndarray], ais: np.ndarray,
                 gcs: np.ndarray, sbp: np.ndarray, profile: HospitalProfile) -> np.ndarray:
    """Disposition: discharge for the minor; ward, ICU, theatre or death as severity rises.

    Starts from typical shares by maximum AIS, then shifts the odds for the old (admitted more),
    coma, penetrating trunk wounds (theatre), burns (burn-centre transfer), intoxication (leaving
    against advice) and the profile's transfer habits.
    """
    age, injury, region, mechanism = (rec["age"], rec["injury_type"], rec["body_region"],
                                      rec["mechanism"])
    old = age >= 65
    fracture = injury == INJURY["fracture"]
    internal = injury == INJURY["internal_organ"]
    penetrating_trunk = (among(mechanism, MECH, "firearm", "cut_pierce")
                         & among(region, REGION, "thorax", "abdomen", "neck", "multiple"))
    logits = np.log(_DISPOSITION_BY_AIS[ais - 1] + 1e-4)
    logits[:, DISPOSITION["discharged"]] -= 0.6 * old + 0.5 * (age >= 80)
    logits[:, DISPOSITION["admitted_ward"]] += (
        0.8 * old + 1.0 * (fracture & old & (region == REGION["lower_extremity"]))
        + 0.8 * (rec["anticoagulated"] & (region == REGION["head"])))
    logits[:, DISPOSITION["admitted_icu"]] += 1.5 * (gcs <= 8) + 0.5 * internal
    logits[:, DISPOSITION["operating_room"]] += (2.0 * penetrating_trunk + 0.6 * internal
                                                 + 0.6 * (fracture & (ais >= 3)))
    logits[:, DISPOSITION["transferred"]] += (profile.transfer_shift
                                              + 1.5 * ((injury == INJURY["burn"]) & (ais >= 2)))
    logits[:, DISPOSITION["died_in_ed"]] += 2.0 * (gcs == 3) + 1.0 * (sbp < 70)
    logits[:, DISPOSITION["left_ama"]] += 1.3 * ((rec["alcohol"] == 1) | (rec["drugs"] == 1))
    return choose_softmax(rng, logits)


# Median ED hours by disposition (boarding admitted patients wait longest, the dying shortest)
# and median hospital days by kind of admission.
_ED_HOURS = by_name({"discharged": 2.8, "admitted_ward": 6.5, "admitted_icu": 3.5,
                     "operating_room": 1.6, "transferred": 4.5, "died_in_ed": 1.2,
                     "left_ama": 1.8}, DISPOSITION, 0.0)
_WARD_DAYS = by_name({"admitted_ward": 3.0, "admitted_icu": 6.0, "operating_room": 5.0},
                     DISPOSITION, 0.0)


def _lengths_of_stay(rng: np.random.Generator, disposition: np.ndarray, iss: np.ndarray,
                     old: np.ndarray, profile: HospitalProfile) -> tuple[np.ndarray, np.ndarray]:
    """Log-normal ED hours and hospital days; hospital days only for admitted patients."""
    transferred = disposition == DISPOSITION["transferred"]
    ed_median = (_ED_HOURS[disposition] * profile.ed_crowding * (1 + 0.2 * old)
                 * np.where(transferred, profile.transfer_wait, 1.0))
    ed = np.clip(np.round(lognormal(rng, ed_median, 0.55), 1), 0.1, 72.0)
    admitted = among(disposition, DISPOSITION, *ADMITTED)
    days_median = (_WARD_DAYS[disposition] * np.exp(0.02 * (np.minimum(iss, 50) - 9))
                   * (1 + 0.3 * old))
    days = np.clip(np.round(lognormal(rng, days_median, 0.65), 1), 0.3, 365.0)
    return ed, np.where(admitted, days, np.nan)
