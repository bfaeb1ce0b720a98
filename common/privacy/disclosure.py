"""The small-number rules for what a site releases besides DP outputs (CONTRACT.md, "Small
numbers"): sizes rounded to a multiple of ten, counts under ten written "<10", cells under ten
suppressed. Exact sizes would let a reader subtract one release from another and find a record.
"""

from __future__ import annotations

MIN_CELL = 10  # the smallest count that may leave a site
SMALL = f"<{MIN_CELL}"


def rounded(count: int) -> int:
    """A size or count as it may leave the site: the nearest multiple of ten (halves up)."""
    return MIN_CELL * ((int(count) + MIN_CELL // 2) // MIN_CELL)


def small_count(count: int) -> int | str:
    """A count of records that may be small (exact copies, shared 8-grams): "<10" under ten,
    else rounded to ten."""
    return SMALL if count < MIN_CELL else rounded(count)
