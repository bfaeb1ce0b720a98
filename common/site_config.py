"""A site's own settings: where its data and state live, and every privacy parameter of its
releases. They come from the SuperNode's node config (``client.node_config``) or a simulated
hospital, never from the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.privacy.accountant import DEFAULT_MAX_RECORDS, delta_for_bound


@dataclass(frozen=True)
class SiteConfig:
    """``epsilon_total`` caps everything ever released from the site's data file, across runs,
    models and baselines; ``epsilon_tabular`` / ``epsilon_text`` are what one run's tabular
    generator (and, when allowed, its local-only twin) and narrative model may each spend of it.
    Delta is ``delta`` or 1/(10 ``max_records``): a public upper bound on the file's size, never
    its size. ``noise_seed`` seeds the DP noise for reproducible tests and simulations only; a
    deployed site leaves it None (OS entropy) and no node-config key sets it."""

    name: str
    data_path: Path
    schema_path: Path
    state_dir: Path
    bad_rows: str = "reject"
    exclude: bool = False
    epsilon_total: float = 10.0
    epsilon_tabular: float = 3.0
    epsilon_text: float = 3.0
    delta: float | None = None
    max_records: int = DEFAULT_MAX_RECORDS
    max_grad_norm: float = 1.0
    allow_local_only: bool = False
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.bad_rows not in ("reject", "quarantine"):
            raise InputError(f"site {self.name}: bad-rows={self.bad_rows!r}; use 'reject' or 'quarantine'.")
        shares = {"epsilon-tabular": self.epsilon_tabular, "epsilon-text": self.epsilon_text}
        if not self.epsilon_total > 0 or any(not v > 0 for v in shares.values()):
            raise InputError(f"site {self.name}: epsilon-total={self.epsilon_total}, "
                             f"epsilon-tabular={self.epsilon_tabular} and epsilon-text="
                             f"{self.epsilon_text} must all be > 0.")
        if self.delta is not None and not 0 < self.delta < 1:
            raise InputError(f"site {self.name}: delta={self.delta} must lie in (0, 1).")
        if self.max_records < 1 or not self.max_grad_norm > 0:
            raise InputError(f"site {self.name}: max-records={self.max_records} must be >= 1 and "
                             f"max-grad-norm={self.max_grad_norm} > 0.")

    @property
    def site_delta(self) -> float:
        return self.delta if self.delta is not None else delta_for_bound(self.max_records)

    def share(self, family: str) -> float:
        """What one run's model of ``family`` (``tabular``, ``text``) may spend."""
        return {"tabular": self.epsilon_tabular, "text": self.epsilon_text}[family]
