"""The narrative stage of a federated run over the in-process Grid (tiny Gemma 3): DP-LoRA
rounds at the sites (``train.lora``), only B matrices on the wire, exact FedAvg of the adapters,
the global adapter saved with peft, narratives for the released records, and a resume that
spends nothing twice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from common.privacy.ledger import epsilon_from_ledger
from common.synthesis import synthesize
from common.text.base_models import load_base_model
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel
from server.federation import run_federation
from tests.test_federation import _grid, _ledger, _settings, crash_once

torch.set_num_threads(1)
TEXT = {"base": "tiny", "fields": ["mechanism", "age", "sex", "body_region"], "batch_size": 16,
        "max_target_tokens": 32, "sampling": {"max_new_tokens": 12, "batch_size": 16, "retries": 1}}


def _text_settings(tmp_path, schema_path, **extra):
    return _settings(tmp_path, schema_path, rounds=1, text_config=TEXT, text_rounds=2,
                     text_local_steps=2, **extra)


def test_adapters_are_averaged_saved_with_peft_and_write_narratives(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    grid = _grid(configs)
    settings = _text_settings(tmp_path, schema_path, synthetic_records=40, narrated_records=30)
    result = run_federation(grid, settings)
    lora = [m for m in grid.messages if m.metadata.message_type == "train.lora"]
    assert len(lora) == 2 * len(configs)
    server_copy = NarrativeModel(_schema(schema_path), epsilon=None, config=TEXT)
    b_names = [n for n, p in server_copy.model.named_parameters() if p.requires_grad]
    assert b_names and all("lora_B" in n for n in b_names)  # FFA-LoRA: only B is trained
    sent = lora[0].content["weights"].to_numpy_ndarrays()
    assert len(sent) == len(b_names)  # and only B travels
    # The global adapter is the DP-count-weighted mean of the sites' round-2 updates.
    updates, sizes = [], []
    for config in configs.values():
        saved = np.load(config.state_dir / "t" / "text-lora" / "round-0002.npz")
        updates.append([saved[f"w{i}"] for i in range(len(saved.files) - 1)])
        sizes.append(sum(result.state.label_counts[config.name]))
    expected = [sum(w * u[i] for w, u in zip(np.array(sizes) / sum(sizes), updates, strict=True))
                for i in range(len(updates[0]))]
    global_model = NarrativeModel.load(result.model_dir)
    for got, want in zip(global_model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert any(np.abs(w).sum() > 0 for w in global_model.get_weights())  # B starts at zero
    # Any peft user can load the adapter onto the base model.
    base, _ = load_base_model("tiny", schema=global_model.schema)
    peft_model = PeftModel.from_pretrained(base, result.model_dir / "adapter")
    state = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert len(state) == len(b_names)
    # Each site spent its text budget in its ledger, rounds 1 and 2, within epsilon_text.
    for config in configs.values():
        entries = _ledger(config).read()
        text = [e for e in entries if e.model == "text-lora"]
        assert [e.round for e in text] == [1, 2]
        assert 0 < text[-1].epsilon_after <= config.epsilon_text + 1e-9
        assert result.state.text_epsilon[config.name] == pytest.approx(text[-1].epsilon_after)
        assert epsilon_from_ledger(entries, entries[-1].delta) > text[-1].epsilon_after
    # The release: narratives for the first 30 records, flags from the gate, the rest empty.
    released = pd.read_parquet(tmp_path / "run" / "synthetic.parquet")
    assert released["narrative"].iloc[:30].notna().all() and released["narrative"].iloc[30:].isna().all()
    assert released[FLAG_COLUMN].iloc[:30].notna().all()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert sorted(report["privacy"]["per_site"]) == sorted(c.name for c in configs.values())
    for site, spend in report["privacy"]["per_site"].items():
        assert spend["epsilon_text"] == pytest.approx(result.state.text_epsilon[site])
    # `fedsynth generate` finds the adapter and writes narratives too.
    generated = synthesize(result.model_dir, 5, seed=1)
    assert generated["narrative"].notna().all()
    assert "narrative" not in synthesize(result.model_dir, 5, seed=1, text=False)


def _schema(schema_path):
    from common.schema import Schema

    return Schema.load(schema_path)


def test_text_rounds_resume_without_spending_twice(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    grid, disarm = crash_once(configs, "train.lora", "lora-2")
    with pytest.raises(RuntimeError, match="crashed"):
        run_federation(grid, _text_settings(tmp_path, schema_path))
    disarm()
    result = run_federation(grid, _text_settings(tmp_path, schema_path, resume=True))
    assert result.state.text_rounds_done == 2
    assert {s.split(":")[1] for s in grid.sent if s.startswith("train.")} == {"lora-2"}
    for config in configs.values():
        rounds = [e.round for e in _ledger(config).read() if e.model == "text-lora"]
        assert rounds == [1, 2]  # the site that trained round 2 before the crash answered from disk


def test_the_narrative_stage_travels_from_the_run_config_to_the_sites_plan() -> None:
    """A deployment turns narratives on in run_config; every site receives the same plan."""
    from flwr.app import ConfigRecord

    from common.errors import InputError
    from common.run_plan import RunPlan
    from server.settings import settings_from_run_config

    settings = settings_from_run_config({
        "schema-path": "schema.yaml", "text-config": json.dumps({"base": "local:/models/medgemma"}),
        "text-rounds": 3, "text-local-steps": 20, "narrated-records": 500})
    received = RunPlan.from_config(ConfigRecord(settings.plan.to_config()))
    assert received == settings.plan and received.has_text
    assert received.text_config == {"base": "local:/models/medgemma"} and received.text_rounds == 3
    assert settings.narrated_records == 500
    plain = settings_from_run_config({"schema-path": "schema.yaml"})
    assert not plain.plan.has_text and plain.narrated_records is None
    with pytest.raises(InputError, match="text-config is not JSON"):
        settings_from_run_config({"schema-path": "s.yaml", "text-config": "{base: tiny"})
    with pytest.raises(InputError, match="text rounds"):
        RunPlan(run="r", kind="vae", rounds=1, local_steps=1, seed=0, tabular_config={},
                text_config={"base": "tiny"}, text_rounds=0)
