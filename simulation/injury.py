"""Who gets injured, how, where and when: the first half of the simulator's causal chain.

age -> sex -> mechanism -> intent -> place -> activity -> arrival time -> alcohol/drugs ->
body region -> injury type. The weights are plausible public epidemiology (children fall and
are bitten, young men crash and fight, old people fall at home), not fitted to any data.

Arrays are indexed by record; categorical values are codes into the ``ed_schema`` tuples and
nullable values are floats with NaN for missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from simulation.ed_schema import ACTIVITIES, BODY_REGIONS, INJURY_TYPES, INTENTS, MECHANISMS, PLACES
from simulation.sampling import bernoulli, by_name, choose, table

if TYPE_CHECKING:
    from simulation.hospitals import HospitalProfile

MECH = {m: i for i, m in enumerate(MECHANISMS)}
INTENT = {m: i for i, m in enumerate(INTENTS)}
PLACE = {m: i for i, m in enumerate(PLACES)}
ACTIVITY = {m: i for i, m in enumerate(ACTIVITIES)}
REGION = {m: i for i, m in enumerate(BODY_REGIONS)}
INJURY = {m: i for i, m in enumerate(INJURY_TYPES)}

AGE_GROUPS = ("0-4", "5-14", "15-24", "25-64", "65+")
HIGH_ENERGY = ("motor_vehicle_occupant", "motorcyclist", "pedestrian", "firearm", "machinery")
ROAD = ("motor_vehicle_occupant", "motorcyclist", "pedestrian")

# Mechanism mix by age group, % (columns in MECHANISMS order):
#   fall struck cut mvo moto pedal ped overex fire bite firearm drown machinery other
_MECHANISM_BY_AGE = table({
    "0-4":   (50, 18, 5, 3, 0.1, 1, 1, 1, 4, 6, 0.05, 0.6, 0.05, 9),
    "5-14":  (38, 22, 6, 4, 1, 8, 2, 6, 1.5, 5, 0.1, 0.4, 0.1, 5),
    "15-24": (17, 22, 12, 14, 4, 4, 3, 10, 1.5, 2.5, 1.0, 0.2, 0.4, 6),
    "25-64": (26, 16, 12, 12, 3, 3, 2.5, 13, 1.5, 2.5, 0.4, 0.12, 0.5, 6),
    "65+":   (72, 6, 4, 6, 0.5, 1.5, 2, 3, 1, 1, 0.1, 0.08, 0.3, 2.5),
}, AGE_GROUPS, MECHANISMS)
_MALE_MECHANISM_WEIGHT = {"firearm": 1.8, "motorcyclist": 1.6, "machinery": 2.0, "cut_pierce": 1.2,
                          "struck_by_against": 1.2, "overexertion": 1.1, "fall": 0.85}

# Intent given mechanism (unintentional, assault, self_harm, undetermined).
_INTENT = table({
    "fall": (0.96, 0.01, 0.01, 0.02), "struck_by_against": (0.62, 0.35, 0.0, 0.03),
    "cut_pierce": (0.72, 0.16, 0.10, 0.02), "motor_vehicle_occupant": (0.97, 0.0, 0.01, 0.02),
    "motorcyclist": (0.98, 0.0, 0.0, 0.02), "pedal_cyclist": (0.99, 0.0, 0.0, 0.01),
    "pedestrian": (0.95, 0.01, 0.02, 0.02), "overexertion": (1.0, 0.0, 0.0, 0.0),
    "fire_burn": (0.90, 0.04, 0.03, 0.03), "bite_sting": (0.97, 0.02, 0.0, 0.01),
    "firearm": (0.12, 0.58, 0.25, 0.05), "drowning": (0.85, 0.02, 0.06, 0.07),
    "machinery": (0.99, 0.0, 0.0, 0.01), "other": (0.78, 0.05, 0.12, 0.05),
}, MECHANISMS, INTENTS)

# Place given mechanism:
#   home street sports_area workplace school farm water public_place other
_PLACE = table({
    "fall":                   (55, 10, 7, 6, 7, 1, 0, 12, 2),
    "struck_by_against":      (35, 12, 18, 10, 10, 1, 0, 12, 2),
    "cut_pierce":             (55, 8, 2, 20, 2, 2, 0, 9, 2),
    "motor_vehicle_occupant": (0, 96, 0, 1, 0, 1, 0, 2, 0),
    "motorcyclist":           (0, 90, 4, 0, 0, 4, 0, 0, 2),
    "pedal_cyclist":          (5, 70, 10, 0, 3, 2, 0, 8, 2),
    "pedestrian":             (0, 91, 0, 1, 1, 0, 0, 7, 0),
    "overexertion":           (40, 2, 30, 22, 3, 2, 0, 0, 1),
    "fire_burn":              (75, 2, 0, 10, 0, 3, 0, 5, 5),
    "bite_sting":             (60, 10, 5, 2, 3, 5, 0, 10, 5),
    "firearm":                (35, 45, 0, 2, 1, 2, 0, 12, 3),
    "drowning":               (15, 0, 5, 0, 0, 0, 80, 0, 0),
    "machinery":              (5, 0, 0, 55, 0, 40, 0, 0, 0),
    "other":                  (45, 5, 5, 15, 5, 2, 1, 12, 10),
}, MECHANISMS, PLACES)

# Activity given place: sport work leisure daily_living travel other
_ACTIVITY = table({
    "home":         (2, 4, 22, 66, 0, 6),
    "street":       (4, 8, 20, 8, 55, 5),
    "sports_area":  (85, 2, 10, 0, 0, 3),
    "workplace":    (2, 90, 0, 3, 2, 3),
    "school":       (45, 2, 35, 10, 2, 6),
    "farm":         (0, 80, 10, 8, 0, 2),
    "water":        (25, 5, 60, 0, 2, 8),
    "public_place": (6, 6, 35, 25, 15, 13),
    "other":        (10, 10, 30, 20, 10, 20),
}, PLACES, ACTIVITIES)

# Body region given mechanism:
#   head face neck thorax abdomen spine upper_ext lower_ext multiple
_REGION = table({
    "fall":                   (20, 12, 2, 6, 1, 6, 27, 24, 2),
    "struck_by_against":      (22, 28, 2, 7, 3, 3, 20, 13, 2),
    "cut_pierce":             (4, 10, 2, 3, 2, 0, 65, 14, 0),
    "motor_vehicle_occupant": (14, 7, 14, 15, 6, 10, 10, 10, 14),
    "motorcyclist":           (12, 4, 3, 12, 5, 7, 18, 27, 12),
    "pedal_cyclist":          (20, 14, 1, 5, 3, 2, 33, 18, 4),
    "pedestrian":             (16, 5, 2, 8, 5, 5, 10, 31, 18),
    "overexertion":           (0, 0, 5, 2, 2, 40, 25, 26, 0),
    "fire_burn":              (3, 14, 3, 7, 3, 0, 42, 18, 10),
    "bite_sting":             (2, 18, 2, 2, 1, 0, 45, 30, 0),
    "firearm":                (10, 3, 4, 22, 20, 3, 15, 18, 5),
    "drowning":               (25, 0, 0, 70, 0, 0, 0, 0, 5),
    "machinery":              (2, 3, 0, 4, 2, 2, 72, 14, 1),
    "other":                  (12, 14, 3, 5, 5, 3, 32, 23, 3),
}, MECHANISMS, BODY_REGIONS)

# Injury type given mechanism:
#   fracture contusion laceration sprain burn concussion dislocation internal asphyxia puncture other
_INJURY_BY_MECHANISM = table({
    "fall":                   (30, 27, 15, 12, 0, 6, 4, 3, 0, 0, 3),
    "struck_by_against":      (15, 35, 25, 6, 0, 8, 2, 3, 0, 1, 5),
    "cut_pierce":             (1, 0, 82, 0, 0, 0, 0, 3, 0, 12, 2),
    "motor_vehicle_occupant": (25, 30, 10, 18, 0, 5, 2, 8, 0, 0, 2),
    "motorcyclist":           (38, 22, 14, 7, 0, 4, 4, 9, 0, 0, 2),
    "pedal_cyclist":          (30, 28, 20, 8, 0, 6, 3, 3, 0, 0, 2),
    "pedestrian":             (38, 25, 10, 6, 0, 5, 3, 11, 0, 0, 2),
    "overexertion":           (1, 2, 0, 88, 0, 0, 6, 0, 0, 0, 3),
    "fire_burn":              (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0),
    "bite_sting":             (0, 5, 35, 0, 0, 0, 0, 0, 0, 58, 2),
    "firearm":                (20, 0, 0, 0, 0, 0, 0, 40, 0, 40, 0),
    "drowning":               (0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0),
    "machinery":              (35, 15, 35, 0, 0, 0, 3, 5, 0, 5, 2),
    "other":                  (10, 30, 15, 5, 0, 2, 2, 2, 2, 8, 24),
}, MECHANISMS, INJURY_TYPES)

# Which injury types a body region can carry (relative plausibility; 0 = anatomically not
# recorded under that region, e.g. concussion outside the head):
#   fracture contusion laceration sprain burn concussion dislocation internal asphyxia puncture other
_INJURY_BY_REGION = table({
    "head":            (0.5, 1, 1, 0, 1, 3, 0, 1.5, 1, 0.5, 1),
    "face":            (1, 1, 1.3, 0, 1, 0, 0.1, 0, 0, 0.7, 1),
    "neck":            (0, 1, 1, 1.5, 1, 0, 0, 0.5, 1, 1, 1),
    "thorax":          (1.5, 1, 0.6, 0.3, 1, 0, 0, 1.5, 1, 1, 1),
    "abdomen":         (0, 1, 0.6, 0.3, 1, 0, 0, 2, 0, 1, 1),
    "spine":           (1, 0.6, 0, 2, 0.5, 0, 0.1, 0, 0, 0, 1),
    "upper_extremity": (1.2, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1),
    "lower_extremity": (1.3, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1),
    "multiple":        (1, 1, 0.6, 0.3, 1, 0.3, 0.2, 1.5, 1, 0.5, 1),
}, BODY_REGIONS, INJURY_TYPES)

# Hour-of-day shapes: daytime injuries (falls, sport, work) and night-time ones (violence, road).
_DAY_HOURS = np.array([1, 0.7, 0.5, 0.4, 0.4, 0.6, 1.2, 2.2, 3.2, 4, 4.3, 4.4, 4.4, 4.3, 4.3, 4.4,
                       4.5, 4.6, 4.4, 4, 3.4, 2.8, 2.1, 1.5])
_NIGHT_HOURS = np.array([5, 5, 4.5, 3.8, 2.5, 1.5, 0.8, 0.5, 0.4, 0.4, 0.4, 0.4, 0.5, 0.5, 0.6,
                         0.7, 0.9, 1.2, 1.8, 2.5, 3.2, 4, 4.6, 5])
_WEEKDAYS_USUAL = np.array([1.1, 1.0, 1.0, 1.0, 1.0, 0.95, 0.95])
_WEEKDAYS_WEEKEND_HEAVY = np.array([0.8, 0.7, 0.7, 0.8, 1.1, 1.6, 1.5])


def among(codes: np.ndarray, lookup: dict[str, int], *names: str) -> np.ndarray:
    """Which coded values are one of ``names``."""
    return np.isin(codes, [lookup[name] for name in names])


def draw_injuries(profile: HospitalProfile, age: np.ndarray,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Demographics, circumstances and the injury itself for each record of ``age``."""
    n = len(age)
    old = age >= 65
    male = rng.random(n) < np.select([age < 15, age < 45, age < 65], [0.58, 0.66, 0.56], 0.42)
    anticoagulated = rng.random(n) < np.select([old, age >= 50], [profile.anticoagulant_rate,
                                                                  profile.anticoagulant_rate / 4], 0)

    group = np.digitize(age, [5, 15, 25, 65])
    weights = (_MECHANISM_BY_AGE[group] * by_name(profile.mechanism_weights, MECH, 1.0)
               * np.where(male[:, None], by_name(_MALE_MECHANISM_WEIGHT, MECH, 1.0), 1.0))
    mechanism = choose(rng, weights)

    intent_w = _INTENT[mechanism].copy()
    intent_w[:, INTENT["assault"]] *= profile.assault_weight * np.select(
        [age < 13, old], [0.3, 0.4], 1.0)
    intent_w[age < 10, INTENT["self_harm"]] = 0.0
    intent = choose(rng, intent_w)
    assault = intent == INTENT["assault"]

    place_w = _PLACE[mechanism] * by_name(profile.place_weights, PLACE, 1.0)
    place_w[(age < 4) | (age > 18), PLACE["school"]] = 0.0
    place_w[(age < 15) | (age > 80), PLACE["workplace"]] = 0.0
    place_w[old, PLACE["sports_area"]] *= 0.3
    place = choose(rng, place_w)

    activity_w = _ACTIVITY[place].copy()
    activity_w[among(mechanism, MECH, *ROAD), ACTIVITY["travel"]] *= 4.0
    activity_w[mechanism == MECH["overexertion"], ACTIVITY["sport"]] *= 3.0
    activity_w[:, ACTIVITY["work"]] *= np.select([age < 15, age >= 70], [0.0, 0.2], 1.0)
    activity_w[np.all(activity_w == 0, axis=1), ACTIVITY["other"]] = 1.0
    activity = choose(rng, activity_w)

    p_night = (0.08 + 0.45 * assault + 0.15 * among(mechanism, MECH, *ROAD)
               + 0.1 * (intent == INTENT["self_harm"]) - 0.04 * old)
    night = rng.random(n) < p_night
    hour = np.where(night, choose(rng, np.tile(_NIGHT_HOURS, (n, 1))),
                    choose(rng, np.tile(_DAY_HOURS, (n, 1))))
    weekend_heavy = assault | among(mechanism, MECH, *ROAD, "drowning") | (
        activity == ACTIVITY["sport"])
    weekday = choose(rng, np.where(weekend_heavy[:, None], _WEEKDAYS_WEEKEND_HEAVY,
                                   _WEEKDAYS_USUAL))
    weekend = weekday >= 5

    alcohol, drugs = _substances(rng, age, male, mechanism, intent, night, weekend)

    region_w = _REGION[mechanism].copy()
    falls = mechanism == MECH["fall"]
    region_w[falls & old, REGION["head"]] *= 1.6 + 1.5 * anticoagulated[falls & old]
    region_w[falls & old, REGION["lower_extremity"]] *= 1.3
    region_w[age < 5, REGION["head"]] *= 1.6
    region_w[age < 5, REGION["face"]] *= 1.6
    trunk = [REGION["thorax"], REGION["abdomen"]]
    region_w[np.ix_(assault & (mechanism == MECH["cut_pierce"]), trunk)] *= 5.0
    region_w[assault & (mechanism == MECH["struck_by_against"]), REGION["face"]] *= 1.8
    region_w[(intent == INTENT["self_harm"]) & (mechanism == MECH["cut_pierce"]),
             REGION["upper_extremity"]] *= 3.0
    region = choose(rng, region_w)

    injury_w = _INJURY_BY_MECHANISM[mechanism] * _INJURY_BY_REGION[region]
    head = region == REGION["head"]
    injury_w[anticoagulated & head, INJURY["internal_organ"]] *= 3.0
    injury_type = choose(rng, injury_w)

    return {
        "age": age, "sex": np.where(male, 0, 1), "mechanism": mechanism, "intent": intent,
        "place": place, "activity": activity, "arrival_hour": hour, "arrival_weekday": weekday,
        "alcohol": alcohol, "drugs": drugs, "body_region": region, "injury_type": injury_type,
        "anticoagulated": anticoagulated,
    }


def _substances(rng: np.random.Generator, age: np.ndarray, male: np.ndarray,
                mechanism: np.ndarray, intent: np.ndarray, night: np.ndarray,
                weekend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alcohol and drug involvement (1.0/0.0, NaN when not documented).

    Involvement rises with adulthood, violence, road crashes, nights and weekends. Notes document
    it more often when the trauma team is involved (assault, road crashes, self-harm).
    """
    n = len(age)
    assault = intent == INTENT["assault"]
    self_harm = intent == INTENT["self_harm"]
    road = among(mechanism, MECH, *ROAD)
    adult = np.select([age < 13, age < 18, age < 65, age < 75], [-9.0, 0.8, 1.6, 0.8], 0.0)
    alcohol = bernoulli(rng, -3.2 + adult + 1.5 * assault + 1.0 * road + 1.0 * night
                        + 0.5 * weekend + 0.4 * male + 1.0 * self_harm
                        + 0.6 * (mechanism == MECH["drowning"]))
    drugs = bernoulli(rng, -4.2 + adult + 1.4 * alcohol + 1.2 * self_harm + 0.8 * assault
                      + 0.5 * night)
    documented = rng.random(n) < np.where(assault | road | self_harm, 0.8, 0.5)
    drugs_documented = documented & (rng.random(n) < 0.8)
    return (np.where(documented, alcohol, np.nan), np.where(drugs_documented, drugs, np.nan))
