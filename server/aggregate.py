"""Averaging the sites' updates with Flower's own record aggregation, weighted by each site's DP
record count (never an exact size). The checks an update passes first are the stage's
(``common.stages.fedavg.update_problem``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords


def weighted_average(updates: Sequence[Mapping[str, np.ndarray]],
                     weights: Sequence[float]) -> dict[str, np.ndarray]:
    """FedAvg: the weighted mean of each named array (weights normalised; none negative)."""
    if not updates or len(weights) != len(updates) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("weighted_average needs one non-negative weight per update, not all zero")
    records = [RecordDict({"update": ArrayRecord({k: Array(v) for k, v in update.items()}),
                           "weight": MetricRecord({"weight": float(w)})})
               for update, w in zip(updates, weights, strict=True)]
    return {name: array.numpy() for name, array in aggregate_arrayrecords(records, "weight").items()}
