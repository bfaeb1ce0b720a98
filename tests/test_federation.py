"""The federated stages end to end over an in-process Grid: real ClientApp, real server loop."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client.boundary import ERROR_BUDGET
from client.client_app import make_client_app
from common.data import load_site_data, stratified_split
from common.privacy.ledger import epsilon_from_ledger
from common.run_plan import RunPlan
from common.schema import Schema
from common.stages.base import Payload
from common.stages.fedavg import update_problem
from common.stages.release import local_only_synthetic
from common.stages.site import SiteRun
from common.tabular.synthesizer import TabularSynthesizer
from server.aggregate import weighted_average
from server.federation import FederationSettings, run_federation
from server.handshake import QuorumError
from server.settings import settings_from_run_config
from simulation.baselines import centralized_synthetic, pooled_split
from simulation.profiles import RunProfile
from tests.flower_helpers import InProcessGrid, ask, site_entries

TINY = {"batch_size": 32, "model": {"hidden": [32, 32], "latent_dim": 8}}
TABULAR_ROUNDS = "2-fedavg-tabular"  # the standard plan's second stage


def _grid(configs, tamper=None) -> InProcessGrid:
    app = make_client_app(lambda ctx: configs[ctx.node_id])
    return InProcessGrid(app, {node: {} for node in configs}, tamper=tamper)


def _settings(tmp_path, schema_path, **extra) -> FederationSettings:
    base = dict(schema_path=schema_path, run_dir=tmp_path / "run", run="t", kind="vae", rounds=3,
                local_steps=4, seed=1, tabular_config=TINY, min_sites=3, quorum=2,
                handshake_timeout_s=5, round_timeout_s=60)
    return FederationSettings(**{**base, **extra})


def _plan(**extra) -> RunPlan:
    return RunPlan.standard(**{"run": "t", "seed": 1, "kind": "vae", "rounds": 3, "local_steps": 4,
                               "tabular_config": TINY, **extra})


def test_run_trains_aggregates_and_keeps_every_site_in_budget(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    result = run_federation(_grid(configs), _settings(tmp_path, schema_path))
    assert result.sites == sorted(c.name for c in configs.values())
    model = TabularSynthesizer.load(result.model_dir)
    sample = model.sample(50, seed=0)
    assert len(sample) == 50 and sample["age"].between(0, 105).all()
    untrained = TabularSynthesizer(model.schema, kind="vae", epsilon=None, config=TINY, seed=1)
    assert any(not np.array_equal(model.get_weights()[k], w) for k, w in untrained.get_weights().items())
    for config in configs.values():
        entries = site_entries(config)
        assert {e.run for e in entries} == {"t"}
        assert [e.round for e in entries if not e.note.startswith("label counts")] == [1, 2, 3]
        spent = epsilon_from_ledger(entries, entries[-1].delta)
        assert 0 < spent <= 4.0 + 1e-9
        assert result.state.weights[config.name] >= 1.0  # its DP record count: the FedAvg weight


def crash_once(configs, message_type: str, group: str):
    """A grid whose coordinator 'crashes' on the first reply to ``message_type`` in ``group``
    (after that site trained it), and works normally once ``disarm()`` is called."""
    crash = {"armed": True}

    def tamper(node, reply):
        if crash["armed"] and reply.metadata.message_type == message_type and \
                reply.metadata.group_id == group:
            raise RuntimeError("coordinator crashed")
        return reply

    grid = _grid(configs, tamper=tamper)
    return grid, lambda: crash.update(armed=False) or grid.sent.clear()


def test_resume_repeats_no_round_and_spends_nothing_twice(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    grid, disarm = crash_once(configs, "train.fedavg", f"{TABULAR_ROUNDS}-3")
    with pytest.raises(RuntimeError, match="crashed"):
        run_federation(grid, _settings(tmp_path, schema_path))
    state = json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())
    assert state["stages"][TABULAR_ROUNDS]["step"] == 2
    disarm()
    result = run_federation(grid, _settings(tmp_path, schema_path, resume=True))
    assert result.state.steps_done(TABULAR_ROUNDS) == 3
    trained = {s.split(":")[1] for s in grid.sent if s.startswith("train.")}
    assert trained == {f"{TABULAR_ROUNDS}-3"}  # rounds 1 and 2 were not sent again
    for config in configs.values():
        entries = site_entries(config)
        assert [e.note for e in entries].count("label counts + class tables") == 1
        # Site 1 trained round 3 before the crash: resending it reused the saved update.
        assert [e.round for e in entries if not e.note.startswith("label counts")] == [1, 2, 3]


def _corrupt(kind: str):
    def tamper(node, reply):
        if node != 2 or reply.metadata.message_type != "train.fedavg":
            return reply
        arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
        first = next(iter(arrays))
        if kind == "nan":
            arrays[first] = arrays[first] * np.nan
        elif kind == "shape":
            arrays[first] = arrays[first][:1]
        else:
            arrays = {k: a + 1e4 for k, a in arrays.items()}
        reply.content = RecordDict({"arrays": ArrayRecord({k: Array(a) for k, a in arrays.items()}),
                                    "values": ConfigRecord({"json": "{}"})})
        return reply
    return tamper


@pytest.mark.parametrize("kind, words", [("nan", "NaN"), ("shape", "shape"), ("norm", "L2")])
def test_bad_updates_are_dropped_and_logged(tmp_path, sites, server_identity, kind, words) -> None:
    schema_path, configs = sites
    result = run_federation(_grid(configs, tamper=_corrupt(kind)),
                            _settings(tmp_path, schema_path, rounds=1))
    assert len(result.state.dropped) == 1 and words in result.state.dropped[0]
    assert configs[2].name in result.state.dropped[0]
    model = TabularSynthesizer.load(result.model_dir)
    assert all(np.isfinite(w).all() for w in model.get_weights().values())


def test_quorum_not_met_stops_with_a_message(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    with pytest.raises(QuorumError, match="fewer than 3 good"):
        run_federation(_grid(configs, tamper=_corrupt("nan")),
                       _settings(tmp_path, schema_path, rounds=1, quorum=3, round_retries=1))


def test_exhausted_budget_is_an_error_reply_that_spends_nothing(tmp_path, sites) -> None:
    schema_path, configs = sites
    site = configs[1]
    plan = _plan()
    current = {"site": site}
    app = make_client_app(lambda ctx: current["site"])
    ctx = InProcessGrid(app, {1: {}}).contexts[1]
    base = {"plan": plan.to_json()}
    counts = ask(app, ctx, "query.label_counts", Payload(values={**base, "stage": 0, "step": 0}))
    assert not counts.has_error(), counts.error
    weights = TabularSynthesizer(Schema.load(schema_path), kind="vae", epsilon=None, config=TINY,
                                 seed=1).get_weights()

    def train(round_):
        request = Payload(arrays=weights, values={**base, "stage": 1, "step": round_ - 1, "round": round_})
        return ask(app, ctx, "train.fedavg", request)

    assert not train(1).has_error()
    before = site_entries(site)
    current["site"] = replace(site, epsilon_tabular=0.5)  # the steward lowers the site's budget
    reply = train(2)
    assert reply.has_error() and reply.error.code == ERROR_BUDGET
    assert "budget" in reply.error.reason.lower()
    assert site_entries(site) == before  # nothing trained, nothing spent


def test_update_checks_and_average() -> None:
    ref = {"a": np.zeros((2, 2), np.float32), "b": np.zeros(3, np.float32)}
    assert update_problem({"a": np.ones((2, 2), np.float32), "b": np.ones(3, np.float32)}, ref, 10) is None
    assert "dtype" in update_problem({"a": np.ones((2, 2)), "b": np.ones(3, np.float32)}, ref, 10)
    assert "arrays" in update_problem({"a": ref["a"]}, ref, 10)
    assert "L2" in update_problem({"a": ref["a"] + 10, "b": ref["b"]}, ref, 10)
    avg = weighted_average([{"x": np.full(2, 1.0)}, {"x": np.full(2, 4.0)}], [2.0, 1.0])
    np.testing.assert_allclose(avg["x"], [2.0, 2.0])
    with pytest.raises(ValueError):
        weighted_average([{"x": np.ones(2)}], [0.0])


# --- FedProx ------------------------------------------------------------------------------------
def test_proximal_mu_travels_from_the_run_config_to_the_sites_plan() -> None:
    """FedProx is for the rounds that average updates (the deep generators'; mst has none)."""
    rounds = {"schema-path": "schema.yaml", "generator": "vae"}
    settings = settings_from_run_config({**rounds, "proximal-mu": 0.5})
    received = RunPlan.from_json(settings.plan.to_json())
    assert received == settings.plan and received.stages[1].params["proximal_mu"] == 0.5
    plain = settings_from_run_config(rounds).plan
    assert plain.stages[1].params["proximal_mu"] == 0.0  # FedAvg
    from common.errors import InputError

    with pytest.raises(InputError, match="proximal_mu"):
        replace(settings, proximal_mu=-1.0).plan  # noqa: B018


def _first_round(config, plan: RunPlan, start: dict) -> dict:
    """One site's label counts, then round 1 from ``start``: its update."""
    from common.stages import stages_of

    run = SiteRun(config, plan)
    counts, rounds = stages_of(plan)[:2]
    counts.release(run, Payload())
    return rounds.release(run, Payload(arrays=start, values={"round": 1})).arrays


def test_fedprox_keeps_a_site_near_the_global_model_at_no_privacy_cost(tmp_path, sites) -> None:
    """Same data, noise seed and global weights: a strong proximal term shortens the site's step
    away from the global model and leaves the epsilon spent unchanged."""
    schema_path, configs = sites
    start = TabularSynthesizer(Schema.load(schema_path), kind="vae", epsilon=None, config=TINY,
                               seed=1).get_weights()

    def first_round(mu: float) -> tuple[float, float]:
        site = replace(configs[1], state_dir=tmp_path / f"mu-{mu}", noise_seed=3)
        weights = _first_round(site, _plan(rounds=1, local_steps=20, proximal_mu=mu), start)
        moved = float(np.sqrt(sum(((weights[k] - s) ** 2).sum() for k, s in start.items())))
        return moved, site_entries(site)[-1].epsilon_after

    (free, spent_free), (pulled, spent_pulled) = first_round(0.0), first_round(10.0)
    assert pulled < 0.6 * free, (pulled, free)
    assert spent_pulled == spent_free


# --- baselines ----------------------------------------------------------------------------------
def test_local_only_baseline_trains_once_under_its_own_name_in_the_site_ledger(sites) -> None:
    schema_path, configs = sites
    site = replace(configs[1], allow_local_only=True)
    plan = _plan(local_only=True)
    first = local_only_synthetic(SiteRun(site, plan), 40, seed=0)
    again = local_only_synthetic(SiteRun(site, plan), 40, seed=0)  # a restarted site: no new spend
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 40 and first["age"].between(0, 105).all()
    entries = site_entries(site)
    assert [(e.model, e.note, e.steps, e.run) for e in entries] == [
        ("tabular-vae-local", "label counts + class tables", 1, "t"), ("tabular-vae-local", "", 3 * 4, "t")]
    assert 0 < entries[-1].epsilon_after <= site.epsilon_tabular + 1e-9


def test_centralized_baseline_trains_on_the_sites_train_splits_pooled(sites) -> None:
    schema_path, configs = sites
    schema = Schema.load(schema_path)
    files = {c.name: c.data_path for c in configs.values()}
    pooled = pooled_split(files, schema, seed=1)
    assert len(pooled) == sum(len(SiteRun(c, _plan()).splits["train"]) for c in configs.values())
    profile = RunProfile("t", sites=3, records_per_site=150, rounds=3, local_steps=4,
                         synthetic_records=30, tabular_config=TINY)
    synthetic = centralized_synthetic(files, schema, profile, "vae", epsilon=4.0, delta=1e-5, seed=1)
    assert len(synthetic) == 30
    assert list(synthetic.columns) == [c.name for c in schema.modeled_columns]


def test_round_one_starts_from_the_sum_of_the_sites_dp_tables(tmp_path, sites, server_identity) -> None:
    """Each site releases its class tables with its counts (one charged release); the server
    initialises the global label path from their sum before the first round."""
    schema_path, configs = sites
    grid = _grid(configs)
    run_federation(grid, _settings(tmp_path, schema_path, rounds=1))
    released = {}
    for config in configs.values():
        counts = SiteRun(config, _plan(rounds=1)).folder / "replies" / "1-label_counts-tabular-0000.npz"
        with np.load(counts) as saved:
            released[config.name] = saved["tables"]
    expected = TabularSynthesizer(Schema.load(schema_path), kind="vae", epsilon=None, config=TINY, seed=1)
    untrained = expected.get_weights()
    expected.set_label_tables(np.sum(list(released.values()), axis=0))
    sent = [{k: v.numpy() for k, v in m.content["arrays"].items()} for m in grid.messages
            if m.metadata.message_type == "train.fedavg"]
    assert sent and all(np.array_equal(sent[0][k], w) for k, w in expected.get_weights().items())
    assert any(not np.array_equal(sent[0][k], w) for k, w in untrained.items())
    for config in configs.values():
        release = site_entries(config)[0]
        assert (release.note, release.round) == ("label counts + class tables", None)


MARGINAL_RUNS = {  # AIM with one round: three steps, as MST
    "mst": ({"iters": 200}, ["1-way marginals", "pair scores", "chosen marginals"]),
    "aim": ({"iters": 200, "round_iters": 100, "rounds": 1, "model_samples": 2000},
            ["1-way marginals", "selection scores 1/1", "measured marginals 1/1"]),
}


@pytest.mark.parametrize("kind", sorted(MARGINAL_RUNS))
def test_the_marginal_generator_runs_as_one_stage_and_its_model_generates(tmp_path, sites,
                                                                          server_identity, kind) -> None:
    """Federated MST and AIM over the in-process grid: three releases per site, each in its
    ledger under the site's share; the global model is saved, released, scored at every site,
    and ``fedsynth generate``'s loader samples it (conditions included)."""
    from common.marginal.model import MarginalSynthesizer
    from common.synthesis import synthesize

    schema_path, configs = sites
    grid = _grid(configs)
    config, notes = MARGINAL_RUNS[kind]
    settings = _settings(tmp_path, schema_path, kind=kind, tabular_config=config, synthetic_records=150)
    result = run_federation(grid, settings)
    assert [m.metadata.message_type for m in grid.messages].count("query.marginals") == 3 * len(configs)
    for config in configs.values():
        entries = site_entries(config)
        assert [e.note for e in entries] == notes
        assert epsilon_from_ledger(entries, entries[-1].delta) == pytest.approx(4.0, abs=1e-4)
        # its noisy size, for any later stage: the mean of its 28 noisy 1-way totals
        n_train = len(stratified_split(load_site_data(config.data_path, Schema.load(schema_path)),
                                       "mechanism", 0)["train"])
        assert abs(result.state.weights[config.name] - n_train) < 0.4 * n_train
    model = MarginalSynthesizer.from_saved(*_saved(result.model_dir))
    assert model.with_site and model.site == "hospital"  # one site code per site: modelled
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["sites"]) == {c.name for c in configs.values()}
    generated = synthesize(result.model_dir, 20, {"mechanism": "fall"}, seed=1)
    assert len(generated) == 20 and (generated["mechanism"] == "fall").all()


def _saved(folder):
    import torch

    from common.saved_model import read_model_folder
    from common.tabular.synthesizer import FILES

    meta, schema = read_model_folder(folder, FILES, "tabular model")
    return meta, schema, torch.load(folder / FILES["state"], weights_only=True)
