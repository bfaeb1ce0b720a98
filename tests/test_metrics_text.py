"""Text metrics (CONTRACT METRICS ``text``) move the right way on planted cases.

Two simulated hospitals: site 1 is the site scoring, site 2's records (real narratives that site 1
never saw, each with its own record) stand in for a good synthetic set. Shuffling those narratives
across records must cost consistency but not MAUVE (the texts are the same), word salad must cost
both, and a corpus of one repeated sentence must have a far lower distinct-2. MAUVE's ceiling
(real notes against real notes) must be high and the same whatever the synthetic text; the
lexical view must be another view than MiniLM's; the gate's pass rate reads the flag column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.data import load_site_data, stratified_split
from common.metrics.bins import MIN_CELL
from common.metrics.evaluate import evaluate_site, summarize
from common.metrics.text import (
    FLAG_COLUMN,
    LEXICAL_DIMENSIONS,
    MAUVE_KEYS,
    MAUVE_MIN_TEXTS,
    distinct_n,
    gate_pass_rate,
    lexical_features,
    mauve_figures,
    ngram_overlap,
    text_metrics,
)
from common.privacy.disclosure import SMALL
from common.schema import Schema
from simulation.hospitals import write_sim_data

TEXT_KEYS = {"consistency_accuracy", "real_consistency_accuracy", "mauve", "mauve_ceiling", "mauve_alt",
             "mauve_alt_ceiling", "distinct_2", "real_distinct_2", "gate_pass_rate",
             "canary_exposure_bits", "train_8gram_share"}
N_SYNTHETIC = 300
REPEATED = "45YOM FELL FROM LADDER AT HOME DX: FX RIGHT WRIST. DC'D HOME"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> tuple[Schema, dict[str, pd.DataFrame], pd.DataFrame]:
    """Site 1's splits (312 / 94 / 94) and N_SYNTHETIC records of site 2, read from the CSVs."""
    root = tmp_path_factory.mktemp("text")
    *sites, schema_path = write_sim_data(root, 2, 500, seed=7)
    schema = Schema.load(schema_path)
    site1, site2 = (load_site_data(path, schema) for path in sites)
    synthetic = site2.iloc[:N_SYNTHETIC].reset_index(drop=True)
    return schema, stratified_split(site1, "mechanism", seed=0), synthetic


def with_narratives(frame: pd.DataFrame, narratives: list[str] | np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    out["narrative"] = pd.array(list(narratives), dtype="string")
    return out


def planted(sim) -> dict[str, pd.DataFrame]:
    schema, split, synthetic = sim
    rng = np.random.default_rng(0)
    texts = synthetic["narrative"].tolist()
    vocabulary = sorted({w for t in split["train"]["narrative"] for w in t.split()})  # the site's words
    salad = [" ".join(rng.choice(vocabulary, size=len(t.split()))) for t in texts]
    # Every seventh letter doubled ("FRACTTURE"): MiniLM's word pieces break, most character
    # n-grams survive.
    doubled = ["".join(c * 2 if c.isalpha() and i % 7 == 0 else c for i, c in enumerate(t)) for t in texts]
    flagged = synthetic.copy()  # the gate flagged 3 notes in 20
    flagged[FLAG_COLUMN] = pd.array([i % 20 < 3 for i in range(len(texts))], dtype="boolean")
    return {"real": flagged,
            "shuffled": with_narratives(synthetic, [texts[i] for i in rng.permutation(len(texts))]),
            "salad": with_narratives(synthetic, salad),
            "repeated": with_narratives(synthetic, [REPEATED] * len(texts)),
            "doubled": with_narratives(synthetic, doubled)}


@pytest.fixture(scope="module")
def scored(sim) -> dict[str, dict]:
    schema, split, _ = sim
    out = {name: text_metrics(schema, split["train"], split["test"], frame, seed=0,
                              holdout=split["holdout"])
           for name, frame in planted(sim).items()}
    for name, metrics in out.items():
        print(name, {k: v if v is None or isinstance(v, str) else round(v, 3)
                     for k, v in metrics.items()})
    return out


def test_real_narratives_score_near_the_ceiling(scored) -> None:
    real = scored["real"]
    assert set(real) == TEXT_KEYS and real["canary_exposure_bits"] is None
    assert real["real_consistency_accuracy"] > 0.75  # the classifier reads mechanisms well
    assert real["consistency_accuracy"] > real["real_consistency_accuracy"] - 0.1
    assert real["mauve"] > 0.85
    assert real["distinct_2"] == pytest.approx(real["real_distinct_2"], abs=0.1)
    # The real-side figures do not depend on the synthetic text.
    for name in ("shuffled", "salad", "repeated", "doubled"):
        for key in ("real_consistency_accuracy", "mauve_ceiling", "mauve_alt_ceiling"):
            assert scored[name][key] == real[key], (name, key)


def test_the_mauve_ceiling_is_what_real_notes_score(scored) -> None:
    """Real notes against other real notes of the site score high on both embeddings, far above
    unlike text; another hospital's real notes score near the ceiling."""
    real = scored["real"]
    assert real["mauve_ceiling"] > 0.8 and real["mauve_alt_ceiling"] > 0.8
    for name in ("salad", "repeated"):
        assert scored[name]["mauve"] < real["mauve_ceiling"] - 0.5, name
        assert scored[name]["mauve_alt"] < real["mauve_alt_ceiling"] - 0.4, name
    assert real["mauve"] > real["mauve_ceiling"] - 0.15
    assert real["mauve_alt"] > real["mauve_alt_ceiling"] - 0.15


def test_the_lexical_view_is_not_minilm(sim, scored) -> None:
    """Doubled letters break MiniLM's word pieces (its MAUVE falls) but leave most character
    n-grams and many words of the lexical view; its rows are LEXICAL_DIMENSIONS wide, fitted on
    the two sets compared, unit length."""
    doubled = scored["doubled"]
    print("doubled letters: MiniLM", doubled["mauve"], "lexical", doubled["mauve_alt"])
    assert doubled["mauve"] < 0.5
    assert doubled["mauve_alt"] > doubled["mauve"] + 0.25
    _, split, synthetic = sim
    p, q = lexical_features(synthetic["narrative"].tolist(), split["test"]["narrative"].tolist())
    assert p.shape == (len(synthetic), LEXICAL_DIMENSIONS) and q.shape == (len(split["test"]),
                                                                         LEXICAL_DIMENSIONS)
    assert np.allclose(np.linalg.norm(np.vstack([p, q]), axis=1), 1.0)


def test_the_ceiling_uses_other_real_notes_at_the_same_size(sim) -> None:
    """The ceiling compares the same real sample as ``mauve`` with as many other real notes; with
    too few others it is computed at the largest equal size (the real side cut to it), under
    MAUVE_MIN_TEXTS it is None."""
    _, split, synthetic = sim
    synth, real = synthetic["narrative"].tolist()[:80], split["test"]["narrative"].tolist()[:80]
    others = split["holdout"]["narrative"].tolist()
    full = mauve_figures(synth, real, others, seed=0)
    assert set(full) == set(MAUVE_KEYS) and all(v is not None for v in full.values())
    short = mauve_figures(synth, real, others[:60], seed=0)
    assert short["mauve"] == full["mauve"] and short["mauve_alt"] == full["mauve_alt"]
    at_60 = mauve_figures(others[:60], real[:60], [], seed=0)  # others[:60] vs real[:60]
    assert short["mauve_ceiling"] == at_60["mauve"]
    assert short["mauve_alt_ceiling"] == at_60["mauve_alt"]
    assert at_60["mauve_ceiling"] is None and at_60["mauve_alt_ceiling"] is None
    too_few = mauve_figures(synth, real, others[:MAUVE_MIN_TEXTS - 1], seed=0)
    assert too_few["mauve_ceiling"] is None and too_few["mauve"] == full["mauve"]
    assert set(mauve_figures(synth[:MAUVE_MIN_TEXTS - 1], real, others).values()) == {None}


def test_gate_pass_rate_reads_the_flag_column(sim, scored) -> None:
    schema, _, synthetic = sim
    assert scored["real"]["gate_pass_rate"] == pytest.approx(0.85)  # 3 notes in 20 flagged
    assert scored["salad"]["gate_pass_rate"] is None  # no flag column: a set from elsewhere
    frame = synthetic.iloc[:40].copy()
    frame[FLAG_COLUMN] = pd.array([i % 20 < 3 for i in range(40)], dtype="boolean")
    assert gate_pass_rate(frame, schema) == pytest.approx(0.85)
    # only rows with a narrative and a known flag count: blank notes and unknown flags do not
    frame.loc[frame.index[20:], "narrative"] = pd.array(["  "] * 10 + [None] * 10, dtype="string")
    frame.loc[frame.index[20:], FLAG_COLUMN] = True
    assert gate_pass_rate(frame, schema) == pytest.approx(0.85)
    frame.loc[frame.index[:2], FLAG_COLUMN] = pd.NA
    assert gate_pass_rate(frame, schema) == pytest.approx(1 - 1 / 18)
    assert gate_pass_rate(frame.iloc[:11], schema) is None  # 9 known flags: too few
    assert gate_pass_rate(synthetic, schema) is None


def test_the_flag_column_is_the_narrative_models() -> None:
    from common.text.narrative_model import FLAG_COLUMN as MODEL_FLAG

    assert FLAG_COLUMN == MODEL_FLAG


def test_narratives_that_disagree_with_their_records_lose_consistency(scored) -> None:
    real, shuffled, salad = scored["real"], scored["shuffled"], scored["salad"]
    assert shuffled["consistency_accuracy"] < real["consistency_accuracy"] - 0.4
    assert salad["consistency_accuracy"] < real["consistency_accuracy"] - 0.4
    # Shuffled narratives are still real text: MAUVE and distinct-2 see no difference.
    assert shuffled["mauve"] > 0.85
    assert shuffled["distinct_2"] == pytest.approx(real["distinct_2"], abs=0.02)


def test_unlike_text_loses_mauve(scored) -> None:
    assert scored["salad"]["mauve"] < 0.2
    assert scored["repeated"]["mauve"] < 0.2
    assert scored["salad"]["distinct_2"] > 0.9  # random words rarely repeat a pair


def test_a_repetitive_corpus_has_a_low_distinct_2(scored) -> None:
    repeated = scored["repeated"]
    assert repeated["distinct_2"] < 0.05 < 0.4 < repeated["real_distinct_2"]
    assert distinct_n(["a b a b"]) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["A b.", "a B"]) == 0.5  # lower-cased words, punctuation dropped
    assert distinct_n(["a b", "c d"]) == 1.0  # no bigram across texts
    assert distinct_n(["one", ""]) is None


def test_none_without_narratives(sim) -> None:
    schema, split, synthetic = sim
    train, test = split["train"], split["test"]
    no_text = Schema(name=schema.name, columns=tuple(c for c in schema.columns if c.role != "narrative"))
    assert text_metrics(no_text, train, test, synthetic) is None
    assert text_metrics(schema, train, test, synthetic.drop(columns="narrative")) is None
    few = with_narratives(synthetic, [t if i < MIN_CELL - 1 else None
                                      for i, t in enumerate(synthetic["narrative"])])
    assert text_metrics(schema, train, test, few) is None
    blank_test = with_narratives(test, [t if i < MIN_CELL - 1 else "  "
                                        for i, t in enumerate(test["narrative"])])
    assert text_metrics(schema, train, blank_test, synthetic) is None


def test_partial_narratives_use_only_the_written_rows(sim) -> None:
    schema, split, synthetic = sim
    train, test = split["train"], split["test"]
    texts = synthetic["narrative"].tolist()
    # Every other row loses its narrative (missing, empty or blank) and gets another label: were
    # those rows scored, they would count as inconsistent.
    partial = with_narratives(synthetic, [t if i % 2 == 0 else (None, "", "   ")[i % 3]
                                          for i, t in enumerate(texts)])
    other = "firearm"
    partial.loc[partial.index % 2 == 1, "mechanism"] = other
    written = synthetic.iloc[::2].reset_index(drop=True)
    assert text_metrics(schema, train, test, partial, seed=3) == text_metrics(schema, train, test, written,
                                                                              seed=3)
    # Just enough narratives for a figure, too few for MAUVE's buckets.
    assert MIN_CELL < MAUVE_MIN_TEXTS
    sparse = text_metrics(schema, train, test, written.iloc[:MIN_CELL])
    assert set(sparse) == TEXT_KEYS and all(sparse[key] is None for key in MAUVE_KEYS)
    assert sparse["consistency_accuracy"] is not None and sparse["distinct_2"] is not None


def test_evaluate_site_fills_the_text_block(sim) -> None:
    schema, split, synthetic = sim
    text = evaluate_site(schema, split, synthetic, seed=1).metrics["text"]
    assert set(text) == TEXT_KEYS and text["canary_exposure_bits"] is None
    assert text["mauve"] > 0.85 and text["consistency_accuracy"] > 0.7
    assert text["mauve_ceiling"] > 0.8 and text["mauve_alt"] is not None  # holdout notes passed
    assert all(round(v, 4) == v for v in text.values()  # rounded like every figure
               if v is not None and not isinstance(v, str))
    share = text["train_8gram_share"]
    assert share == SMALL or isinstance(share, float)


def test_summarize_averages_text_over_the_sites_that_have_it() -> None:
    def metrics(n_test: int, text: dict | None) -> dict:
        return {"n_train": 3 * n_test, "n_test": n_test, "text": text}

    block = dict.fromkeys(TEXT_KEYS, 0.5) | {"mauve": 0.9, "canary_exposure_bits": None}
    summary = summarize({"a": metrics(100, block), "b": metrics(300, None),
                         "c": metrics(100, block | {"mauve": 0.7})})
    assert summary["text"]["mauve"] == pytest.approx(0.8)  # sites a and c, equal weights
    assert summary["text"]["canary_exposure_bits"] is None  # null everywhere stays null
    assert summarize({"b": metrics(300, None)})["text"] is None


def test_copied_train_narratives_are_caught_by_the_8gram_scan(sim) -> None:
    """Another hospital's notes share few 8-word runs with this site's train notes; the train
    notes themselves, released as synthetic, share nearly all of theirs."""
    schema, split, synthetic = sim
    other = text_metrics(schema, split["train"], split["test"], synthetic, seed=0)
    copied = text_metrics(schema, split["train"], split["test"], split["train"], seed=0)
    print("8-gram share: another site", other["train_8gram_share"], "copies", copied["train_8gram_share"])
    assert copied["train_8gram_share"] > 0.95  # (a note under 8 words has no 8-gram)
    shared = ngram_overlap(written_texts(synthetic), written_texts(split["train"]))["with_overlap"]
    if shared < MIN_CELL:  # fewer than ten notes share one: the count is not released
        assert other["train_8gram_share"] == SMALL
    else:
        assert other["train_8gram_share"] == pytest.approx(shared / len(synthetic))
        assert other["train_8gram_share"] < 0.5


def written_texts(frame: pd.DataFrame) -> list[str]:
    return frame["narrative"].dropna().astype(str).str.strip().loc[lambda t: t != ""].tolist()


def test_an_8gram_share_of_fewer_than_ten_notes_is_written_small(sim) -> None:
    """The number of synthetic notes is public, so a share would give the count: under ten notes
    sharing an 8-gram with train, the figure is "<10"; from ten on it is the share."""
    schema, split, synthetic = sim
    synthetic = synthetic.iloc[:MAUVE_MIN_TEXTS - 10]  # too few for MAUVE (slow, and not tested here)
    train = split["train"]
    fresh = with_narratives(synthetic, [f"NOTE NUMBER {i} WITH NO WORDS OF ANY REAL TRAUMA NOTE"
                                        for i in range(len(synthetic))])
    copies = [t for t in train["narrative"] if len(t.split()) >= 12][:MIN_CELL]
    assert len(copies) == MIN_CELL

    def share(n_copied: int) -> float | str:
        texts = [*copies[:n_copied], *fresh["narrative"].iloc[n_copied:]]
        return text_metrics(schema, train, split["test"], with_narratives(synthetic, texts),
                            seed=0)["train_8gram_share"]

    assert share(0) == SMALL
    assert share(MIN_CELL - 1) == SMALL
    assert share(MIN_CELL) == pytest.approx(MIN_CELL / len(synthetic))
