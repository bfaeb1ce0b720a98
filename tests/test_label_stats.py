"""Class-conditional tables: exact counts, their sensitivity, the DP release, and the model
initialisation they give (an untrained VAE that already samples p(column | label))."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.encoding import TableEncoder
from common.privacy.ledger import Ledger
from common.tabular.label_stats import cells, label_tables, sensitivity
from common.tabular.synthesizer import TabularSynthesizer
from tests.test_encoding import random_frame, small_schema

VAE = {"model": {"hidden": [16], "latent_dim": 4}, "batch_size": 64, "steps": 5}


@pytest.fixture(scope="module")
def schema():
    return small_schema()


def skewed_frame(schema, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """region depends on the label: falls hit the head, burns the limbs."""
    frame = random_frame(schema, n, seed)
    region = np.where(frame["mechanism"] == "fall", "head",
                      np.where(frame["mechanism"] == "burn", "limb", "torso"))
    frame["region"] = pd.Categorical(region, categories=schema["region"].categories)
    return frame


def test_tables_count_each_span_per_class(schema) -> None:
    encoder = TableEncoder(schema)
    frame = random_frame(schema, 300, seed=2)
    x, y = encoder.encode(frame)
    tables = label_tables(x, y, encoder.spans, encoder.n_classes)
    assert tables.shape == (encoder.n_classes, sum(cells(s) for s in encoder.spans))
    start = 0
    for span in encoder.spans:
        block = tables[:, start:start + cells(span)]
        start += cells(span)
        observed = frame[span.column].notna() if span.kind != "missing" else pd.Series(True, frame.index)
        for k, cls in enumerate(encoder.classes):
            assert block[k].sum() == ((frame["mechanism"] == cls) & observed).sum()


def test_one_record_moves_the_release_by_at_most_its_sensitivity(schema) -> None:
    encoder = TableEncoder(schema)
    frame = random_frame(schema, 200, seed=3)
    x, y = encoder.encode(frame)

    def release(xs, ys):
        counts = np.bincount(ys, minlength=encoder.n_classes)
        return np.concatenate([counts, label_tables(xs, ys, encoder.spans, encoder.n_classes).ravel()])

    full = release(x, y)
    for i in range(0, 200, 17):
        keep = np.arange(200) != i
        change = np.linalg.norm(full - release(x[keep], y[keep]))
        assert 0 < change <= sensitivity(encoder.spans) + 1e-9


def test_release_is_one_charged_gaussian_release(schema) -> None:
    ledger = Ledger()
    synth = TabularSynthesizer(schema, kind="vae", epsilon=2.0, config=VAE, device="cpu", ledger=ledger,
                               noise_seed=1)
    frame = skewed_frame(schema)
    synth.fit(frame)
    release, training = ledger.read()
    assert release.note == "label counts + class tables" and (release.sample_rate, release.steps) == (1.0, 1)
    assert 0.99 < release.epsilon_after <= 1.0  # the default half of epsilon
    assert synth.released_label_tables().shape[0] == 5 and 1.98 < synth.epsilon_spent() <= 2.0
    # the plan computed without a model leaves the same half for the tables' release
    planned = TabularSynthesizer.planned_releases("vae", VAE, 2.0, synth.delta, len(frame), VAE["steps"])
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in (release, training)] == planned


def test_initialised_vae_samples_class_conditional_marginals(schema) -> None:
    """Before any training step, the tables alone make the region depend on the label; the same
    untrained model without them does not."""
    frame = skewed_frame(schema, n=2000)
    encoder = TableEncoder(schema)
    x, y = encoder.encode(frame)

    def head_share(init: bool) -> dict[str, float]:
        synth = TabularSynthesizer(schema, kind="vae", epsilon=None, config=VAE, device="cpu", seed=0)
        if init:
            synth.set_label_tables(label_tables(x, y, encoder.spans, encoder.n_classes))
        out = {cls: synth.sample(300, conditions={"mechanism": cls}, seed=1) for cls in ("fall", "burn")}
        return {cls: float((d["region"] == "head").mean()) for cls, d in out.items()}

    with_tables, without = head_share(True), head_share(False)
    assert with_tables["fall"] > 0.8 and with_tables["burn"] < 0.1
    assert abs(without["fall"] - without["burn"]) < 0.2
