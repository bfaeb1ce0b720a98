"""A run's settings from Flower's ``run_config`` (the keys of ``[tool.flwr.app.config]``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.run_plan import DEFAULT_TABULAR_KIND
from server.federation import FederationSettings


def settings_from_run_config(config: Mapping[str, Any]) -> FederationSettings:
    schema_path = str(config.get("schema-path", ""))
    if not schema_path:
        raise InputError("run config schema-path is empty: pass the consortium schema, e.g. "
                         "flwr run . fed --run-config \"schema-path='/etc/fedsynth/schema.yaml'\"")
    tabular_config = _json(config, "tabular-config", "{}")
    text_config = _json(config, "text-config", "null")  # null: a run without narratives
    return FederationSettings(
        schema_path=Path(schema_path), run_dir=Path(str(config.get("run-dir", "runs/federation"))),
        run=str(config.get("run-name", "run")), kind=str(config.get("generator", DEFAULT_TABULAR_KIND)),
        rounds=int(config.get("rounds", 5)), local_steps=int(config.get("local-steps", 50)),
        seed=int(config.get("seed", 0)), tabular_config=tabular_config,
        min_sites=int(config.get("min-sites", 1)), quorum=int(config.get("quorum", 1)),
        handshake_timeout_s=float(config.get("handshake-timeout-s", 120)),
        round_timeout_s=float(config.get("round-timeout-s", 600)),
        round_retries=int(config.get("round-retries", 1)),
        max_update_norm=float(config.get("max-update-norm", 1e3)),
        resume=bool(config.get("resume", False)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        synthetic_records=int(config.get("synthetic-records", 0)),
        local_only=bool(config.get("local-only", False)),
        text_config=text_config, text_rounds=int(config.get("text-rounds", 0)),
        text_local_steps=int(config.get("text-local-steps", 0)),
        narrated_records=int(config.get("narrated-records", 0)) or None,
        public_corpus=_path(config, "public-corpus"), public_schema=_path(config, "public-schema"))


def _path(config: Mapping[str, Any], key: str) -> Path | None:
    value = str(config.get(key, "")).strip()
    return Path(value) if value else None


def _json(config: Mapping[str, Any], key: str, default: str) -> Any:
    try:
        return json.loads(str(config.get(key, default)))
    except json.JSONDecodeError as exc:
        raise InputError(f"run config {key} is not JSON ({exc}).") from None
