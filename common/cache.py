"""Where fedsynth keeps what it can rebuild (converted base models, compiled JAX programs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """``$FEDSYNTH_CACHE``, else ``fedsynth-cache`` in the system's temporary folder."""
    return Path(os.environ.get("FEDSYNTH_CACHE") or Path(tempfile.gettempdir()) / "fedsynth-cache")
