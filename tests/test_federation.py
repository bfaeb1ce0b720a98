"""The federated phases end to end over an in-process Grid: real ClientApp, real server phases."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client.client_app import ERROR_BUDGET, make_client_app
from client.site_config import SiteConfig
from client.task import SiteTask
from common.errors import InputError
from common.privacy.ledger import Ledger, epsilon_from_ledger
from common.run_plan import RunPlan
from common.schema import Schema
from common.tabular.synthesizer import TabularSynthesizer
from server.aggregate import update_problem, weighted_average
from server.federation import FederationSettings, run_federation
from server.handshake import QuorumError
from server.settings import settings_from_run_config
from simulation.baselines import centralized_synthetic, pooled_split
from simulation.profiles import RunProfile
from tests.flower_helpers import InProcessGrid

TINY = {"batch_size": 32, "model": {"hidden": [32, 32], "latent_dim": 8}}


def _grid(configs, tamper=None) -> InProcessGrid:
    app = make_client_app(lambda ctx: configs[ctx.node_id])
    return InProcessGrid(app, {node: {} for node in configs}, tamper=tamper)


def _settings(tmp_path, schema_path, **extra) -> FederationSettings:
    base = dict(schema_path=schema_path, run_dir=tmp_path / "run", run="t", kind="vae", rounds=3,
                local_steps=4, seed=1, tabular_config=TINY, min_sites=3, quorum=2,
                handshake_timeout_s=5, round_timeout_s=60)
    return FederationSettings(**{**base, **extra})


def _ledger(config: SiteConfig) -> Ledger:
    return Ledger(config.state_dir / "t" / "ledger.jsonl")


def test_run_trains_aggregates_and_keeps_every_site_in_budget(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    result = run_federation(_grid(configs), _settings(tmp_path, schema_path))
    assert result.sites == sorted(c.name for c in configs.values())
    model = TabularSynthesizer.load(result.model_dir)
    sample = model.sample(50, seed=0)
    assert len(sample) == 50 and sample["age"].between(0, 105).all()
    untrained = TabularSynthesizer(model.schema, kind="vae", epsilon=None, config=TINY, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), untrained.get_weights(),
                                                        strict=True))
    for config in configs.values():
        entries = _ledger(config).read()
        assert [e.round for e in entries if not e.note.startswith("label counts")] == [1, 2, 3]
        spent = epsilon_from_ledger(entries, entries[-1].delta)
        assert 0 < spent <= 4.0 + 1e-9
        assert result.state.site_epsilon[config.name] == pytest.approx(spent)


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
    grid, disarm = crash_once(configs, "train.vae", "3")
    with pytest.raises(RuntimeError, match="crashed"):
        run_federation(grid, _settings(tmp_path, schema_path))
    state = json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())
    assert state["rounds_done"] == 2
    disarm()
    result = run_federation(grid, _settings(tmp_path, schema_path, resume=True))
    assert result.state.rounds_done == 3
    trained_rounds = {s.split(":")[1] for s in grid.sent if s.startswith("train.")}
    assert trained_rounds == {"3"}  # rounds 1 and 2 were not sent again
    for config in configs.values():
        entries = _ledger(config).read()
        assert [e.note for e in entries].count("label counts + class tables") == 1
        # Site 1 trained round 3 before the crash: resending it reused the saved update.
        assert [e.round for e in entries if not e.note.startswith("label counts")] == [1, 2, 3]


def _corrupt(kind: str):
    def tamper(node, reply):
        if node != 2 or not reply.metadata.message_type.startswith("train."):
            return reply
        arrays = reply.content["weights"].to_numpy_ndarrays()
        if kind == "nan":
            arrays[0] = arrays[0] * np.nan
        elif kind == "shape":
            arrays[0] = arrays[0][:1]
        else:
            arrays = [a + 1e4 for a in arrays]
        content = RecordDict({"weights": ArrayRecord(arrays),
                              "privacy": MetricRecord({"epsilon": 0.1, "round": 1})})
        return Message(content, reply_to=_as_instruction(reply))
    return tamper


def _as_instruction(reply):
    from tests.flower_helpers import instruction

    return instruction(RecordDict(), reply.metadata.message_type, dst_node_id=reply.metadata.src_node_id)


@pytest.mark.parametrize("kind, words", [("nan", "NaN"), ("shape", "shape"), ("norm", "L2")])
def test_bad_updates_are_dropped_and_logged(tmp_path, sites, server_identity, kind, words) -> None:
    schema_path, configs = sites
    result = run_federation(_grid(configs, tamper=_corrupt(kind)),
                            _settings(tmp_path, schema_path, rounds=1))
    assert len(result.state.dropped) == 1 and words in result.state.dropped[0]
    assert configs[2].name in result.state.dropped[0]
    assert all(np.isfinite(w).all() for w in TabularSynthesizer.load(result.model_dir).get_weights())


def test_quorum_not_met_stops_with_a_message(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    with pytest.raises(QuorumError, match="fewer than 3 good update"):
        run_federation(_grid(configs, tamper=_corrupt("nan")),
                       _settings(tmp_path, schema_path, rounds=1, quorum=3, round_retries=1))


def test_exhausted_budget_is_an_error_reply_that_spends_nothing(tmp_path, sites, server_identity) -> None:
    from dataclasses import replace

    from flwr.app import ConfigRecord

    from common.run_plan import RunPlan
    from tests.flower_helpers import instruction

    schema_path, configs = sites
    site = configs[1]
    plan = RunPlan(run="t", kind="vae", rounds=3, local_steps=4, seed=1, tabular_config=TINY)
    current = {"site": site}
    app = make_client_app(lambda ctx: current["site"])
    ctx = InProcessGrid(app, {1: {}}).contexts[1]
    counts = app(instruction(RecordDict({"plan": ConfigRecord(plan.to_config())}), "query.label_counts"), ctx)
    assert not counts.has_error()
    weights = TabularSynthesizer(_schema(schema_path), kind="vae", epsilon=None, config=TINY,
                                 seed=1).get_weights()

    def train(round_):
        content = RecordDict({"weights": ArrayRecord(weights), "plan": ConfigRecord(plan.to_config()),
                              "round": ConfigRecord({"round": round_})})
        return app(instruction(content, "train.vae", group_id=str(round_)), ctx)

    assert not train(1).has_error()
    before = _ledger(site).read()
    current["site"] = replace(site, epsilon_tabular=0.5)  # the steward lowers the site's budget
    reply = train(2)
    assert reply.has_error() and reply.error.code == ERROR_BUDGET
    assert "budget" in reply.error.reason.lower()
    assert _ledger(site).read() == before  # nothing trained, nothing spent


def _schema(path):
    from common.schema import Schema

    return Schema.load(path)


def test_update_checks_and_average() -> None:
    ref = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]
    assert update_problem([np.ones((2, 2), np.float32), np.ones(3, np.float32)], ref, 10) is None
    assert "dtype" in update_problem([np.ones((2, 2)), np.ones(3, np.float32)], ref, 10)
    assert "arrays" in update_problem(ref[:1], ref, 10)
    avg = weighted_average([[np.full(2, 1.0)], [np.full(2, 4.0)]], [2.0, 1.0])
    np.testing.assert_allclose(avg[0], [2.0, 2.0])
    with pytest.raises(ValueError):
        weighted_average([[np.ones(2)]], [0.0])
    assert ERROR_BUDGET == 4002


def test_error_replies_never_carry_site_details() -> None:
    from client.client_app import ERROR_INPUT, _error_reply
    from common.errors import InputError
    from tests.flower_helpers import instruction

    msg = instruction(RecordDict(), "train.vae")
    reply = _error_reply(msg, InputError("column 'age' has 1 value(s) outside bounds (e.g. 131)"))
    assert reply.error.code == ERROR_INPUT
    assert "131" not in reply.error.reason and "age" not in reply.error.reason


# --- FedProx ------------------------------------------------------------------------------------
def test_proximal_mu_travels_from_the_run_config_to_the_sites_plan() -> None:
    settings = settings_from_run_config({"schema-path": "schema.yaml", "proximal-mu": 0.5})
    received = RunPlan.from_config(ConfigRecord(settings.plan.to_config()))
    assert received == settings.plan and received.proximal_mu == 0.5
    assert settings_from_run_config({"schema-path": "schema.yaml"}).plan.proximal_mu == 0.0  # FedAvg
    with pytest.raises(InputError, match="proximal_mu"):
        replace(settings, proximal_mu=-1.0).plan  # noqa: B018


def test_fedprox_keeps_a_site_near_the_global_model_at_no_privacy_cost(tmp_path, sites) -> None:
    """Same data, seeds and global weights: a strong proximal term shortens the site's step away
    from the global model and leaves the epsilon spent unchanged."""
    schema_path, configs = sites
    config = {**TINY, "dp_seed": 3}
    start = TabularSynthesizer(Schema.load(schema_path), kind="vae", epsilon=None, config=config,
                               seed=1).get_weights()

    def first_round(mu: float) -> tuple[float, float]:
        plan = RunPlan(run="t", kind="vae", rounds=1, local_steps=20, seed=1, tabular_config=config,
                       proximal_mu=mu)
        task = SiteTask(replace(configs[1], state_dir=tmp_path / f"mu-{mu}"), plan)
        task.label_counts()
        weights, epsilon = task.train_round(1, start)
        return float(np.sqrt(sum(((w - s) ** 2).sum() for w, s in zip(weights, start, strict=True)))), epsilon

    (free, spent_free), (pulled, spent_pulled) = first_round(0.0), first_round(10.0)
    assert pulled < 0.6 * free, (pulled, free)
    assert spent_pulled == spent_free


# --- baselines ----------------------------------------------------------------------------------
def test_local_only_baseline_trains_once_under_its_own_name_in_the_site_ledger(sites) -> None:
    schema_path, configs = sites
    site = configs[1]
    plan = RunPlan(run="t", kind="vae", rounds=3, local_steps=4, seed=1, tabular_config=TINY)
    first = SiteTask(site, plan).local_only_synthetic(40, seed=0)
    again = SiteTask(site, plan).local_only_synthetic(40, seed=0)  # a restarted site: no new spend
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 40 and first["age"].between(0, 105).all()
    entries = _ledger(site).read()
    assert [(e.model, e.note, e.steps) for e in entries] == [
        ("tabular-vae-local", "label counts + class tables", 1), ("tabular-vae-local", "", 3 * 4)]
    assert 0 < entries[-1].epsilon_after <= site.epsilon_tabular + 1e-9


def test_centralized_baseline_trains_on_the_sites_train_splits_pooled(sites) -> None:
    schema_path, configs = sites
    schema = Schema.load(schema_path)
    files = {c.name: c.data_path for c in configs.values()}
    plan = RunPlan(run="t", kind="vae", rounds=3, local_steps=4, seed=1, tabular_config=TINY)
    pooled = pooled_split(files, schema, seed=1)
    assert len(pooled) == sum(len(SiteTask(c, plan).train_split()) for c in configs.values())
    profile = RunProfile("t", sites=3, records_per_site=150, rounds=3, local_steps=4,
                         synthetic_records=30, tabular_config=TINY)
    synthetic = centralized_synthetic(files, schema, profile, "vae", epsilon=4.0, seed=1)
    assert len(synthetic) == 30
    assert list(synthetic.columns) == [c.name for c in schema.modeled_columns]


def test_round_one_starts_from_the_sum_of_the_sites_dp_tables(tmp_path, sites, server_identity) -> None:
    """Each site releases its class tables with its counts (one charged release); the server
    initialises the global label path from their sum before the first round."""
    schema_path, configs = sites
    grid = _grid(configs)
    result = run_federation(grid, _settings(tmp_path, schema_path, rounds=1))
    tables = result.state.label_tables
    assert sorted(tables) == result.sites
    expected = TabularSynthesizer(_schema(schema_path), kind="vae", epsilon=None, config=TINY, seed=1)
    untrained = expected.get_weights()
    expected.set_label_tables(np.sum(list(tables.values()), axis=0))
    sent = [m.content["weights"].to_numpy_ndarrays() for m in grid.messages
            if m.metadata.message_type == "train.vae"]
    assert sent and all(np.array_equal(a, b) for a, b in zip(sent[0], expected.get_weights(), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(sent[0], untrained, strict=True))
    for config in configs.values():
        release = _ledger(config).read()[0]
        assert (release.note, release.round) == ("label counts + class tables", None)
