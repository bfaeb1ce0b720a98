"""Turn a researcher's data into one file per simulated site.

Either a folder with one file per site (``*.csv`` / ``*.parquet``; the file name is the site), or
one pooled file split by a site column (written to a private working folder, never the output).
"""

from __future__ import annotations

import re
from pathlib import Path

from common.data import SUPPORTED_SUFFIXES, read_raw
from common.errors import InputError

MIN_SITE_RECORDS = 20


def site_files_from(data: Path, site_column: str | None, workdir: Path) -> dict[str, Path]:
    if not data.exists():
        raise InputError(f"{data}: not found; --data takes a data file (with --site-column) or a "
                         f"folder with one file per site.")
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
        if len(files) < 2:
            raise InputError(f"{data}: a federation needs at least two site files (*.csv or "
                             f"*.parquet); found {len(files)}.")
        return {p.stem: p for p in files}
    if site_column is None:
        raise InputError(f"{data}: one pooled file needs --site-column COL to split it into sites "
                         f"(or pass a folder with one file per site).")
    raw = read_raw(data)
    if site_column not in raw.columns:
        raise InputError(f"{data}: --site-column '{site_column}' is not a column; columns: "
                         f"{list(raw.columns)}.")
    groups = {str(k): g for k, g in raw.groupby(raw[site_column].fillna("missing"), sort=True)}
    small = {k: len(g) for k, g in groups.items() if len(g) < MIN_SITE_RECORDS}
    if len(groups) < 2 or small:
        raise InputError(f"{data}: splitting by '{site_column}' gives {len(groups)} site(s)"
                         + (f", of which {small} have fewer than {MIN_SITE_RECORDS} records" if small else "")
                         + "; choose a coarser site column (e.g. NEISS Stratum, not PSU).")
    files = {}
    for value, group in groups.items():
        name = "site-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", value)
        files[name] = workdir / f"{name}.csv"
        group.to_csv(files[name], index=False)
    return files
