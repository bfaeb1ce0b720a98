"""The narrative stage of a federated run over the in-process Grid (tiny Gemma 3): DP-LoRA
rounds at the sites (the same ``train.fedavg`` stage type as the tabular rounds), only B matrices
on the wire, exact FedAvg of the adapters, the global adapter saved with peft, narratives for the
released records, and a resume that spends nothing twice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from common.privacy.ledger import epsilon_from_ledger
from common.stages.site import SiteRun
from common.synthesis import synthesize
from common.text.base_models import load_base_model
from common.text.narrative_model import FLAG_COLUMN, NarrativeModel
from fedsynth.cli import main
from server.federation import run_federation
from tests.flower_helpers import site_entries
from tests.test_federation import _grid, _settings, crash_once

torch.set_num_threads(1)
TEXT_ROUNDS = "3-fedavg-text"  # the standard plan's third stage
TEXT = {"base": "tiny", "max_noise_per_batch": None,  # mechanics, not learning
        "fields": ["mechanism", "age", "sex", "body_region"], "batch_size": 16,
        "max_target_tokens": 32, "sampling": {"max_new_tokens": 12, "batch_size": 16, "retries": 1}}


def _text_settings(tmp_path, schema_path, **extra):
    return _settings(tmp_path, schema_path, rounds=1, text_config=TEXT, text_rounds=2,
                     text_local_steps=2, **extra)


def test_adapters_are_averaged_saved_with_peft_and_write_narratives(tmp_path, sites, server_identity,
                                                                    capsys) -> None:
    schema_path, configs = sites
    grid = _grid(configs)
    settings = _text_settings(tmp_path, schema_path, synthetic_records=120, narrated_records=30)
    result = run_federation(grid, settings)
    lora = [m for m in grid.messages if m.metadata.group_id.startswith(TEXT_ROUNDS)]
    assert len(lora) == 2 * len(configs)
    server_copy = NarrativeModel(_schema(schema_path), epsilon=None, config=TEXT)
    b_names = [n for n, p in server_copy.model.named_parameters() if p.requires_grad]
    assert b_names and all("lora_B" in n for n in b_names)  # FFA-LoRA: only B is trained
    sent = dict(lora[0].content["arrays"])
    assert len(sent) == len(b_names) and all("lora_B" in name for name in sent)  # only B travels
    # The global adapter is the DP-count-weighted mean of the sites' round-2 updates.
    updates, sizes = [], []
    for config in configs.values():
        folder = SiteRun(config, settings.plan).folder / "replies"
        with np.load(folder / f"{TEXT_ROUNDS}-0001.npz") as saved:
            updates.append({name: saved[name] for name in saved.files})
        sizes.append(result.state.weights[config.name])
    shares = np.array(sizes) / sum(sizes)
    global_model = NarrativeModel.load(result.model_dir)
    for name, got in global_model.get_weights().items():
        want = sum(w * u[name] for w, u in zip(shares, updates, strict=True))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert any(np.abs(w).sum() > 0 for w in global_model.get_weights().values())  # B starts at zero
    # Any peft user can load the adapter onto the base model.
    base, _ = load_base_model("tiny", schema=global_model.schema)
    peft_model = PeftModel.from_pretrained(base, result.model_dir / "adapter")
    state = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert len(state) == len(b_names)
    # Each site spent its text budget in its ledger, rounds 1 and 2, within epsilon_text.
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for config in configs.values():
        entries = site_entries(config)
        text = [e for e in entries if e.model == "text-lora"]
        assert [e.round for e in text] == [1, 2]
        assert 0 < text[-1].epsilon_after <= config.epsilon_text + 1e-9
        assert report["privacy"]["per_site"][config.name]["epsilon_text"] == pytest.approx(
            text[-1].epsilon_after, abs=1e-4)
        assert epsilon_from_ledger(entries, entries[-1].delta) > text[-1].epsilon_after
    # The release: narratives for the first 30 records, flags from the gate, the rest empty.
    released = pd.read_parquet(tmp_path / "run" / "synthetic.parquet")
    assert released["narrative"].iloc[:30].notna().all() and released["narrative"].iloc[30:].isna().all()
    assert released[FLAG_COLUMN].iloc[:30].notna().all()
    assert sorted(report["privacy"]["per_site"]) == sorted(c.name for c in configs.values())
    # `fedsynth generate` finds the adapter and writes narratives too.
    generated = synthesize(result.model_dir, 5, seed=1)
    assert generated["narrative"].notna().all()
    assert "narrative" not in synthesize(result.model_dir, 5, seed=1, text=False)
    # The command line narrates a subset when asked, says so up front, and refuses a bad count.
    out = tmp_path / "some.csv"
    assert main(["generate", "--model", str(result.model_dir), "--n", "6", "--narrate", "2",
                 "--seed", "1", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "Narrating 2 of 6 records" in said.err and "2 with a narrative" in said.out
    assert pd.read_csv(out)["narrative"].notna().tolist() == [True, True] + [False] * 4
    assert main(["generate", "--model", str(result.model_dir), "--n", "6", "--narrate", "some",
                 "--out", str(tmp_path / "bad.csv")]) == 2
    assert "--narrate 'some'" in capsys.readouterr().err and not (tmp_path / "bad.csv").exists()


def _schema(schema_path):
    from common.schema import Schema

    return Schema.load(schema_path)


def test_text_rounds_resume_without_spending_twice(tmp_path, sites, server_identity) -> None:
    schema_path, configs = sites
    grid, disarm = crash_once(configs, "train.fedavg", f"{TEXT_ROUNDS}-2")
    with pytest.raises(RuntimeError, match="crashed"):
        run_federation(grid, _text_settings(tmp_path, schema_path))
    disarm()
    result = run_federation(grid, _text_settings(tmp_path, schema_path, resume=True))
    assert result.state.steps_done(TEXT_ROUNDS) == 2
    assert {s.split(":")[1] for s in grid.sent if s.startswith("train.")} == {f"{TEXT_ROUNDS}-2"}
    for config in configs.values():
        rounds = [e.round for e in site_entries(config) if e.model == "text-lora"]
        assert rounds == [1, 2]  # the site that trained round 2 before the crash answered from disk


def test_the_narrative_stage_travels_from_the_run_config_to_the_sites_plan() -> None:
    """A deployment turns narratives on in run_config; every site receives the same plan."""
    from common.errors import InputError
    from common.run_plan import RunPlan
    from server.settings import settings_from_run_config

    settings = settings_from_run_config({
        "schema-path": "schema.yaml", "text-config": json.dumps({"base": "local:/models/medgemma"}),
        "text-rounds": 3, "text-local-steps": 20, "narrated-records": 500})
    received = RunPlan.from_json(settings.plan.to_json())
    assert received == settings.plan and received.has_text
    assert received.models["text"].config == {"base": "local:/models/medgemma"}
    assert received.stages[-1].params["rounds"] == 3 and received.planned_steps("text") == 60
    assert settings.narrated_records == 500
    plain = settings_from_run_config({"schema-path": "schema.yaml"})
    assert not plain.plan.has_text and plain.narrated_records is None
    with pytest.raises(InputError, match="text-config is not JSON"):
        settings_from_run_config({"schema-path": "s.yaml", "text-config": "{base: tiny"})
    with pytest.raises(InputError, match="text rounds"):
        RunPlan.standard(run="r", kind="vae", rounds=1, local_steps=1, seed=0, tabular_config={},
                         text_config={"base": "tiny"}, text_rounds=0)
