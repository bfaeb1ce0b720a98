"""A site's settings as the SuperNode's ``--node-config`` spells them (never from the server)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.site_config import SiteConfig

# node-config key -> SiteConfig field, for the numbers a site may set
NUMBERS = {"epsilon-total": "epsilon_total", "epsilon-tabular": "epsilon_tabular",
           "epsilon-text": "epsilon_text", "delta": "delta", "max-records": "max_records",
           "max-grad-norm": "max_grad_norm"}
FLAGS = {"exclude": "exclude", "allow-local-only": "allow_local_only"}


def site_config(node_config: Mapping[str, Any]) -> SiteConfig:
    missing = [k for k in ("data-path", "schema-path", "state-dir") if k not in node_config]
    if missing:
        raise InputError(
            f"node config lacks {missing}; start the SuperNode with --node-config "
            f"\"site-name='a' data-path='/data/site.csv' schema-path='/etc/fedsynth/schema.yaml' "
            f"state-dir='/var/lib/fedsynth'\"")
    numbers = {}
    for key, field in NUMBERS.items():
        if key in node_config:
            try:
                value = float(node_config[key])
            except (TypeError, ValueError):
                raise InputError(f"node config {key}={node_config[key]!r} must be a number.")
            numbers[field] = int(value) if field == "max_records" else value
    flags = {field: _flag(key, node_config[key]) for key, field in FLAGS.items() if key in node_config}
    data_path = Path(str(node_config["data-path"]))
    return SiteConfig(name=str(node_config.get("site-name", data_path.stem)), data_path=data_path,
                      schema_path=Path(str(node_config["schema-path"])),
                      state_dir=Path(str(node_config["state-dir"])),
                      bad_rows=str(node_config.get("bad-rows", "reject")), **numbers, **flags)


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise InputError(f"node config {key}={value!r} must be true or false.")
