"""private-pgm (``mbi``), imported once with the JAX settings it needs."""

from __future__ import annotations

import warnings
from types import ModuleType

from common.cache import cache_dir


def private_pgm() -> ModuleType:
    """mbi, with JAX in float64 (its estimates stall in float32) and JAX's persistent compilation
    cache under ``cache_dir()/jax``. A fit compiles about 250 small programs and two large ones
    (the estimator's initialisation and its fused steps). The small ones come from the cache in
    any later process; the large ones embed the fit's own measurement queries (the compressed
    cells' weights), so each new fit compiles them again: about 30 s of a 40-60 s fit on 2 cores
    (profiled, benchmarks/RESULTS.md). Imported on first use: JAX takes seconds to load."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="JAX persistent compilation cache is enabled")
        import mbi

    return mbi
