"""A site's part of federated evaluation, without Flower: score the synthetic sets it receives,
and its own local-only baseline, against its held-out data. Only figures leave (CONTRACT METRICS,
small cells suppressed), with the site's privacy spend per model.

The coordinator sends the synthetic sets themselves (Parquet bytes), not a model and a seed to
regenerate them: they are exactly what is published, a few hundred kB, and regenerating the
narratives at every site would cost a language model's inference there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from client.task import SiteTask
from common.metrics.evaluate import evaluate_site, load_synthetic


def evaluate_received(task: SiteTask, received: Mapping[str, bytes], local_only_records: int,
                      seed: int) -> dict[str, Any]:
    """Per variant (the received names, plus ``local_only`` when ``local_only_records`` > 0) the
    site's evaluation (METRICS + plots), and under ``privacy`` its spend per model. A received
    set is checked against the schema like any file: the site does not trust what arrives."""
    splits = task.splits()
    results: dict[str, Any] = {}
    task.folder.mkdir(parents=True, exist_ok=True)
    for variant, data in sorted(received.items()):
        path = task.folder / f".received-{variant}.parquet"
        path.write_bytes(data)
        try:
            synthetic = load_synthetic(path, task.schema)
        finally:
            path.unlink(missing_ok=True)
        results[variant] = evaluate_site(task.schema, splits, synthetic, seed).to_json()
    if local_only_records > 0:
        synthetic = task.local_only_synthetic(local_only_records, seed)
        results["local_only"] = evaluate_site(task.schema, splits, synthetic, seed).to_json()
    results["privacy"] = task.spends()
    return results
