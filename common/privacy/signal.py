"""How loud DP-SGD's noise is against the gradient it protects: sigma/B.

A DP-SGD step sums the clipped per-sample gradients (each of norm at most C), adds Gaussian noise
of std ``sigma * C`` to every coordinate of the sum, and divides by the expected batch size
``B = q * n`` (Poisson rate q over n records). Per coordinate, the averaged gradient therefore
carries noise of std ``sigma * C / B``, while the clipped mean gradient itself has norm at most C
(spread over all the trained coordinates). ``sigma / B`` is that noise relative to the clipping
bound: the one number that says whether a plan can learn at all.

Calibration does not fix it: for a fixed epsilon and many steps, sigma grows roughly like
``q * sqrt(steps)``, so sigma/B falls with more records and fewer steps, and with a larger batch
only while sigma is near its floor (below ~1), which is where short runs of small batches sit.
"""

from __future__ import annotations

from common.errors import InputError
from common.tabular.trainer import sample_rate

# Above this, the noise swamps the clipped mean gradient. Li et al. 2022 ("Large language models
# can be strong differentially private learners", ICLR): recipes that work at epsilon 3 run at
# sigma/B ~ 0.001 (batch ~1,024, hundreds of steps). The old quick profile's 4 steps of batch 8
# (SmolLM2, 640 notes a site) sat at ~0.08 and taught the adapter nothing (docs/narratives.md).
MAX_NOISE_PER_BATCH = 0.01


def expected_batch_size(n_records: int, batch_size: int) -> float:
    """``q * n``: the mean size of a Poisson batch at the rate the trainer uses (1/ceil(n/B))."""
    return n_records * sample_rate(n_records, batch_size)


def noise_per_batch(noise_multiplier: float, n_records: int, batch_size: int) -> float:
    """sigma/B: the per-coordinate noise std of the averaged DP-SGD gradient, in units of the
    clipping bound, for ``noise_multiplier`` over Poisson batches of expected size ``q * n``."""
    return noise_multiplier / expected_batch_size(n_records, batch_size)


def check_noise_per_batch(noise_multiplier: float, n_records: int, batch_size: int,
                          limit: float | None = MAX_NOISE_PER_BATCH, *, steps: int | None = None,
                          what: str = "the DP-SGD plan") -> float:
    """sigma/B of the plan; refused (InputError) above ``limit``. ``limit=None`` turns the check
    off (tests, demonstrations of the pipeline that accept an adapter that learns nothing)."""
    ratio = noise_per_batch(noise_multiplier, n_records, batch_size)
    if limit is None:
        return ratio
    if not (isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0):
        raise InputError(f"max_noise_per_batch must be a number > 0 or null (no check), got {limit!r}.")
    if ratio > limit:
        batch = expected_batch_size(n_records, batch_size)
        over = f" over {steps} steps" if steps is not None else ""
        raise InputError(
            f"{what} has sigma/B = {ratio:.3g} (noise multiplier {noise_multiplier:.3g}{over}, "
            f"expected Poisson batch B = {batch:.4g} of {n_records} records), above the limit "
            f"max_noise_per_batch = {limit:g}: every coordinate of the averaged gradient would "
            f"carry noise of {ratio:.3g} x the clipping bound, which swamps the clipped mean "
            f"gradient, so training would spend the budget and learn nothing (working DP "
            f"fine-tuning runs at about 0.001, Li et al. 2022). Fix: raise batch_size (into the "
            f"hundreds; physical_batch_size keeps memory bounded), train on more records, or "
            f"plan fewer steps; max_noise_per_batch = null disables this check.")
    return ratio
