"""Terse ED notes written from a record, in the style of real triage/ED narratives.

Real notes (e.g. NEISS) are upper case, abbreviated ("45YOM", "S/P GLF", "C/O", "DX", "FX",
"+LOC", "BIBA", "ETOH"), vary in phrasing and order, carry typos and redactions ("***"). Every
note states its record's mechanism and body region in words from the schema's public synonyms,
a key finding, and the disposition, so that narrative/record consistency can be checked with
public word lists. Typos never touch those words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simulation.ed_schema import BODY_REGION_SYNONYMS, MECHANISM_SYNONYMS
from simulation.severity import hypotension_limit, tachycardia_limit

# Region words used as locations ("LAC TO {loc}"); a subset of the schema's region synonyms.
LOCATIONS: dict[str, tuple[str, ...]] = {
    "head": ("HEAD", "SCALP", "FOREHEAD", "OCCIPUT"),
    "face": ("FACE", "LIP", "CHIN", "NOSE", "EYEBROW", "CHEEK", "JAW"),
    "neck": ("NECK", "THROAT"),
    "thorax": ("CHEST", "RIB", "RIBS", "STERNUM", "CHEST WALL"),
    "abdomen": ("ABDOMEN", "ABD", "FLANK"),
    "spine": ("BACK", "LOW BACK", "LUMBAR SPINE", "C-SPINE", "L-SPINE"),
    "upper_extremity": ("ARM", "HAND", "WRIST", "FINGER", "ELBOW", "SHOULDER", "FOREARM",
                        "THUMB", "CLAVICLE", "HUMERUS"),
    "lower_extremity": ("LEG", "HIP", "KNEE", "ANKLE", "FOOT", "FEMUR", "TIBIA", "TOE", "THIGH",
                        "PELVIS"),
    "multiple": ("MULTIPLE INJURIES", "POLYTRAUMA", "MULTIPLE SITES", "MULTISYSTEM TRAUMA"),
}
_SIDED = ("upper_extremity", "lower_extremity")
_SIDES = ("L ", "R ", "LT ", "RT ", "LEFT ", "RIGHT ")

# How each mechanism is told. {loc} is the body-region word, {place} a place phrase.
EVENTS: dict[str, tuple[str, ...]] = {
    "fall": ("S/P GLF {place}", "TRIPPED AND FELL {place}", "SLIPPED ON WET FLOOR {place}",
             "FELL FROM LADDER ~8FT", "FELL DOWN {n} STAIRS {place}", "FALL {place}",
             "FOUND DOWN {place}", "SLIPPED ON ICE, FELL ONTO {loc}", "FFH {place}"),
    "struck_by_against": ("STRUCK BY BALL", "RAN INTO DOOR {place}",
                          "WALKED INTO POLE", "STRUCK AGAINST TABLE {place}",
                          "COLLIDED WITH ANOTHER PLAYER", "STRUCK BY FALLING BOX {place}",
                          "HIT WITH OBJECT {place}"),
    "cut_pierce": ("CUT {loc} WITH KNIFE {place}", "CUT ON BROKEN GLASS {place}",
                   "SLICED {loc} ON BOX CUTTER", "CUT {loc} WHILE COOKING",
                   "STEPPED ON GLASS {place}", "PIERCED {loc} ON METAL EDGE"),
    "motor_vehicle_occupant": ("RESTRAINED DRIVER IN MVC", "UNRESTRAINED PASSENGER MVC",
                               "MVC ~{mph} MPH, +AIRBAG", "MVA ROLLOVER", "CAR CRASH ON HWY",
                               "REAR-ENDED AT LIGHT", "T-BONED ON DRIVER SIDE",
                               "MOTOR VEHICLE COLLISION"),
    "motorcyclist": ("MOTORCYCLE CRASH ~{mph} MPH", "HELMETED MCC", "UNHELMETED MCC",
                     "LAID DOWN MOTORBIKE", "DIRT BIKE CRASH", "MOPED VS CURB",
                     "MOTORCYCLIST, LOST CONTROL"),
    "pedal_cyclist": ("BICYCLE CRASH", "WENT OVER HANDLEBARS OF BICYCLE", "BICYCLIST VS CAR",
                      "BMX CRASH {place}", "MOUNTAIN BIKE CRASH", "CYCLIST, LOST CONTROL",
                      "PEDAL BIKE CRASH, NO HELMET"),
    "pedestrian": ("PED VS AUTO", "PEDESTRIAN HIT BY CAR", "HIT BY CAR WHILE CROSSING",
                   "PED VS CAR ~{mph} MPH", "RUN OVER BY REVERSING CAR", "PVA"),
    "overexertion": ("LIFTING HEAVY BOX {place}", "TWISTED {loc} {place}",
                     "STRAINED {loc} WHILE LIFTING", "OVERUSE {loc} PAIN", "PULLED {loc} {place}",
                     "OVEREXERTION {place}"),
    "fire_burn": ("BURNED BY HOT GREASE {place}", "SCALDED WITH HOT WATER {place}",
                  "SPILLED HOT WATER ON SELF", "HOUSE FIRE", "FLAME BURN FROM BONFIRE",
                  "BURNED ON STOVE {place}", "SCALD FROM KETTLE"),
    "bite_sting": ("DOG BITE {place}", "BITTEN BY NEIGHBOURS DOG", "CAT BITE", "BEE STING",
                   "STUNG BY WASP {place}", "BITTEN BY DOG TO {loc}", "SPIDER BITE"),
    "firearm": ("GSW TO {loc}", "GUNSHOT WOUND", "SHOT WITH HANDGUN", "GSW {place}",
                "ACCIDENTAL DISCHARGE OF RIFLE", "FIREARM INJURY {place}"),
    "drowning": ("NEAR DROWNING {place}", "SUBMERSION ~{n} MIN {place}", "FOUND SUBMERGED {place}",
                 "WATER RESCUE {place}", "DROWNING EVENT {place}"),
    "machinery": ("INJURED BY AUGER {place}", "TRACTOR OVERTURNED {place}", "BALER INJURY",
                  "FORKLIFT ACCIDENT {place}", "PTO ENTANGLEMENT {place}",
                  "INJURED ON CONVEYOR {place}", "GRINDER INJURY {place}",
                  "INJURED BY MACHINE {place}", "LATHE ACCIDENT"),
    "other": ("CRUSH INJURY {place}", "CRUSHED BY FURNITURE", "{loc} CAUGHT IN DOOR",
              "PINCHED {loc} {place}", "ELECTRIC SHOCK {place}", "MECHANISM UNKNOWN",
              "UNCLEAR MECHANISM"),
}

# Age-specific tellings, used instead of the general ones (toddlers do not fall off ladders,
# children do not drive). Keys: (mechanism, age band from _age_band).
AGE_EVENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("fall", "under_5"): ("FELL OFF BED", "FELL OFF COUCH", "FELL FROM CHANGING TABLE",
                          "FELL DOWN STAIRS {place}", "TRIPPED WHILE RUNNING {place}",
                          "FELL OFF CHAIR {place}"),
    ("fall", "child"): ("FELL OFF MONKEY BARS {place}", "FELL OFF TRAMPOLINE", "FELL FROM TREE",
                        "TRIPPED WHILE RUNNING {place}", "FELL OFF SKATEBOARD {place}"),
    ("fall", "older"): ("S/P GLF {place}", "TRIPPED OVER RUG {place}", "FOUND DOWN BY FAMILY",
                        "FELL GETTING OUT OF BED", "SLIPPED IN SHOWER", "GLF WITH WALKER {place}",
                        "MECHANICAL FALL {place}"),
    ("struck_by_against", "under_5"): ("RAN INTO DOOR {place}", "STRUCK BY TOY",
                                       "STRUCK AGAINST COFFEE TABLE", "WALKED INTO TABLE EDGE"),
    ("motor_vehicle_occupant", "under_5"): ("MVC, RESTRAINED IN CAR SEAT", "MVC, BACKSEAT",
                                            "UNRESTRAINED PASSENGER MVC", "CAR CRASH"),
    ("motor_vehicle_occupant", "child"): ("BACKSEAT PASSENGER IN MVC", "CAR CRASH ON HWY",
                                          "UNRESTRAINED PASSENGER MVC", "MVA ROLLOVER"),
    ("fire_burn", "under_5"): ("SPILLED HOT WATER ON SELF", "TOUCHED HOT STOVE {place}",
                               "SCALD FROM CUP OF TEA", "GRABBED CURLING IRON, BURNED"),
}
_AGE_BANDS = ((5, "under_5"), (16, "child"), (65, "adult"))


def _age_band(age: int) -> str:
    return next((band for limit, band in _AGE_BANDS if age < limit), "older")


PLACE_PHRASES: dict[str, tuple[str, ...]] = {
    "home": ("AT HOME", "AT HOME", "IN KITCHEN", "IN BATHROOM", "AT HOUSE"),
    "street": ("ON ROAD", "IN STREET", "ON HWY", "ON SIDEWALK"),
    "sports_area": ("AT THE GYM", "AT SOCCER PRACTICE", "DURING GAME", "AT *** PARK"),
    "workplace": ("AT WORK", "ON THE JOB", "AT WORKSITE", "AT ***"),
    "school": ("AT SCHOOL", "DURING RECESS", "AT *** ELEMENTARY"),
    "farm": ("ON FARM", "AT FARM", "ON *** RANCH"),
    "water": ("IN POOL", "AT LAKE", "AT BEACH", "IN RIVER", "AT *** LAKE"),
    "public_place": ("AT STORE", "IN PARKING LOT", "AT RESTAURANT", "AT ***"),
    "other": ("",),
}

FINDINGS: dict[str, tuple[str, ...]] = {
    "fracture": ("{loc} FX", "FX {loc}", "FRACTURE OF {loc}", "CLOSED FX {loc}"),
    "contusion": ("CONTUSION {loc}", "{loc} CONTUSION", "CONT {loc}", "BRUISING TO {loc}"),
    "laceration": ("{n}CM LAC {loc}", "LACERATION TO {loc}", "LAC {loc}", "{loc} LAC"),
    "sprain_strain": ("{loc} SPRAIN", "{loc} STRAIN", "SPRAIN {loc}"),
    "burn": ("2ND DEGREE BURN {loc}", "PARTIAL THICKNESS BURN TO {loc}", "BURN {loc}",
             "SUPERFICIAL BURN {loc}"),
    "concussion": ("CONCUSSION, {loc} INJURY", "{loc} INJURY W/ CONCUSSION", "CONCUSSION {loc}"),
    "dislocation": ("{loc} DISLOCATION", "DISLOCATED {loc}"),
    "internal_organ": ("INTERNAL INJURY {loc}", "{loc} INJURY W/ INTERNAL BLEEDING"),
    "asphyxia": ("HYPOXIA, {loc} INVOLVEMENT", "ASPHYXIA, {loc}"),
    "puncture": ("PUNCTURE WOUND {loc}", "PW TO {loc}", "{loc} PUNCTURE WOUND"),
    "other": ("{loc} PAIN", "{loc} INJURY", "ABRASION {loc}"),
}
# Region-specific wording where the generic one would not be said (bleeds, aspiration).
REGION_FINDINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("internal_organ", "head"): ("CHI W/ SDH", "HEAD INJURY W/ SAH", "ICH AFTER HEAD STRIKE",
                                 "SDH, SCALP HEMATOMA"),
    ("internal_organ", "thorax"): ("PTX", "CHEST INJURY W/ HEMOTHORAX", "PULM CONTUSION, RIBS"),
    ("internal_organ", "abdomen"): ("SPLENIC LAC", "LIVER LAC", "ABD INJURY W/ FREE FLUID"),
    ("asphyxia", "head"): ("ANOXIC HEAD INJURY", "HYPOXIA, HEAD CT PENDING"),
    ("asphyxia", "thorax"): ("ASPIRATION, CHEST XR W/ INFILTRATES", "HYPOXIA, CHEST CLEAR"),
}
# Shorter injury words for polytrauma notes ("POLYTRAUMA W/ FX").
PLURALS = {"fracture": "FX", "contusion": "CONTUSIONS", "laceration": "LACS",
           "sprain_strain": "SPRAINS", "burn": "BURNS", "concussion": "CONCUSSION",
           "dislocation": "DISLOCATION", "internal_organ": "INTERNAL INJURIES",
           "asphyxia": "HYPOXIA", "puncture": "PUNCTURE WOUNDS", "other": "ABRASIONS"}

DISPOSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "discharged": ("D/C HOME", "DISCHARGED HOME", "TREATED AND RELEASED", "T&R", "DC'D HOME"),
    "admitted_ward": ("ADMITTED TO FLOOR", "ADMIT TO WARD", "ADMITTED TO ORTHO",
                      "ADMIT TO MEDICINE"),
    "admitted_icu": ("ADMIT TO ICU", "TO ICU", "ADMITTED TO TICU", "ICU ADMISSION"),
    "operating_room": ("TO OR", "TAKEN TO OR", "EMERGENT SURGERY", "TO THEATRE"),
    "transferred": ("TRANSFERRED TO ***", "XFER TO TRAUMA CENTER", "TRANSFERRED OUT", "XFER"),
    "died_in_ed": ("EXPIRED IN ED", "DIED IN ED", "PRONOUNCED IN ED"),
    "left_ama": ("LEFT AMA", "LAMA", "LEFT AGAINST MEDICAL ADVICE"),
}
ARRIVALS: dict[str, tuple[str, ...]] = {
    "ambulance": ("BIBA", "BIB EMS", "VIA EMS", "BY AMBULANCE"),
    "helicopter": ("FLOWN IN", "VIA AIR MEDICAL", "BIB HELICOPTER", "LIFE FLIGHT"),
    "police": ("BIB POLICE", "BIB PD", "IN POLICE CUSTODY"),
    "private_vehicle": ("BROUGHT BY FAMILY", "POV", "BROUGHT IN BY FRIEND"),
    "walk_in": ("AMBULATORY", "WALKED IN", "SELF PRESENTED"),
}
INTENT_PHRASES: dict[str, tuple[str, ...]] = {
    "assault": ("ASSAULTED", "DURING ALTERCATION", "IN A FIGHT", "DOMESTIC DISPUTE"),
    "self_harm": ("SELF INFLICTED", "INTENTIONAL SELF HARM", "SI ATTEMPT"),
    "undetermined": ("UNCLEAR CIRCUMSTANCES", "UNWITNESSED"),
}
_ALCOHOL = ("+ETOH", "ETOH ON BOARD", "INTOXICATED", "SMELLS OF ETOH")
_DRUGS = ("+DRUGS", "UDS POSITIVE", "ADMITS DRUG USE")
_ANTICOAGULANTS = ("ON ELIQUIS", "ON WARFARIN", "ON BLOOD THINNERS", "ON XARELTO")
_REDACTED = ("PER ***", "WITNESSED BY ***", "FRIEND *** AT BEDSIDE", "PER MOTHER ***")
_TYPO_RATE = 0.02

_WORD = re.compile(r"[A-Z]{5,}")
# Words a typo must never touch: those a consistency check looks for.
_PROTECTED = {word.upper() for phrases in (*MECHANISM_SYNONYMS.values(),
                                           *BODY_REGION_SYNONYMS.values(),
                                           *DISPOSITION_PHRASES.values())
              for phrase in phrases for word in re.findall(r"[A-Za-z]+", phrase)}


class _Draws:
    """Uniform draws taken from the generator in blocks: one numpy call per note, not per word."""

    def __init__(self, rng: np.random.Generator, block: int = 48) -> None:
        self._rng, self._block, self._left = rng, block, []

    def uniform(self) -> float:
        if not self._left:
            self._left = self._rng.random(self._block).tolist()
        return self._left.pop()

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.uniform() * len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return lo + int(self.uniform() * (hi - lo + 1))


def _known(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def _who(age: int, sex: str, d: _Draws) -> str:
    """'45YOM', '45 YOF', '45 Y/O MALE', '18MOM' for infants."""
    if age == 0 or (age == 1 and d.chance(0.6)):
        months = max(1, 12 * age + d.integer(0, 11))
        return d.pick((f"{months}MO{sex}", f"{months} MO {sex}", f"{months} MONTH OLD {sex}"))
    word = "MALE" if sex == "M" else "FEMALE"
    return d.pick((f"{age}YO{sex}", f"{age}YO{sex}", f"{age} YO{sex}", f"{age}Y{sex}",
                   f"{age} Y/O {word}", f"{age}YO {word}"))


def _finding(injury: str, region: str, loc: str, d: _Draws) -> str:
    if region == "multiple":
        return d.pick((f"{loc} W/ {PLURALS[injury]}", f"{PLURALS[injury]}, {loc}"))
    special = REGION_FINDINGS.get((injury, region))
    if special and d.chance(0.7):
        return d.pick(special)
    return d.pick(FINDINGS[injury]).format(loc=loc, n=d.integer(1, 8))


def _signs(record: Mapping[str, Any], region: str, d: _Draws) -> list[str]:
    """Abnormal GCS and vitals, and loss of consciousness, as a note would flag them."""
    value = {k: int(record[k]) if _known(record.get(k)) else None
             for k in ("gcs", "systolic_bp", "heart_rate", "spo2")}
    gcs, sbp, hr, spo2 = value["gcs"], value["systolic_bp"], value["heart_rate"], value["spo2"]
    age = int(record["age"])
    signs = []
    if gcs is not None and gcs < 15:
        signs.append(d.pick((f"GCS {gcs}", f"GCS {gcs}", f"GCS{gcs}")))
    if region == "head":
        if gcs is not None and gcs < 15 or d.chance(0.2):
            signs.append(d.pick(("+LOC", "+LOC", "LOC", "POSITIVE LOC")))
        elif d.chance(0.3):
            signs.append(d.pick(("-LOC", "NO LOC", "DENIES LOC")))
    if sbp is not None and sbp < hypotension_limit(age):
        signs.append(d.pick((f"SBP {sbp}", "HYPOTENSIVE", f"BP {sbp}/P")))
    if hr is not None and hr > tachycardia_limit(age):
        signs.append(d.pick((f"HR {hr}", "TACHY", f"TACHYCARDIC {hr}")))
    if spo2 is not None and spo2 < 92:
        signs.append(d.pick((f"SAT {spo2}%", f"SPO2 {spo2}", "HYPOXIC")))
    return signs


def _typos(text: str, d: _Draws) -> str:
    """Real notes carry typos: swap or drop a letter in a few ordinary words."""
    def maybe(match: re.Match) -> str:
        word = match.group(0)
        if word in _PROTECTED or not d.chance(_TYPO_RATE):
            return word
        i = d.integer(1, len(word) - 3)
        typo = (word[:i] + word[i + 1] + word[i] + word[i + 2:] if d.chance(0.5)
                else word[:i] + word[i + 1:])
        return word if typo in _PROTECTED else typo
    return _WORD.sub(maybe, text)


def _event(record: Mapping[str, Any], loc: str, d: _Draws) -> str:
    """How it happened: an age-appropriate telling of the mechanism, with the place."""
    mechanism, region = record["mechanism"], record["body_region"]
    told = AGE_EVENTS.get((mechanism, _age_band(int(record["age"]))), EVENTS[mechanism])
    # A polytrauma note names no single site in the story, only in the diagnosis.
    events = [e for e in told if region != "multiple" or "{loc}" not in e]
    place = record.get("place")
    place_text = d.pick(PLACE_PHRASES[place]) if _known(place) and d.chance(0.7) else ""
    event = d.pick(events).format(loc=loc, place=place_text, n=d.integer(2, 12),
                                  mph=5 * d.integer(4, 14))
    return "S/P " + event.removeprefix("S/P ") if d.chance(0.3) else event


def _context(record: Mapping[str, Any], loc: str, d: _Draws) -> list[str]:
    """Intent, anticoagulation, substances and pain, when the record has them."""
    parts = []
    intent = record.get("intent")
    if _known(intent) and intent in INTENT_PHRASES:
        parts.append(d.pick(INTENT_PHRASES[intent]))
    if record.get("anticoagulated") and d.chance(0.8):
        parts.append(d.pick(_ANTICOAGULANTS))
    alcohol, drugs = record.get("alcohol"), record.get("drugs")
    if _known(alcohol) and alcohol:
        parts.append(d.pick(_ALCOHOL))
    elif _known(alcohol) and d.chance(0.1):
        parts.append("DENIES ETOH")
    if _known(drugs) and drugs:
        parts.append(d.pick(_DRUGS))
    pain = record.get("pain_score")
    if _known(pain) and pain >= 7 and record["body_region"] != "multiple" and d.chance(0.5):
        parts.append(f"C/O {loc} PAIN {int(pain)}/10")
    return parts


def write_narrative(record: Mapping[str, Any], rng: np.random.Generator) -> str:
    """An ED note for one record (schema column names as keys), deterministic given ``rng``.

    Reads age, sex, mechanism, body_region, injury_type, disposition (required) and, when
    present and known, arrival_mode, intent, place, alcohol, drugs, gcs, vitals, pain_score,
    ct_done and ``anticoagulated`` (a simulator-only fact a note may mention).
    """
    d = _Draws(rng)
    region = record["body_region"]
    loc = d.pick(LOCATIONS[region])
    if region in _SIDED and d.chance(0.5):
        loc = d.pick(_SIDES) + loc

    story = [_who(int(record["age"]), record["sex"], d)]
    arrival = record.get("arrival_mode")
    if _known(arrival) and d.chance(0.5):
        story.append(d.pick(ARRIVALS[arrival]))
    story += [_event(record, loc, d), *_context(record, loc, d), *_signs(record, region, d)]
    if d.chance(0.06):
        story.append(d.pick(_REDACTED))

    dx = d.pick(("DX ", "DX ", "DX: ", "DX- ")) + _finding(record["injury_type"], region, loc, d)
    if _known(record.get("ct_done")) and record["ct_done"] and d.chance(0.4):
        dx += d.pick((", CT DONE", ", CT NEG FOR OTHER INJURY", ", CT OBTAINED"))
    parts = [dx, *story] if d.chance(0.12) else [*story, dx]
    text = d.pick((" ", " ", ", ", " - ")).join(p.strip() for p in parts if p.strip())
    text += d.pick((" ", ", ", ". ")) + d.pick(DISPOSITION_PHRASES[record["disposition"]])
    return _typos(" ".join(text.upper().split()), d)
