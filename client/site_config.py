"""A site's settings, read from the SuperNode's ``--node-config`` (never from the server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError


@dataclass(frozen=True)
class SiteConfig:
    name: str
    data_path: Path
    schema_path: Path
    state_dir: Path
    bad_rows: str = "reject"
    exclude: bool = False
    epsilon_tabular: float = 3.0
    epsilon_text: float = 3.0  # the narrative model's own budget, in the same ledger
    delta: float | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SiteConfig:
        missing = [k for k in ("data-path", "schema-path", "state-dir") if k not in node_config]
        if missing:
            raise InputError(
                f"node config lacks {missing}; start the SuperNode with --node-config "
                f"\"site-name='a' data-path='/data/site.csv' schema-path='/etc/fedsynth/schema.yaml' "
                f"state-dir='/var/lib/fedsynth'\"")
        bad_rows = str(node_config.get("bad-rows", "reject"))
        if bad_rows not in ("reject", "quarantine"):
            raise InputError(f"node config bad-rows={bad_rows!r}; use 'reject' or 'quarantine'.")
        try:
            epsilon = float(node_config.get("epsilon-tabular", 3.0))
            epsilon_text = float(node_config.get("epsilon-text", 3.0))
            delta = None if "delta" not in node_config else float(node_config["delta"])
        except (TypeError, ValueError):
            raise InputError("node config epsilon-tabular, epsilon-text and delta must be numbers.")
        if epsilon <= 0 or epsilon_text <= 0 or (delta is not None and not 0 < delta < 1):
            raise InputError(f"node config epsilon-tabular={epsilon} and epsilon-text="
                             f"{epsilon_text} must be > 0 and delta in (0, 1).")
        return cls(name=str(node_config.get("site-name", Path(str(node_config["data-path"])).stem)),
                   data_path=Path(str(node_config["data-path"])),
                   schema_path=Path(str(node_config["schema-path"])),
                   state_dir=Path(str(node_config["state-dir"])),
                   bad_rows=bad_rows,
                   exclude=bool(node_config.get("exclude", False)),
                   epsilon_tabular=epsilon, epsilon_text=epsilon_text, delta=delta)
