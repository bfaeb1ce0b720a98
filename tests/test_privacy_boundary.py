"""The site owns its privacy: one test per attack a hostile coordinator (or a careless default)
could make on a site, each through the real ClientApp, the way the coordinator would send it.

Each test was checked to fail with its defence taken out (the note of issue 11 says how).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from client import boundary
from client.client_app import make_client_app
from common.fileio import table_bytes
from common.privacy.account import describe
from common.privacy.disclosure import SMALL
from common.run_plan import RunPlan
from common.site_actions import SITE_ACTIONS
from common.stages import stages_of
from common.stages.base import Payload
from common.stages.site import SiteRun
from server.federation import run_federation
from server.handshake import QuorumError, run_handshake
from server.messaging import payload_of
from tests.flower_helpers import InProcessGrid, ask, site_entries
from tests.test_federation import TINY, _grid, _settings

PLAN = RunPlan.standard(run="a", seed=1, kind="vae", rounds=1, local_steps=2, tabular_config=TINY)


def _app_for(*configs):
    """A ClientApp serving ``configs`` as nodes 1, 2, ... and a context for each."""
    by_node = {i + 1: c for i, c in enumerate(configs)}
    app = make_client_app(lambda ctx: by_node[ctx.node_id])
    return app, InProcessGrid(app, {n: {} for n in by_node}).contexts


def _handshake(app, ctx, plan_json: str, schema_hash: str):
    from common.version import __version__

    return ask(app, ctx, "query.handshake", Payload(values={
        "schema_hash": schema_hash, "version": __version__, "plan": plan_json}))


def _schema_hash(config) -> str:
    from common.schema import Schema

    return Schema.load(config.schema_path).hash


def _train(app, ctx, plan: RunPlan, schema_path=None) -> None:
    """The plan's label counts at one site (the run has made a release there) and, given the
    schema, its one round of DP-SGD too (the run has spent its whole share)."""
    reply = ask(app, ctx, "query.label_counts",
                Payload(values={"plan": plan.to_json(), "stage": 0, "step": 0}))
    assert not reply.has_error(), reply.error
    if schema_path is not None:
        from common.tabular.synthesizer import TabularSynthesizer

        schema = _schema(schema_path)
        weights = TabularSynthesizer(schema, kind="vae", epsilon=None, config=TINY, seed=1).get_weights()
        reply = ask(app, ctx, "train.fedavg", Payload(arrays=weights, values={
            "plan": plan.to_json(), "stage": 1, "step": 0, "round": 1}))
        assert not reply.has_error(), reply.error


# --- the coordinator chooses the noise ---------------------------------------------------------
@pytest.mark.parametrize("model, key", [("tabular", "dp_seed"), ("tabular", "max_grad_norm"),
                                        ("text", "lora.dp_seed")])
def test_a_plan_that_sets_a_privacy_parameter_is_refused(sites, model, key) -> None:
    """A seed known to the coordinator would let it subtract the DP noise; a clipping bound it
    sets would change the sensitivity. Both are the site's own: a plan carrying one (anywhere in
    a model config) is refused at the handshake and at every stage message, spending nothing."""
    _, configs = sites
    app, ctxs = _app_for(configs[1])
    plan = json.loads(RunPlan.standard(run="a", seed=1, kind="vae", rounds=1, local_steps=2,
                                       tabular_config=TINY, text_config={"base": "tiny",
                                                                    "max_noise_per_batch": None},
                                       text_rounds=1, text_local_steps=1).to_json())
    target = plan["models"][model]["config"]
    *parents, leaf = key.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = 7
    hostile = json.dumps(plan)
    for reply in (_handshake(app, ctxs[1], hostile, _schema_hash(configs[1])),
                  ask(app, ctxs[1], "query.label_counts",
                      Payload(values={"plan": hostile, "stage": 0, "step": 0}))):
        assert reply.has_error() and reply.error.code == boundary.ERROR_REFUSED
        assert leaf in reply.error.reason and "only a site sets" in reply.error.reason
    assert site_entries(configs[1]) == []


# --- the budget resets with every run ----------------------------------------------------------
def test_a_second_run_draws_from_the_same_lifetime_budget(tmp_path, sites) -> None:
    """One ledger per data file, across runs: a run under a new name, with another generator,
    or with the local-only baseline draws from the same cap, and is refused past it before
    anything is computed. A renamed copy of the file shares the account; a new extract does not."""
    _, configs = sites
    site = replace(configs[1], epsilon_total=3.5, epsilon_tabular=3.0, allow_local_only=True)
    app, ctxs = _app_for(site)
    schema_hash = _schema_hash(site)
    first = _handshake(app, ctxs[1], PLAN.to_json(), schema_hash)
    assert not first.has_error(), first.error
    _train(app, ctxs[1], PLAN, site.schema_path)
    spent = site_entries(site)
    assert spent and {e.run for e in spent} == {"a"}
    again = [RunPlan.standard(run="b", seed=1, kind="vae", rounds=1, local_steps=2, tabular_config=TINY),
             RunPlan.standard(run="c", seed=1, kind="ddpm", rounds=1, local_steps=2, tabular_config={}),
             replace(PLAN, run="d", local_only=True)]
    for plan in again:
        reply = _handshake(app, ctxs[1], plan.to_json(), schema_hash)
        assert reply.has_error() and reply.error.code == boundary.ERROR_BUDGET, plan.run
        assert "lifetime cap" in reply.error.reason
    # The same run resumed is not a second spend: its own releases are part of its plan.
    assert not _handshake(app, ctxs[1], PLAN.to_json(), schema_hash).has_error()
    # A stage message of a refused run is refused too, and the ledger did not move.
    reply = ask(app, ctxs[1], "query.label_counts",
                Payload(values={"plan": again[0].to_json(), "stage": 0, "step": 0}))
    assert reply.has_error() and reply.error.code == boundary.ERROR_BUDGET
    assert site_entries(site) == spent
    # A renamed copy of the same extract is the same account; a new extract is a new one.
    renamed = tmp_path / "renamed.csv"
    renamed.write_bytes(site.data_path.read_bytes())
    copy_app, copy_ctx = _app_for(replace(site, data_path=renamed))
    copied = _handshake(copy_app, copy_ctx[1], again[0].to_json(), schema_hash)
    assert copied.error.code == boundary.ERROR_BUDGET
    other_app, other_ctx = _app_for(replace(site, data_path=configs[2].data_path))
    assert not _handshake(other_app, other_ctx[1], again[0].to_json(), schema_hash).has_error()
    shown = "\n".join(describe(site.state_dir))
    assert "tabular-vae" in shown and "refused" in shown and " b " in shown and "left" in shown


def test_the_local_only_baseline_runs_only_where_the_site_allows_it(sites) -> None:
    """A plan that asks for the local-only baseline plans it (and charges it) only at a site
    whose node config allows it."""
    _, configs = sites
    plan = replace(PLAN, local_only=True)
    allowed = SiteRun(replace(configs[1], allow_local_only=True), plan)
    refused = SiteRun(configs[1], plan)
    assert allowed.local_only and not refused.local_only
    assert len(allowed.planned_releases()) == 2 * len(refused.planned_releases())


# --- evaluation is an unmetered oracle ---------------------------------------------------------
@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A finished run (3 sites) whose release every site scored; the grid, sites, plan, release.
    Shared by the tests below: each one asks in runs of its own."""
    from flwr.supercore.task_identity import TaskIdentity

    from common.site_config import SiteConfig
    from simulation.hospitals import write_sim_data

    root = tmp_path_factory.mktemp("scored")
    paths = [p for p in write_sim_data(root / "data", 3, 150, seed=2) if p.suffix == ".csv"]
    schema_path = root / "data" / "schema.yaml"
    configs = {i + 1: SiteConfig(name=p.stem, data_path=p, schema_path=schema_path,
                                 state_dir=root / "state" / p.stem, epsilon_tabular=4.0,
                                 epsilon_total=100.0)  # room for the probes' runs
               for i, p in enumerate(paths)}
    grid = _grid(configs)
    settings = _settings(root, schema_path, rounds=1, local_steps=2, synthetic_records=150)
    with pytest.MonkeyPatch.context() as patch:  # a coordinator's task identity, as in a live run
        for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
            patch.setattr(TaskIdentity, name, value)
        run_federation(grid, settings)
    return grid, configs, settings.plan, (root / "run" / "synthetic.parquet").read_bytes()


def _evaluate(grid, node: int, plan: RunPlan, data: bytes):
    return ask(grid.client_app, grid.contexts[node], "evaluate.release",
               Payload(values={"plan": plan.to_json(), "seed": 0, "local_only_records": 0},
                       blobs={"release": data}))


def _announce(grid, node: int, plan: RunPlan, data: bytes):
    return ask(grid.client_app, grid.contexts[node], "query.announce",
               Payload(values={"plan": plan.to_json(), "sha256": hashlib.sha256(data).hexdigest()}))


def test_a_site_scores_the_announced_release_once(scored_run) -> None:
    grid, configs, plan, release = scored_run
    again = _evaluate(grid, 1, plan, release)
    assert again.has_error() and again.error.code == boundary.ERROR_REFUSED
    assert "already scored" in again.error.reason
    other = pd.read_parquet(io.BytesIO(release)).sample(frac=1.0, random_state=1)
    unannounced = _evaluate(grid, 1, plan, table_bytes(other))
    assert unannounced.error.code == boundary.ERROR_REFUSED
    assert "not the release announced" in unannounced.error.reason
    second = _announce(grid, 1, plan, table_bytes(other))
    assert second.error.code == boundary.ERROR_REFUSED and "one release per run" in second.error.reason
    untrained = replace(plan, run="never-trained")
    assert "trained in" in _announce(grid, 1, untrained, release).error.reason


def test_copies_of_one_train_record_learn_nothing_the_report_does_not_show(scored_run) -> None:
    """Ten copies of a guessed record: sent after the release, refused; sent alone, refused (too
    few distinct records); planted in a release of a fresh run, the count of copies reads the
    same whether the record is a member of the site's train split or not."""
    grid, configs, plan, release = scored_run
    run = SiteRun(configs[1], plan)
    member = run.splits["train"].iloc[[0]]
    outsider = SiteRun(configs[2], plan).splits["train"].iloc[[0]]
    modeled = [c.name for c in run.schema.modeled_columns]
    probe = pd.concat([member[modeled]] * 10, ignore_index=True)
    assert _evaluate(grid, 1, plan, table_bytes(probe)).error.code == boundary.ERROR_REFUSED
    base = pd.read_parquet(io.BytesIO(release))[modeled]
    figures = {}
    for who, record in (("member", member), ("outsider", outsider)):
        fresh = replace(plan, run=f"probe-{who}")
        _train(grid.client_app, grid.contexts[1], fresh)
        alone = table_bytes(pd.concat([record[modeled]] * 10, ignore_index=True))
        assert not _announce(grid, 1, fresh, alone).has_error()
        refused = _evaluate(grid, 1, fresh, alone)
        assert refused.error.code == boundary.ERROR_REFUSED and "distinct record" in refused.error.reason
        planted = table_bytes(pd.concat([base, *[record[modeled]] * 10], ignore_index=True))
        fresher = replace(plan, run=f"planted-{who}")
        _train(grid.client_app, grid.contexts[1], fresher)
        assert not _announce(grid, 1, fresher, planted).has_error()
        reply = _evaluate(grid, 1, fresher, planted)
        assert not reply.has_error(), reply.error
        figures[who] = payload_of(reply).values["scores"]["federated"]
    copies = {who: f["privacy"]["exact_copies"] for who, f in figures.items()}
    assert copies == {"member": SMALL, "outsider": SMALL}


# --- exact sizes and small counts leave --------------------------------------------------------
def test_every_reply_is_declared_in_the_boundary_and_passes_its_rules(scored_run) -> None:
    """Every message type a site answers is declared; every reply of every type that the run
    produced passes its declared rules (sizes rounded, small counts "<10"); a field the
    boundary does not declare, or an exact size, is stopped."""
    grid, configs, plan, release = scored_run
    assert set(boundary.REPLIES) == set(SITE_ACTIONS)
    seen = {}
    for config in configs.values():
        for path in sorted(SiteRun(config, plan).folder.glob("replies/*.json")):
            stage = next(s for s in stages_of(plan) if path.stem.startswith(s.name))
            with np.load(path.with_suffix(".npz")) as saved:
                arrays = {k: saved[k] for k in saved.files}
            payload = Payload(arrays=arrays, values=json.loads(path.read_text()))
            boundary.check(stage.message_type, payload)
            seen[stage.message_type] = payload
    assert set(seen) == {"query.label_counts", "train.fedavg"}
    fresh = replace(plan, run="declared")
    _train(grid.client_app, grid.contexts[1], fresh)
    _announce(grid, 1, fresh, release)
    evaluation = payload_of(_evaluate(grid, 1, fresh, release))
    boundary.check("evaluate.release", evaluation)
    federated = evaluation.values["scores"]["federated"]
    assert federated["n_train"] % 10 == 0 and federated["privacy"]["exact_copies"] == SMALL
    assert all(h["n_real"] % 10 == 0 for h in federated["plots"]["histograms"].values())
    handshake = payload_of(_handshake(grid.client_app, grid.contexts[1], plan.to_json(),
                                      _schema_hash(configs[1])))
    boundary.check("query.handshake", handshake)
    for field, value in (("n_train_exact", 93), ("n_train", 93)):
        tampered = json.loads(json.dumps(evaluation.values))
        tampered["scores"]["federated"][field] = value
        with pytest.raises(boundary.BoundaryViolation, match=field):
            boundary.check("evaluate.release", Payload(values=tampered))
    with pytest.raises(boundary.BoundaryViolation, match="not declared"):
        boundary.check("query.label_counts", Payload(arrays={"exact_counts": np.ones(3)}))


# --- unexpected exceptions leak text -----------------------------------------------------------
def test_an_unexpected_exception_returns_a_generic_error(sites, monkeypatch, caplog) -> None:
    _, configs = sites
    app, ctxs = _app_for(configs[1])

    def leaky(self, run, request):
        raise KeyError("patient 4711: age 131, 'fell from ladder'")

    monkeypatch.setattr(type(stages_of(PLAN)[0]), "release", leaky)
    with caplog.at_level(logging.ERROR, logger="fedsynth.client"):
        reply = ask(app, ctxs[1], "query.label_counts",
                    Payload(values={"plan": PLAN.to_json(), "stage": 0, "step": 0}))
    assert reply.has_error() and reply.error.code == boundary.ERROR_INTERNAL
    for secret in ("4711", "131", "ladder", "KeyError"):
        assert secret not in reply.error.reason
    assert "4711" in caplog.text  # the detail stays in the site's log


def test_a_budget_refusal_quotes_no_figure_of_the_site(sites) -> None:
    """The accountant's own message names the sampling rate, 1/ceil(n/B): it stays in the log."""
    _, configs = sites
    site = replace(configs[1], epsilon_total=2.5, epsilon_tabular=2.0)
    app, ctxs = _app_for(site)
    _train(app, ctxs[1], PLAN, site.schema_path)
    greedy = RunPlan.standard(run="b", seed=1, kind="vae", rounds=1, local_steps=2, tabular_config=TINY)
    reply = _handshake(app, ctxs[1], greedy.to_json(), _schema_hash(site))
    assert reply.error.code == boundary.ERROR_BUDGET
    assert not any(ch.isdigit() for ch in reply.error.reason.split(":", 1)[1])


# --- sites with the same name merge ------------------------------------------------------------
def test_two_sites_with_one_file_name_are_refused_at_the_handshake(tmp_path, sites, server_identity,
                                                                    caplog) -> None:
    """Two hospitals whose data files are both ed_extract.csv get the same default site name:
    both are left out, with a message naming the clash, instead of one update silently dropped."""
    schema_path, configs = sites
    node_configs = {}
    for node, config in configs.items():
        folder = tmp_path / f"hospital-{node}"
        folder.mkdir()
        data = folder / ("ed_extract.csv" if node < 3 else "other.csv")
        data.write_bytes(config.data_path.read_bytes())
        node_configs[node] = {"data-path": str(data), "schema-path": str(schema_path),
                              "state-dir": str(folder / "state")}
    from client.client_app import app

    grid = InProcessGrid(app, node_configs)
    with caplog.at_level(logging.ERROR, logger="fedsynth.server"):
        accepted = run_handshake(grid, _schema(schema_path), PLAN, min_sites=1, timeout_s=5)
    assert accepted == {3: "other"}
    assert "ed_extract" in caplog.text and "[1, 2]" in caplog.text and "site-name" in caplog.text
    with pytest.raises(QuorumError):
        run_handshake(grid, _schema(schema_path), PLAN, min_sites=2, timeout_s=1)


def _schema(path):
    from common.schema import Schema

    return Schema.load(path)


# --- delta gives n away ------------------------------------------------------------------------
def test_delta_is_the_same_for_sites_of_different_sizes(tmp_path, sites) -> None:
    """delta = 1/(10 n) would publish n. A site of 150 records and one of 18,000 with the same
    settings use the same delta, in their ledgers and in what they report."""
    _, configs = sites
    small = configs[1]
    lines = small.data_path.read_text().splitlines()
    big_file = tmp_path / "big.csv"
    big_file.write_text("\n".join([lines[0], *lines[1:] * 120]) + "\n")
    big = replace(small, name="big", data_path=big_file, state_dir=tmp_path / "big-state",
                  max_records=50_000)
    small = replace(small, max_records=50_000)
    assert len(SiteRun(big, PLAN).splits["train"]) > 10_000  # where 1/(10 n) falls under 1e-5
    app, ctxs = _app_for(small, big)
    for node in ctxs:
        _train(app, ctxs[node], PLAN)
    deltas = {e.delta for config in (small, big) for e in site_entries(config)}
    assert deltas == {1 / (10 * 50_000)}
    assert SiteRun(small, PLAN).spends()["delta"] == SiteRun(big, PLAN).spends()["delta"]
