"""Reading a released model folder (tabular or narrative): its files present, its metadata, and
the schema it was trained with, checked against the hash recorded beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.schema import Schema


def read_model_folder(folder: Path, files: Mapping[str, str], what: str) -> tuple[dict[str, Any], Schema]:
    """``files`` names the folder's ``meta`` JSON and ``schema`` YAML among the others it needs."""
    missing = [name for name in files.values() if not (folder / name).exists()]
    if missing:
        raise InputError(f"{folder}: not a saved {what} (missing {missing}); pass the model folder "
                         f"written by a run (e.g. runs/demo/model).")
    meta = json.loads((folder / files["meta"]).read_text(encoding="utf-8"))
    schema = Schema.load(folder / files["schema"])
    if schema.hash != meta["schema_hash"]:
        raise InputError(f"{folder / files['schema']} does not match the schema the {what} was "
                         f"trained with (hash differs); restore the original schema.yaml.")
    return meta, schema
