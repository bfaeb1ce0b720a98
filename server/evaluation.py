"""Federated evaluation, the last phase of a run: the synthetic sets go to every site, each site
scores them (and its own local-only baseline) against its held-out data, and only figures and
the site's privacy spend come back (``client.evaluation``). A site that fails is left out of the
report with a warning; the run does not stop for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord, RecordDict
from flwr.serverapp import Grid

from common.fileio import table_bytes
from common.text.canary import Canary
from common.text.narrative_model import NarrativeModel
from server.messaging import send

log = logging.getLogger("fedsynth.server")


def evaluate_at_sites(grid: Grid, nodes: dict[int, str], synthetic: dict[str, pd.DataFrame],
                      plan: dict[str, Any], local_only_records: int, seed: int,
                      timeout_s: float) -> dict[str, dict[str, Any]]:
    """Per site: its evaluation of each synthetic set (``federated``, ``centralized``...) and of
    its local-only baseline when ``local_only_records`` > 0, plus its ``privacy`` spend."""
    content = RecordDict({
        "synthetic": ConfigRecord({name: table_bytes(frame) for name, frame in synthetic.items()}),
        "plan": ConfigRecord(plan),
        "evaluate": ConfigRecord({"local_only_records": local_only_records, "seed": seed})})
    replies = send(grid, nodes, "evaluate.tabular", content, timeout_s)
    results = {site: json.loads(str(reply.content["evaluation"]["json"]))
               for site, reply in sorted(replies.items())}
    missing = sorted(set(nodes.values()) - set(results))
    if missing:
        log.warning("evaluation: no figures from %s; the report leaves them out", missing)
    return results


def canary_exposure_bits(model: NarrativeModel, spec_path: str | Path, seed: int) -> tuple[str, float]:
    """Simulation only: the site whose training narratives carried planted canaries
    (``simulation.canaries``) and their mean exposure in the global narrative model, in bits."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    bits = [model.canary_exposure(c["record"], c["narrative"], Canary(c["secret"]),
                                  int(spec["candidates"]), seed=seed + i)
            for i, c in enumerate(spec["canaries"])]
    return str(spec["site"]), float(np.mean(bits))
