"""Federated evaluation, the last phase of a run: the coordinator announces the release by its
SHA-256, then sends it; each site scores it (and, where it allows one, its local-only baseline;
when the coordinator has one, the text floor: released records with narratives written by
the public warm-start model alone) against its held-out data, once, and only figures and its DP
accounting come back. Figures are checkpointed as they arrive: a site scores a release once, so a
restarted coordinator asks only the sites it has no figures from. A site that fails is left out of
the report with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.serverapp import Grid
from tqdm import tqdm

from common.stages.base import Payload
from server.checkpoint import RunState
from server.messaging import send

log = logging.getLogger("fedsynth.server")


def evaluate_at_sites(grid: Grid, nodes: dict[int, str], plan_json: str, release: bytes,
                      sha256: str, local_only_records: int, seed: int, timeout_s: float,
                      state: RunState, save: Callable[[], None],
                      text_floor: bytes | None = None) -> dict[str, dict]:
    """Per site name: ``{"scores": {variant: METRICS + plots}, "spend": ...}``. ``text_floor``:
    Parquet bytes of released records (all or some) with the narrative model's narratives at
    epsilon 0 (``common.fileio.table_bytes``, like ``release``), sent as ``blobs["text_floor"]``;
    each site scores its text figures under ``scores["text_floor"]`` (``baselines.text_floor``)."""
    pending = {node: name for node, name in nodes.items() if name not in state.evaluations}
    announced = send(grid, pending, "query.announce",
                     Payload(values={"plan": plan_json, "sha256": sha256}), timeout_s,
                     group="release-announce", names=nodes)
    blobs = {"release": release} if text_floor is None else {"release": release, "text_floor": text_floor}
    request = Payload(values={"plan": plan_json, "seed": seed, "local_only_records": local_only_records},
                      blobs=blobs)
    asked = [n for n in pending if n in announced]
    with tqdm(total=len(asked), desc="sites evaluated", unit="site", leave=False, disable=None) as bar:
        scored = send(grid, asked, "evaluate.release", request, timeout_s, group="release-evaluate",
                      names=nodes, on_reply=bar.update)
    state.evaluations.update({nodes[node]: reply.values for node, reply in scored.items()})
    save()
    missing = sorted(set(nodes.values()) - set(state.evaluations))
    if missing:
        log.warning("evaluation: no figures from %s; the report leaves them out", missing)
    return {name: state.evaluations[name] for name in sorted(nodes.values()) if name in state.evaluations}
