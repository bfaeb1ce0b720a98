"""The site's privacy boundary: for every message a site answers, the exact fields its reply may
carry and how each one was made private. Every reply is built here and checked against it; a
reply with a field that is not declared, or a value its rule does not allow, is not sent.

This is the one page a privacy officer reads to know what leaves the hospital. A new stage adds
its message type and fields here, or its replies cannot leave.

Errors leave as one of a few fixed texts: data problems and spent budgets quote the site's own
records or sizes in their detail, so the detail stays in the site's log. Only refusals of the
coordinator's own request (``RequestRefused``: its plan, its announced release) travel verbatim,
because they quote nothing but that request and the site's public rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict

from common.errors import BudgetExceededError, DataError, InputError
from common.privacy.disclosure import MIN_CELL, SMALL
from common.run_plan import RequestRefused
from common.stages.base import Payload

log = logging.getLogger("fedsynth.client")


@dataclass(frozen=True)
class Rule:
    """How a field was made private (``meaning``) and what its values may look like (``allows``)."""

    meaning: str
    allows: Callable[[Any], bool]


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float)) or (
        isinstance(v, list) and all(_plain(x) for x in v))


def _numbers(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
        isinstance(v, list) and all(_numbers(x) for x in v))


def _size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v % MIN_CELL == 0


def _small(v: Any) -> bool:
    return v is None or v == SMALL or (_size(v) and v >= MIN_CELL)


def _cells(v: Any) -> bool:
    return isinstance(v, list) and all(c is None or (_size(c) and c >= MIN_CELL) for c in v)


PUBLIC = Rule("public: a consortium fact, the site's own settings or the coordinator's own request; "
              "nothing derived from records", _plain)
DP_GAUSSIAN = Rule("DP: Gaussian mechanism on counts of bounded sensitivity, charged to the site's "
                   "lifetime ledger before it leaves", lambda v: isinstance(v, np.ndarray))
DP_SGD = Rule("DP: DP-SGD with Opacus (per-record clipping, Gaussian noise, Poisson batches), "
              "charged to the site's lifetime ledger before it leaves", lambda v: isinstance(v, np.ndarray))
SPEND = Rule("the site's own DP accounting: epsilons of its releases, its cap and its delta "
             "(functions of the noise and sampling rates, which depend on the size only through "
             "ceil(n/batch))", _numbers)
SIZE = Rule(f"aggregate: a size, rounded to a multiple of {MIN_CELL}", _size)
SMALL_COUNT = Rule(f"aggregate: a count of records, '{SMALL}' under {MIN_CELL}, else rounded to "
                   f"{MIN_CELL}", _small)
SMALL_SHARE = Rule(f"aggregate: a share of records, '{SMALL}' when fewer than {MIN_CELL} records "
                   f"make it", lambda v: v is None or v == SMALL or _numbers(v))
AGGREGATE = Rule(f"aggregate: a statistic over a whole split of at least {MIN_CELL} records, null "
                 f"where fewer records stand behind it", _numbers)
CELLS = Rule(f"aggregate: histogram cells from schema bins, null under {MIN_CELL} records (and "
             f"complementary cells), else rounded to {MIN_CELL}", _cells)
SYNTHETIC = Rule("computed from synthetic records alone: the coordinator's release, or samples of "
                 "the site's DP local-only model (post-processing of a DP release)", _numbers)
ABSENT = Rule("nothing to report (too few records, or no narratives)", lambda v: v is None)


@dataclass(frozen=True)
class Declared:
    """A reply's fields: ``arrays`` by name, ``values`` by dotted path (``*`` matches any one key;
    a list is one field)."""

    arrays: Mapping[str, Rule] = field(default_factory=dict)
    values: Mapping[str, Rule] = field(default_factory=dict)


_METRICS = {
    "n_train": SIZE, "n_test": SIZE, "release_rows": PUBLIC,
    **{f"fidelity.{k}": AGGREGATE for k in ("column_shapes", "column_pair_trends", "detection_auc",
                                             "wasserstein_mean")},
    **{f"utility.{k}": AGGREGATE for k in ("trtr_macro_f1", "tstr_macro_f1", "augmented_macro_f1",
                                            "per_class_recall_trtr.*", "per_class_recall_augmented.*")},
    "privacy.exact_copies": SMALL_COUNT,
    "privacy.dcr_overfitting_protection": AGGREGATE, "privacy.mia_auc": AGGREGATE,
    "text": ABSENT,
    # The text floor's METRICS leave these out: its records are the release's, scored already.
    "fidelity": ABSENT, "utility": ABSENT, "privacy": ABSENT,
    **{f"text.{k}": AGGREGATE for k in ("consistency_accuracy", "real_consistency_accuracy", "mauve",
                                         "mauve_ceiling", "mauve_alt", "mauve_alt_ceiling",
                                         "distinct_2", "real_distinct_2", "canary_exposure_bits")},
    "text.gate_pass_rate": SYNTHETIC,  # the coordinator's own gate flags, read off the release
    "text.train_8gram_share": SMALL_SHARE,
    "plots.min_cell": PUBLIC, "plots.note": PUBLIC, "plots.label": PUBLIC,
    "plots.histograms.*.type": PUBLIC, "plots.histograms.*.cells": PUBLIC,
    "plots.histograms.*.real": CELLS, "plots.histograms.*.n_real": SIZE,
    "plots.histograms.*.synthetic": SYNTHETIC, "plots.histograms.*.n_synthetic": SYNTHETIC,
    "plots.associations.columns": PUBLIC, "plots.associations.real": AGGREGATE,
    "plots.associations.synthetic": SYNTHETIC, "plots.associations.difference": AGGREGATE,
}
REPLIES: dict[str, Declared] = {
    "query.handshake": Declared(values={"site": PUBLIC, "version": PUBLIC}),
    "query.label_counts": Declared(arrays={"counts": DP_GAUSSIAN, "tables": DP_GAUSSIAN}),
    "train.fedavg": Declared(arrays={"*": DP_SGD}),
    "query.marginals": Declared(arrays={"*": DP_GAUSSIAN},
                                values={"site_code": PUBLIC, "noise": PUBLIC}),
    "query.pe": Declared(arrays={"votes": DP_GAUSSIAN}),  # noisy nearest-candidate vote histogram
    "query.announce": Declared(values={"announced": PUBLIC}),
    "evaluate.release": Declared(values={
        **{f"scores.*.{path}": rule for path, rule in _METRICS.items()},
        **{f"spend.{k}": SPEND for k in ("epsilon.*", "epsilon_run", "epsilon_lifetime",
                                          "epsilon_cap", "delta")}}),
}

ERROR_INTERNAL, ERROR_BAD_DATA, ERROR_BUDGET, ERROR_SITE, ERROR_REFUSED = 4000, 4001, 4002, 4003, 4004
_ERRORS: list[tuple[type[BaseException], int, str | None]] = [  # the first match wins
    (RequestRefused, ERROR_REFUSED, None),  # None: the refusal's own text (it quotes the request)
    (BudgetExceededError, ERROR_BUDGET,
     "the site's privacy budget does not cover this request: its share for the model or its "
     "lifetime cap (epsilon-total) would be passed, and nothing was spent. Its data steward sees "
     "what was spent and what is left with 'fedsynth ledger show'"),
    (DataError, ERROR_BAD_DATA, "the site's data file failed validation against the schema; the "
                                "site's log lists the rows, columns and fixes"),
    (InputError, ERROR_SITE, "the site could not take part (a problem with its own data or "
                             "settings); the site's log says what and how to fix it"),
    (Exception, ERROR_INTERNAL, "the site hit an unexpected error; the detail stays in its log"),
]


class BoundaryViolation(RuntimeError):
    """A reply field the boundary does not declare, or a value its rule does not allow."""


def read_request(msg: Message) -> Payload:
    """The coordinator's request as plain types (arrays, JSON values, byte blobs)."""
    content = msg.content
    return Payload(
        arrays={k: v.numpy() for k, v in content.array_records.get("arrays", ArrayRecord()).items()},
        values=json.loads(str(content.config_records["values"]["json"])) if "values" in content else {},
        blobs={k: bytes(v) for k, v in content.config_records.get("blobs", ConfigRecord()).items()})


def reply(msg: Message, payload: Payload) -> Message:
    """The reply to ``msg``, once every field of ``payload`` passed its declared rule."""
    check(msg.metadata.message_type, payload)
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in payload.arrays.items()}),
                          "values": ConfigRecord({"json": json.dumps(payload.values)})})
    return Message(content, reply_to=msg)


def check(message_type: str, payload: Payload) -> None:
    declared = REPLIES.get(message_type)
    if declared is None or payload.blobs:
        raise BoundaryViolation(f"{message_type}: no reply of this kind (or with blobs) is declared")
    for name, array in payload.arrays.items():
        _allow(message_type, (name,), array, declared.arrays)
    for path, value in _leaves(payload.values):
        _allow(message_type, path, value, declared.values)


def _allow(message_type: str, path: tuple[str, ...], value: Any, rules: Mapping[str, Rule]) -> None:
    rule = next((r for pattern, r in rules.items() if _matches(pattern.split("."), path)), None)
    if rule is None or not rule.allows(value):
        kind = "is not declared" if rule is None else f"breaks its rule ({rule.meaning})"
        raise BoundaryViolation(f"{message_type}: reply field {'.'.join(path)} {kind}")


def _matches(pattern: list[str], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in ("*", k) for p, k in zip(pattern, path, strict=True))


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every field of a JSON tree, by path; a list (a histogram, a matrix) is one field."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    else:
        yield path, value


def error_reply(msg: Message, exc: BaseException, site: str | None) -> Message:
    """A generic error reply for ``exc``; its detail goes to the site's log only."""
    code, reason = next((code, text) for kind, code, text in _ERRORS if isinstance(exc, kind))
    if code == ERROR_INTERNAL:
        log.exception("%s: unexpected error (a generic error was sent)", msg.metadata.message_type)
    else:
        log.error("%s: %s", msg.metadata.message_type, exc)
    reason = " ".join(str(exc).split()) if reason is None else reason
    return Message(Error(code=code, reason=f"site {site}: {reason}" if site else reason), reply_to=msg)
