"""The ED trauma schema of the simulated hospitals, built in code.

Every bound, code list and synonym here is public clinical knowledge (physiological limits, the
ESI triage scale, AIS/ISS definitions, ICD-style mechanism groups, words any ED note uses), never
read off data, so the schema can be shared with every site before training.

The category tuples are module constants because the simulator and the narrative writer index
into them; the schema is the one place that publishes them.
"""

from __future__ import annotations

from typing import Any

from common.schema import Schema

SEXES = ("M", "F")
ARRIVAL_MODES = ("ambulance", "helicopter", "private_vehicle", "walk_in", "police")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
INTENTS = ("unintentional", "assault", "self_harm", "undetermined")
MECHANISMS = (
    "fall", "struck_by_against", "cut_pierce", "motor_vehicle_occupant", "motorcyclist",
    "pedal_cyclist", "pedestrian", "overexertion", "fire_burn", "bite_sting", "firearm",
    "drowning", "machinery", "other",
)
PLACES = ("home", "street", "sports_area", "workplace", "school", "farm", "water", "public_place",
          "other")
ACTIVITIES = ("sport", "work", "leisure", "daily_living", "travel", "other")
BODY_REGIONS = ("head", "face", "neck", "thorax", "abdomen", "spine", "upper_extremity",
                "lower_extremity", "multiple")
INJURY_TYPES = ("fracture", "contusion", "laceration", "sprain_strain", "burn", "concussion",
                "dislocation", "internal_organ", "asphyxia", "puncture", "other")
DISPOSITIONS = ("discharged", "admitted_ward", "admitted_icu", "operating_room", "transferred",
                "died_in_ed", "left_ama")
ADMITTED = ("admitted_ward", "admitted_icu", "operating_room")

# Words and abbreviations ED notes use for each mechanism. Chosen so that, matched as whole words,
# no synonym of one mechanism matches inside a synonym of another (e.g. no bare "bike", which
# would match "dirt bike" for a motorcyclist).
MECHANISM_SYNONYMS: dict[str, tuple[str, ...]] = {
    "fall": ("fall", "fell", "slipped", "tripped", "GLF", "found down", "ground level fall",
             "FFH"),
    "struck_by_against": ("struck by", "struck against", "punched", "kicked", "ran into",
                          "walked into", "hit with", "collided with"),
    "cut_pierce": ("cut", "knife", "stab", "stabbed", "stab wound", "glass", "box cutter",
                   "sliced", "pierced"),
    "motor_vehicle_occupant": ("MVC", "MVA", "motor vehicle collision", "car crash",
                               "restrained driver", "unrestrained passenger", "rollover",
                               "rear-ended", "T-boned"),
    "motorcyclist": ("motorcycle", "motorcyclist", "MCC", "motorbike", "dirt bike", "moped"),
    "pedal_cyclist": ("bicycle", "bicyclist", "cyclist", "pedal bike", "BMX", "mountain bike"),
    "pedestrian": ("pedestrian", "ped vs auto", "ped vs car", "hit by car", "run over", "PVA"),
    "overexertion": ("overexertion", "lifting", "twisted", "strained", "overuse", "pulled"),
    "fire_burn": ("burn", "burned", "burns", "fire", "flame", "scald", "scalded", "hot water",
                  "grease"),
    "bite_sting": ("bite", "bitten", "dog bite", "cat bite", "sting", "stung", "bee sting"),
    "firearm": ("GSW", "gunshot", "gunshot wound", "firearm", "gun", "handgun", "rifle"),
    "drowning": ("drowning", "near drowning", "submersion", "submerged", "drowned",
                 "water rescue"),
    "machinery": ("machinery", "machine", "tractor", "auger", "PTO", "conveyor", "forklift",
                  "baler", "grinder", "lathe"),
    "other": ("mechanism unknown", "unclear mechanism", "crushed", "crush injury", "caught in",
              "pinched", "electric shock"),
}

# Region words follow the AIS body regions: the cervical spine belongs to "spine", the pelvis to
# "lower_extremity".
BODY_REGION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "head": ("head", "scalp", "skull", "forehead", "occiput", "CHI"),
    "face": ("face", "facial", "lip", "chin", "nose", "nasal", "eyebrow", "cheek", "jaw"),
    "neck": ("neck", "throat", "trachea", "larynx", "whiplash"),
    "thorax": ("chest", "thorax", "rib", "ribs", "sternum", "chest wall", "pneumothorax", "PTX"),
    "abdomen": ("abdomen", "abdominal", "ABD", "flank", "spleen", "splenic", "liver", "bowel"),
    "spine": ("spine", "spinal", "back", "low back", "lumbar", "vertebra", "C-spine",
              "L-spine"),
    "upper_extremity": ("arm", "hand", "wrist", "finger", "elbow", "shoulder", "forearm",
                        "humerus", "thumb", "clavicle"),
    "lower_extremity": ("leg", "hip", "knee", "ankle", "foot", "femur", "tibia", "toe", "thigh",
                        "pelvis"),
    "multiple": ("multiple injuries", "multiple sites", "polytrauma", "multi-trauma",
                 "multisystem trauma"),
}


def _col(name: str, type_: str, description: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "description": description, **fields}


def _vital(name: str, lo: int, hi: int, what: str) -> dict[str, Any]:
    return _col(name, "integer", f"{what}; bounds are public physiological limits. Missing when "
                "not recorded (often in minor walk-in cases).", min=lo, max=hi, nullable=True)


def ed_trauma_schema(site_names: list[str]) -> Schema:
    """The schema of the simulated ED trauma records, with ``site_names`` as the hospital codes."""
    if not site_names:
        raise ValueError("ed_trauma_schema needs at least one site name")
    columns = [
        _col("record_id", "text", "Record identifier; dropped before any training.",
             role="identifier"),
        _col("hospital", "categorical", "The site the record comes from.", role="site",
             categories=list(site_names)),
        _col("age", "integer", "Age in completed years; public human bounds.", min=0, max=105),
        _col("sex", "categorical", "Sex recorded at triage.", categories=list(SEXES)),
        _col("arrival_mode", "categorical", "How the patient reached the ED.",
             categories=list(ARRIVAL_MODES)),
        _col("arrival_hour", "integer", "Hour of the day of arrival (0-23).", min=0, max=23),
        _col("arrival_weekday", "categorical", "Day of the week of arrival.",
             categories=list(WEEKDAYS)),
        _col("triage_level", "integer", "Emergency Severity Index, 1 = resuscitation, "
             "5 = non-urgent (public ESI scale).", min=1, max=5),
        _vital("systolic_bp", 40, 250, "Systolic blood pressure at triage, mmHg"),
        _vital("heart_rate", 20, 220, "Heart rate at triage, beats/min"),
        _vital("resp_rate", 4, 60, "Respiratory rate at triage, breaths/min"),
        _vital("spo2", 50, 100, "Peripheral oxygen saturation at triage, %"),
        _col("temperature_c", "float", "Body temperature at triage, deg C; public "
             "physiological limits. Missing when not recorded.", min=32.0, max=42.0,
             nullable=True),
        _col("gcs", "integer", "Glasgow Coma Scale (public scale 3-15); missing in about a "
             "fifth of records, mostly minor ones.", min=3, max=15, nullable=True),
        _col("pain_score", "integer", "Numeric pain rating 0-10; missing for young children "
             "and patients who cannot self-report.", min=0, max=10, nullable=True),
        _col("alcohol", "boolean", "Alcohol involvement; missing when not documented.",
             nullable=True),
        _col("drugs", "boolean", "Other drug involvement; missing when not documented.",
             nullable=True),
        _col("intent", "categorical", "Intent of injury (WHO/ICD intent groups).",
             categories=list(INTENTS)),
        _col("mechanism", "categorical", "Mechanism of injury (ICD external-cause groups); the "
             "label. Synonyms are public words ED notes use for each mechanism.", role="label",
             categories=list(MECHANISMS),
             synonyms={k: list(v) for k, v in MECHANISM_SYNONYMS.items()}),
        _col("place", "categorical", "Place of occurrence (ICD place codes, grouped).",
             categories=list(PLACES)),
        _col("activity", "categorical", "Activity when injured (ICD activity codes, grouped).",
             categories=list(ACTIVITIES)),
        _col("body_region", "categorical", "Body region of the most severe injury (AIS "
             "regions); synonyms are public anatomical words.", categories=list(BODY_REGIONS),
             synonyms={k: list(v) for k, v in BODY_REGION_SYNONYMS.items()}),
        _col("injury_type", "categorical", "Nature of the most severe injury.",
             categories=list(INJURY_TYPES)),
        _col("max_ais", "integer", "Highest Abbreviated Injury Scale score (public scale 1-6).",
             min=1, max=6),
        _col("iss", "integer", "Injury Severity Score (public definition: 1-75, 75 when any "
             "AIS is 6).", min=1, max=75),
        _col("ct_done", "boolean", "Whether a CT scan was done in the ED."),
        _col("disposition", "categorical", "Where the patient went from the ED.",
             categories=list(DISPOSITIONS)),
        _col("ed_los_hours", "float", "Hours in the ED; public bounds 6 minutes to 3 days; "
             "right-skewed, hence the log transform.", min=0.1, max=72.0, transform="log"),
        _col("hospital_los_days", "float", "Days in hospital after admission; missing when the "
             "patient was not admitted. Public bounds up to one year; log transform.",
             min=0.0, max=365.0, nullable=True, transform="log"),
        _col("narrative", "text", "Free-text triage/ED note.", role="narrative"),
    ]
    return Schema.from_dict({
        "name": "ed_trauma",
        "version": 1,
        "description": "Emergency-department trauma records of the fedsynth hospital simulator.",
        "columns": columns,
    }, source="ed_trauma_schema")
