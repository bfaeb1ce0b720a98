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
        return cls(name=str(node_config.get("site-name", Path(str(node_config["data-path"])).stem)),
                   data_path=Path(str(node_config["data-path"])),
                   schema_path=Path(str(node_config["schema-path"])),
                   state_dir=Path(str(node_config["state-dir"])),
                   bad_rows=bad_rows,
                   exclude=bool(node_config.get("exclude", False)))
