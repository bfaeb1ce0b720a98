"""A site's part of evaluating the release: metered, so that it is no membership oracle.

The coordinator first announces the release by its SHA-256 (``announce``), then sends the set
itself (``score``). A site scores only a run it trained in, one announced release per run, once:
a set that does not match the announcement, or any second request, is refused. Every refusal
and every scored release goes to the account's audit trail. A release must hold at least
``MIN_DISTINCT`` distinct records, and the figures follow the small-number rules
(``common.privacy.disclosure``), so copies of one guessed record learn nothing. Beside the release
the request may carry ``blobs["text_floor"]``: released records with narratives written by the
public warm-start model alone (no private data, epsilon 0), scored for its text figures only;
its records must be records of the release, so it is no second set of records to probe with.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import numpy as np
import pandas as pd

from common.fileio import atomic_write_text
from common.metrics.baselines import IndependentMarginals
from common.metrics.evaluate import evaluate_site, evaluate_text, load_synthetic
from common.metrics.features import modeled
from common.metrics.text import FLAG_COLUMN
from common.run_plan import RequestRefused
from common.stages.base import Payload
from common.stages.site import SiteRun

MIN_DISTINCT = 100
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ANNOUNCED, SCORED = "announced.json", "scored.json"


def announce(run: SiteRun, request: Payload) -> Payload:
    """Record the hash of the run's release; refuse a second, different one."""
    sha = str(request.values.get("sha256", ""))
    if not _SHA256.match(sha):
        raise RequestRefused(f"the announcement carries no SHA-256 of the release (got {sha[:70]!r}).")
    if not run.ledger.read(run=run.plan.run):
        raise _refused(run, f"the site scores only the release of a run it trained in, and run "
                            f"{run.plan.run!r} made no release from its data.")
    path = run.folder / ANNOUNCED
    if path.exists():
        announced = json.loads(path.read_text(encoding="utf-8"))["sha256"]
        if announced != sha:
            raise _refused(run, f"run {run.plan.run!r} already announced release {announced[:12]}; a "
                                f"site scores one release per run (this one is {sha[:12]}).")
    else:
        atomic_write_text(path, json.dumps({"sha256": sha, "time": time.time()}) + "\n")
        run.account.record("announced", run.plan.run, sha)
    return Payload(values={"announced": sha})


def score(run: SiteRun, request: Payload) -> Payload:
    """Score the announced release (and, when the site allows it, its local-only baseline; when
    the request carries one, the text floor) on the site's held-out data, once; the figures and
    the site's DP accounting go back."""
    data = request.blobs.get("release", b"")
    sha = hashlib.sha256(data).hexdigest()
    path = run.folder / ANNOUNCED
    if not path.exists():
        raise _refused(run, f"no release was announced for run {run.plan.run!r}; the site scores "
                            f"only a release announced by its SHA-256 first.")
    announced = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    if sha != announced:
        raise _refused(run, f"the set sent ({sha[:12]}) is not the release announced for run "
                            f"{run.plan.run!r} ({announced[:12]}).")
    if (run.folder / SCORED).exists():
        raise _refused(run, f"run {run.plan.run!r}'s release {sha[:12]} was already scored by this "
                            f"site; a site scores a release once.")
    synthetic = _received(run, data)
    floor = _text_floor(run, request, synthetic)
    distinct = len(_records(synthetic).drop_duplicates())
    if distinct < MIN_DISTINCT:
        raise _refused(run, f"the release holds {distinct} distinct record(s); a site scores "
                            f"releases of at least {MIN_DISTINCT}.")
    seed = int(request.values.get("seed", run.plan.seed))
    mine = own_records(run, synthetic)
    federated = evaluate_site(run.schema, run.splits, synthetic if mine is None else mine, seed).to_json()
    federated["release_rows"] = "all" if mine is None else "site"
    scores: dict[str, Any] = {"federated": federated, **reference_scores(run, len(synthetic), seed)}
    if floor is not None:  # of the floor's records, those of the release's rows this site scores
        keep = None if mine is None else _own_mask(run, floor)
        rows = floor if keep is None else floor[keep].reset_index(drop=True)
        scores["text_floor"] = evaluate_text(run.schema, run.splits, rows, seed)
    n_local = int(request.values.get("local_only_records", 0))
    if run.local_only and n_local > 0:
        local = local_only_synthetic(run, n_local, seed)
        scores["local_only"] = evaluate_site(run.schema, run.splits, local, seed).to_json()
        scores["local_only"]["text"] = None  # a tabular model: no narratives, no text figures
    reply = Payload(values={"scores": scores, "spend": run.spends()})
    atomic_write_text(run.folder / SCORED, json.dumps({"sha256": sha, "time": time.time()}) + "\n")
    run.account.record("scored", run.plan.run, sha)  # both before the figures leave
    return reply


def own_records(run: SiteRun, synthetic: pd.DataFrame) -> pd.DataFrame | None:
    """The release's records for this site, when the release carries the site column (a model
    of the sites' differences), the site's records share one code, and at least ``MIN_DISTINCT``
    distinct records have it; else None (the site scores the whole release)."""
    keep = _own_mask(run, synthetic)
    if keep is None:
        return None
    mine = synthetic[keep].reset_index(drop=True)
    return mine if len(_records(mine).drop_duplicates()) >= MIN_DISTINCT else None


def _own_mask(run: SiteRun, synthetic: pd.DataFrame) -> np.ndarray | None:
    """The rows of ``synthetic`` carrying this site's one code; None when there is no site
    column or the site's records carry several codes."""
    site = run.schema.site
    if site is None or site.name not in synthetic.columns:
        return None
    codes = run.data[site.name].astype("string").unique()
    if len(codes) != 1:
        return None
    return (synthetic[site.name].astype("string") == codes[0]).fillna(False).to_numpy(dtype=bool)


def _records(synthetic: pd.DataFrame) -> pd.DataFrame:
    """The records without the gate's flag: a flag does not make a record distinct."""
    return synthetic.drop(columns=[FLAG_COLUMN], errors="ignore")


def _text_floor(run: SiteRun, request: Payload, release: pd.DataFrame) -> pd.DataFrame | None:
    """The request's ``text_floor`` table, typed like the release, or None when it has none.
    Refused (and audited) unless it has narratives and its records are records of the release
    (every modeled column; as many copies of each as the release has at most): only the
    narratives are its own."""
    data = request.blobs.get("text_floor")
    if not data:
        return None
    floor = _received(run, data)
    narrative = run.schema.narrative
    if narrative is None or narrative.name not in floor.columns or not _rows_within(run, floor, release):
        raise _refused(run, f"the text floor sent with run {run.plan.run!r}'s release is not records "
                            f"of the release with narratives (a floor narrates released records; "
                            f"only its narratives differ).")
    return floor


def _rows_within(run: SiteRun, rows: pd.DataFrame, release: pd.DataFrame) -> bool:
    """Whether every row of ``rows`` is a row of ``release`` on the modeled columns, counting
    copies."""
    def counts(frame: pd.DataFrame) -> pd.Series:
        return pd.util.hash_pandas_object(modeled(frame, run.schema), index=False).value_counts()

    have, need = counts(release), counts(rows)
    return bool((have.reindex(need.index, fill_value=0) >= need).all())


def reference_scores(run: SiteRun, n_records: int, seed: int) -> dict[str, Any]:
    """The yardsticks beside every release, scored here at no privacy cost (figures only leave):
    ``independent_marginals``, each column of the site's train split resampled on its own (what a
    generator must beat), and ``real_train``, the train split itself as if it were the release
    (the ceiling at this test size; its privacy figures are null, they would describe the
    split itself, and so is ``text``: the consistency classifier is trained on these very notes,
    and the real notes' ceiling is already ``real_consistency_accuracy``). No plots: their
    "synthetic" side would be real records."""
    train = run.splits["train"]
    marginals = IndependentMarginals(run.schema).fit(train).sample(n_records, seed=seed)
    notes = [run.schema.narrative.name] if run.schema.narrative is not None else []
    as_release = train.drop(columns=notes).reset_index(drop=True)  # its text would be discarded
    ceiling = evaluate_site(run.schema, run.splits, as_release, seed, real=True).metrics
    return {"independent_marginals": evaluate_site(run.schema, run.splits, marginals, seed).metrics,
            "real_train": ceiling}


def local_only_synthetic(run: SiteRun, n_records: int, seed: int) -> pd.DataFrame:
    """``n_records`` from the local-only baseline: the plan's tabular model trained at this site
    alone, with its share of the budget, the same total steps and initial weights, once (a
    restart samples the saved model), under its own name in the ledger. It never leaves the site."""
    name = run.local_only_model
    model = run.model(name, local=True)
    if not run.has_model(name, local=True):
        model.fit(run.records(name), steps=run.plan.planned_steps(name))
        run.save_model(model)
    return model.sample(n_records, seed=seed)


def _received(run: SiteRun, data: bytes) -> pd.DataFrame:
    """The release as a typed frame, checked against the schema like any file: a site does not
    trust what arrives."""
    path = run.folder / ".received.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        return load_synthetic(path, run.schema)
    finally:
        path.unlink(missing_ok=True)


def _refused(run: SiteRun, reason: str) -> RequestRefused:
    run.account.record("refused", run.plan.run, reason)
    return RequestRefused(reason)
