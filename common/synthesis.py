"""Sampling a synthetic dataset from released global generators (a run's ``model/`` folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from common.errors import InputError
from common.tabular.synthesizer import TabularSynthesizer


def parse_conditions(items: Sequence[str]) -> dict[str, str]:
    """``["mechanism=drowning", "sex=F"]`` -> a dict; values are parsed by column type later."""
    conditions: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--condition {item!r} is not COL=VALUE (e.g. --condition mechanism=drowning).")
        if name.strip() in conditions:
            raise InputError(f"--condition names column '{name.strip()}' twice.")
        conditions[name.strip()] = value.strip()
    return conditions


def synthesize(model_dir: str | Path, n: int, conditions: dict[str, str] | None = None,
               seed: int | None = None) -> pd.DataFrame:
    """``n`` synthetic records from the global tabular generator in ``model_dir``."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model folder not found; pass the model/ folder of a run "
                         f"(e.g. runs/demo/model).")
    synthesizer = TabularSynthesizer.load(model_dir, device="auto")
    return synthesizer.sample(n, conditions=conditions, seed=seed)
