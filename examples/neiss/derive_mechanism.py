"""Derive an injury-mechanism label for the NEISS sample from its narrative and product fields.

NEISS has no mechanism field, and the sample's ``injury_mechanism`` column was extracted by a
language model (237 free-text values, not gold). fedsynth needs one categorical label with the
simulator's 14 classes, so this module derives it with ordered, readable rules: each rule lists
phrases (regular expressions) to look for in the upper-case narrative and/or in the NEISS product
names (``Product_1..3``); the first rule that matches wins, and its id is written next to the
label so every label can be traced to the rule that produced it.

Rule order encodes precedence, roughly as in the CDC external-cause matrix: firearm, drowning and
transport first (a fall from a bicycle is a pedal-cyclist injury), then animal bites, burns and
machinery, objects falling onto the patient (struck by, not a fall), falls, cuts, being struck or
striking against something, then weak fall-backs (a laceration with no mechanism word is taken as
a cut; a product such as STAIRS with none as a fall). Deliberate simplifications, stated so that
users can change them: powered machines and power tools (lawn mowers, chain saws, table saws) are
``machinery`` whatever the wound (the CDC matrix files mowers and powered hand tools under
cut/pierce); a finger caught or slammed in a door, and a bite by another person, are
``struck_by_against``; off-road vehicles (ATVs, golf carts) are ``other``.

Run ``python examples/neiss/derive_mechanism.py`` to rebuild ``neiss_1k.csv`` from
``neiss_sample_1k.csv``: the original columns and values unchanged, plus ``mechanism`` and
``mechanism_rule``. The output is deterministic (same input, same bytes).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "neiss_sample_1k.csv"
OUTPUT = HERE / "neiss_1k.csv"
PRODUCT_COLUMNS = ("Product_1", "Product_2", "Product_3")

# The label's classes: the same list, in the same order, as the simulator's mechanism label.
MECHANISMS: tuple[str, ...] = (
    "fall", "struck_by_against", "cut_pierce", "motor_vehicle_occupant", "motorcyclist",
    "pedal_cyclist", "pedestrian", "overexertion", "fire_burn", "bite_sting", "firearm",
    "drowning", "machinery", "other",
)
FALLBACK_RULE = "other.no_rule"


def _any(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


@dataclass(frozen=True)
class Rule:
    """One labelling rule: matches when a narrative phrase or a product name matches.

    ``narrative`` and ``product`` are alternatives (regexes; a product pattern is tested against
    each of Product_1..3). ``unless`` phrases veto the rule for text that looks like the
    mechanism but is not (an exercise bike is not a pedal cycle; a knife that slipped is not a
    fall).
    """

    rule_id: str
    mechanism: str
    narrative: tuple[str, ...] = ()
    product: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str] | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"rule {self.rule_id}: unknown mechanism {self.mechanism!r}")
        if not self.narrative and not self.product:
            raise ValueError(f"rule {self.rule_id}: needs narrative or product patterns")
        compiled = (_any(self.narrative), _any(self.product), _any(self.unless))
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, narrative: str, products: Sequence[str]) -> bool:
        said, named, veto = self._compiled
        if veto is not None and veto.search(narrative):
            return False
        if said is not None and said.search(narrative):
            return True
        return named is not None and any(named.search(p) for p in products)


# Narratives drop punctuation and often glue words together ("LEGSTRIPPED", "STEPHIT"), so
# distinctive words are matched anywhere; short or ambiguous ones (CUT, BIT, TRIP) need a word
# boundary on the side where they could be part of another word (ACUTE, ORBITAL, STRIP).
_OBJECT = (r"(TV|TELEVISION|DRESSER|FURNITURE|SHELF|SHELVES|CABINET|BOX|MIRROR|DOOR|GATE|TABLE|"
           r"CHAIR|BOOKCASE|WEIGHT|BAR|BARBELL|DUMBBELL|ROCK|TREE|BRANCH|BICYCLE|BIKE|IT|OBJECT|"
           r"ITEM|POT|PAN|GLASS|BOTTLE|LID|SIGN|POLE|HEADBOARD|STOVE|REFRIGERATOR|FRIDGE|WASHER|"
           r"DRYER|COUCH|SOFA|DESK|PIANO|SAFE|TOOLBOX)S?")
_BODY_PART = r"(FOOT|FEET|TOES?|HANDS?|FINGERS?|THUMB|HEAD|LEGS?|SHIN|KNEES?|CHEST|ARMS?)"
_PATIENT_FELL = (r"SLIPPED", r"TRIPPED", r"\bFALL\b", r"FELL (OFF|FROM|DOWN|OUT|TO)\b",
                 r"ROLLED OFF")

RULES: tuple[Rule, ...] = (
    # --- rare, high-precedence mechanisms --------------------------------------------------------
    Rule("firearm.gunshot", "firearm",
         narrative=(r"\bGSW\b", r"GUN ?SHOT WOUND", r"FIREARM",
                    r"SHOT (WITH|BY) (AN? |THE )?(GUN|RIFLE|PISTOL|HANDGUN|SHOTGUN)",
                    r"\b(BB|PELLET|AIRSOFT|AIR) ?(GUN|RIFLE|PISTOL)"),
         product=(r"^OTHER GUNS OR FIREARMS$", r"^GUNS, NOT SPECIFIED$", r"^GUNPOWDER OR AMMUNITION$",
                  r"^GAS, AIR OR SPRING-OPERATED GUNS$", r"^BB'S OR PELLETS$"),
         unless=(r"HEARD GUN ?SHOTS", r"(NAIL|GLUE|STAPLE) GUN")),
    Rule("drowning.submersion", "drowning",
         narrative=(r"DROWN", r"SUBMERS", r"UNDER ?WATER FOR",
                    r"FOUND (FACE ?DOWN|UNRESPONSIVE) IN (THE |A )?(POOL|TUB|BATHTUB|WATER|POND)")),
    # --- transport: the road user, before the fall or blow that followed -------------------------
    Rule("motorcyclist.motorcycle", "motorcyclist",
         narrative=(r"MOTORCYCL", r"MOTOR ?BIKE", r"DIRT ?BIKE", r"MINI ?BIKE", r"\bMOPED"),
         product=(r"^LICENSED TWO-WHEELED MOTOR VEHICLES$", r"^MINIBIKES",
                  r"^TWO-WHEELED, POWERED, OFF-ROAD VEHICLES$", r"^MOPEDS OR POWER-ASSISTED")),
    Rule("pedal_cyclist.bicycle", "pedal_cyclist",
         narrative=(r"BICYCL", r"CYCLIST", r"\bBIKE", r"TRICYCLE", r"\bBMX\b"),
         product=(r"^BICYCLES", r"^MOUNTAIN OR ALL-TERRAIN BICYCLES", r"^TRICYCLES$"),
         unless=(r"(EXERCISE|STATIONARY|SPIN|DIRT|MOTOR|MINI|ELECTRIC) ?BIKE", r"BIKE RACK",
                 r"BI(KE|CYCLE) (FELL|TIPPED)",
                 r"(FELL|TRIPPED) (AGAINST|ONTO|ON|OVER) (AN? |THE |HIS |HER )?BI(KE|CYCLE)")),
    Rule("pedestrian.struck_by_vehicle", "pedestrian",
         narrative=(r"PEDESTRIAN", r"\bPED\b.{0,5}\bVS\b",
                    r"(HIT|STRUCK|RUN OVER|RAN OVER|KNOCKED DOWN) BY ?(AN? |THE )?"
                    r"(CAR|VEHICLE|TRUCK|BUS|SUV|VAN|AUTO)")),
    Rule("motor_vehicle_occupant.crash", "motor_vehicle_occupant",
         narrative=(r"\bMVC\b", r"\bMVA\b", r"MOTOR VEHICLE (CRASH|COLLISION|ACCIDENT)",
                    r"\b(CAR|AUTO|VEHICLE|TRUCK) (ACCIDENT|CRASH|WRECK|COLLISION)",
                    r"(DRIVER|PASSENGER) (OF|IN) (AN? |THE )?(CAR|VEHICLE|TRUCK|VAN|SUV)\b",
                    r"RESTRAINED (DRIVER|PASSENGER)"),
         product=(r"^MOTOR VEHICLES OR PARTS",)),
    # Off-road vehicles are transport but none of the 14 classes: named here so that a rider
    # thrown from an ATV does not become a fall.
    Rule("other.off_road_vehicle", "other",
         narrative=(r"\bATV\b", r"(4|FOUR) ?WHEELER", r"GOLF CART", r"GO ?-?KART", r"GO ?-?CART",
                    r"SNOWMOBILE", r"DUNE BUGGY", r"\bUTV\b"),
         product=(r"^ALL TERRAIN VEHICLES", r"^ALL TERR\. VEH", r"^GOLF CARTS", r"^GO-CARTS$",
                  r"^DUNE BUGGIES", r"^UTILITY VEHICLES$", r"^SNOWMOBILES")),
    # --- animals, heat, machines -----------------------------------------------------------------
    Rule("bite_sting.animal", "bite_sting",
         narrative=(r"\bBITTEN\b", r"\bSTUNG\b", r"\bSTING\b", r"WASP", r"HORNET",
                    r"\b(DOG|CAT|ANIMAL|HORSE|SNAKE|SPIDER|RAT|HAMSTER|FERRET)S? (BITE|BIT|ATTACK)",
                    r"\bBIT (HIM|HER|PT|PATIENT)\b"),
         product=(r"^INSECT INDUCED INJURIES$",),
         unless=(r"BY (AN)?OTHER (CHILD|KID|PERSON|STUDENT)", r"HUMAN BITE")),
    Rule("fire_burn.heat", "fire_burn",
         narrative=(r"\bBURN(S|T|ED|ING)?\b", r"SCALD", r"FLAME", r"\bON FIRE\b", r"HOUSE FIRE",
                    r"\bFIREWORK", r"BOILING", r"STEAM",
                    r"HOT (WATER|OIL|GREASE|COFFEE|TEA|SOUP|STOVE|PAN|POT|SURFACE|PLATE|IRON|GRILL|"
                    r"BULB|LIQUID|FOOD)"),
         product=(r"^FIREWORKS$", r"^HOT WATER$"),
         unless=(r"BURNING (PAIN|SENSATION)", r"(CARPET|RUG|ROPE|FRICTION|SUN) ?BURN",
                 r"(ELECTRICAL|CHEMICAL) BURN")),
    Rule("machinery.powered", "machinery",
         narrative=(r"LAWN ?MOWER", r"\bMOWER", r"CHAIN ?SAW", r"(TABLE|CIRCULAR|BAND|MITER|POWER) SAW",
                    r"TRACTOR", r"LOG SPLITTER", r"WOOD ?CHIPPER", r"SNOW ?BLOWER", r"\bTILLER",
                    r"FORKLIFT", r"\bLATHE\b", r"\bAUGER", r"CONVEYOR", r"MACHINERY",
                    r"\bDRILL(ED|ING)?\b", r"GRINDER", r"NAIL GUN", r"WEED ?EATER",
                    r"HEDGE TRIMMER", r"LEAF BLOWER"),
         unless=(r"(WEIGHT|EXERCISE|VENDING|WASHING) MACHINE", r"FELL", r"FALL", r"TRIPPED",
                 r"SLIPPED (ON|OFF|IN|DOWN)")),
    # --- something fell or was dropped onto the patient (before falls: TV FELL ON PATIENT) -------
    Rule("struck_by_against.falling_object", "struck_by_against",
         narrative=(_OBJECT + r" (FELL|FALLING|TIPPED|TIPPED OVER|FELL OVER|CAME DOWN|COLLAPSED) "
                    r"(ON|ONTO|AND (HIT|STRUCK|LANDED))",
                    r"FELL ON TOP OF",
                    r"DROPPED .{0,40}\b(ON|ONTO|ONTOP OF)\b.{0,25}" + _BODY_PART),
         unless=_PATIENT_FELL),
    # A knife or tool that slipped is a cut, not a fall of the patient.
    Rule("cut_pierce.tool_slipped", "cut_pierce",
         narrative=(r"(KNIFE|BLADE|TOOL|\bIT|THEY|SCISSORS|CLIPPERS|TOP|LID|OPENER) ?SLIPPED",
                    r"SLIPPED (AND )?(CUT|SLICED)", r"SLIPPED CUTTING"),
         unless=(r"FELL", r"FALL")),
    # --- falls -----------------------------------------------------------------------------------
    Rule("fall.narrative", "fall",
         narrative=(r"FELL(?! ?ASLEEP)", r"(?<!PREVENTING )FALL(?!ING)", r"(?<!FROM )FALLING",
                    r"\bFEL (FROM|OFF|DOWN|ON|TO|OUT)\b", r"SLIP(?!PER)", r"TRIPPED", r"\bTRIP\b",
                    r"TRIPPING", r"STUMBLED", r"LOST (HIS |HER )?(BALANCE|FOOTING)",
                    r"MISS?-? ?STEPP?ED", r"MISSED (A |THE )?STEP",
                    r"\b[GST]DF\b",  # ground-level fall, slip/trip and fall
                    r"FOOS[HA]",  # fall on outstretched hand
                    r"ROLLED (OFF|OUT OF)\b", r"FOUND (DOWN|ON THE FLOOR)", r"THROWN (OFF|FROM)",
                    r"JUMP(ED|ING)? (FEET )?(DOWN )?(OFF|FROM)", r"KNOCKED DOWN", r"\bWENT DOWN\b",
                    r"(PULLED|KNOCKED|PUSHED) (HER|HIM|PT|PATIENT) (DOWN|OVER|OFF)",
                    r"HIT THE (FLOOR|GROUND)",
                    r"(HIT|STRUCK) (HIS |HER )?HEAD ?(ON|ONTO|AGAINST) (THE )?([A-Z]+ )?(FLOOR|GROUND)",
                    r"(JUMPED|JUMPING|DOVE|DIVED|DIVING) (IN|INTO) (THE |A )?([A-Z]+ )?"
                    r"(POOL|WATER|LAKE|RIVER|OCEAN|POND|SHALLOW)")),
    # --- cuts and piercing: a sharp object or a cut is named -------------------------------------
    Rule("cut_pierce.sharp_object", "cut_pierce",
         narrative=(r"(?<!NO )\bCUT(S|TING)?\b", r"\bKNIFE", r"KNIVES", r"RAZOR", r"\bBLADE",
                    r"SCISSORS", r"STABB?ED", r"SLICED", r"PUNCTURE", r"STAPLED", r"\bNEEDLE",
                    r"BROKEN GLASS", r"SPLINTER", r"BOX ?CUTTER", r"FISH ?HOOK", r"TOOTH ?PICK",
                    r"STEPPED ON (AN? |SOME )?(RUSTY )?(NAIL|GLASS|TACK|PIN|SCREW)"),
         product=(r"^KNIVES", r"^ELECTRIC OR BATTERY-POWERED KNIVES$", r"^MANUAL SCISSORS$",
                  r"^SCISSORS, NOT SPECIFIED$", r"RAZORS OR SHAVERS", r"^NAILS, SCREWS",
                  r"^PINS AND NEEDLES$", r"^HYPODERMIC NEEDLES", r"^HAND SAWS$", r"^HACKSAWS$",
                  r"^SLICERS AND CHOPPERS$", r"^HATCHETS OR AXES$", r"^ICE PICKS$"),
         unless=(r"RING CUT OFF", r"CUT (THE |HIS |HER )?RING OFF",
                 r"CUTTING (THE )?(GRASS|LAWN|HAIR)")),
    # --- struck by or against a person or object -------------------------------------------------
    Rule("struck_by_against.blow", "struck_by_against",
         narrative=(r"STRUCK", r"HIT\b", r"HITS\b", r"HITTING", r"\bKICKED", r"\bKICK\b", r"PUNCH",
                    r"ASSAULT", r"\bBUMPED", r"BANGED", r"\bRAN INTO\b", r"WALKED INTO", r"COLLID",
                    r"COLLISION", r"TACKLE", r"ELBOWED", r"HEAD ?BUTT", r"HEAD ?TO ?HEAD",
                    r"JAMMED", r"SMASHED", r"SLAMM(ED|ING)", r"\bSHUT\b", r"PINCHED", r"CRUSH",
                    r"STUBBED", r"POKED", r"SANDWICHED", r"PINNED", r"\bFIGHT", r"ALTERCATION",
                    r"CLOSED .{0,20}\b(IN|ON) (A |THE )?(DOOR|DRAWER)", r"CLOSED (A |THE )?DOOR ON",
                    r"CAUGHT .{0,20}\b(IN|BETWEEN|UNDER)\b", r"HUNG IN", r"THROWN AT",
                    r"PUSHED (INTO|AGAINST)", r"LANDED (ON|ONTO) HIM\b",
                    r"LANDED ON TOP OF (HIM|HER)\b", r"BLOCKED .{0,15}(PUCK|BALL|SHOT)",
                    r"CATCHING .{0,20}BALL", r"STEPPED ON (HIS|HER) (FOOT|TOE|HAND)",
                    r"\bSHOT (IN|TO|AT)\b", r"\bBIT\b.{0,25}\bBY (AN)?OTHER\b",
                    r"BITTEN BY (AN)?OTHER")),
    # --- a wound with no mechanism word: a laceration is most likely a cut -----------------------
    Rule("cut_pierce.laceration_only", "cut_pierce", narrative=(r"\bLACS?\b", r"LACERAT")),
    # --- overexertion: lifting, twisting, sudden strain ------------------------------------------
    Rule("overexertion.strain", "overexertion",
         narrative=(r"LIFTING", r"LIFTED", r"\bLIFT\b", r"PICKING UP", r"PICKED UP", r"CARRYING",
                    r"PUSHING", r"PULLING", r"STRAINED", r"TWIST", r"INVERTED", r"INVERSION",
                    r"MOVING (A |THE |HIS |HER )?(HEAVY|FURNITURE|COUCH|DRESSER|BED|MATTRESS|TV|"
                    r"BOX|REFRIGERATOR|LAUNDRY)",
                    r"ROLLED (HIS |HER |AN |THE |LEFT |RIGHT |L |R )*ANKLE", r"HYPEREXTEN",
                    r"OVEREXTEN", r"OVERUSE", r"OVEREXERT",
                    r"PULLED (A |HIS |HER )?(MUSCLE|HAMSTRING|GROIN|BACK)", r"\bPOP(PED)?\b",
                    r"LANDED (WRONG|AWKWARD|ON (HIS|HER) (ANKLE|FOOT|KNEE|LEG))", r"PLANTED",
                    r"PIVOT", r"SHOVEL", r"BENDING", r"BENT (OVER|DOWN)", r"REACHING", r"THROWING",
                    r"PITCHING", r"SWINGING", r"GAVE OUT", r"STRETCH", r"EXERCIS", r"WORKING OUT",
                    r"WORK ?OUT", r"WEIGHT ?LIFTING", r"NURSEMAID", r"JERKED", r"YANKED",
                    r"GETTING UP (FROM|OUT OF)", r"FELT A? ?(POP|PULL|SNAP)"),
         product=(r"^WEIGHT LIFTING", r"^EXERCISE \(ACTIVITY")),
    # --- weak fall-backs: only the product is known ----------------------------------------------
    Rule("machinery.product_only", "machinery",
         product=(r"MOWERS", r"^CHAIN SAWS$", r"POWER SAWS",
                  r"^(BENCH OR TABLE|BAND|RADIAL ARM|SABRE|OTHER POWER) SAWS$", r"^JIGSAWS$",
                  r"TRACTORS", r"^LOG SPLITTERS$", r"^SNOW THROWERS", r"TILLERS", r"^FORK LIFTS",
                  r"^POWER (LATHES|SANDERS|ROUTERS|JOINTERS|SHAPERS|HEDGE TRIMMERS|LAWN TRIMMERS|"
                  r"LEAF MULCHERS)", r"^OTHER PORTABLE OR STATIONARY POWER TOOLS$",
                  r"^INDUSTRIAL EQUIPMENT$", r"^FARM ", r"^COMBINES", r"AUGERS", r"^NAIL GUNS",
                  r"POWER DRILLS", r"^LAWN TRIMMERS OR EDGERS, POWERED", r"^BRUSHCUTTERS",
                  r"^OTHER POWER GARDEN TOOLS$", r"^LEAF BLOWERS$", r"^HOISTS, LIFTS, JACKS")),
    Rule("fall.product_only", "fall",
         product=(r"^STAIRS OR STEPS$", r"LADDERS", r"^STEP STOOLS$", r"^TRAMPOLINES$",
                  r"^MONKEY BARS", r"^SLIDES OR SLIDING BOARDS$", r"^SWINGS OR SWING SETS$",
                  r"^PORCHES, BALCONIES", r"^RAMPS OR LANDINGS$", r"^HANDRAILS", r"^BUNK BEDS$",
                  r"PLAYGROUND EQUIPMENT", r"^SCAFFOLDING$")),
)


def classify(narrative: str, products: Sequence[str]) -> tuple[str, str]:
    """The mechanism and the id of the first rule that matches; ``other`` when none does."""
    text = " ".join(narrative.upper().split())
    names = [p.strip().upper() for p in products if p and p.strip()]
    for rule in RULES:
        if rule.matches(text, names):
            return rule.mechanism, rule.rule_id
    return "other", FALLBACK_RULE


def derive(source: Path, output: Path) -> dict[str, int]:
    """Write ``output``: every row of ``source`` unchanged plus ``mechanism`` and ``mechanism_rule``.

    Rows are read and written as text with the csv module (no type guessing), so every original
    cell keeps its exact value; lines end in LF whatever the source used. Returns label counts.
    """
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    narrative_at = header.index("Narrative")
    product_at = [header.index(c) for c in PRODUCT_COLUMNS]
    counts = dict.fromkeys(MECHANISMS, 0)
    with output.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*header, "mechanism", "mechanism_rule"])
        for row in rows:
            mechanism, rule_id = classify(row[narrative_at], [row[i] for i in product_at])
            counts[mechanism] += 1
            writer.writerow([*row, mechanism, rule_id])
    return counts


def main() -> None:
    counts = derive(SOURCE, OUTPUT)
    print(f"wrote {OUTPUT} ({sum(counts.values())} rows)")
    for mechanism, n in counts.items():
        print(f"  {mechanism:24s} {n:4d}")


if __name__ == "__main__":
    main()
