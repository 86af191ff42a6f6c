"""Checking a model directory against the model it came from: the probe texts and the cosine
(embeddings), or the largest score difference (cross-encoders).

Shared by ``export`` (this package against sentence-transformers), ``fuse`` (fused graph against
plain graph) and ``quantize`` (int8 against float), and by the benchmark and the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import Embedder
from ..engine.scores import Scorer

#: Probe texts for the parity check: short and long, several scripts, emoji, empty, and one text
#: longer than any max_seq_length so truncation is compared too.
PARITY_TEXTS = (
    "hello world",
    "What is the capital of France?",
    "",
    "   ",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "emoji 🙂🚀 and symbols ∑ ≠ ∞",
    "A paragraph of ordinary prose, long enough to span many word pieces, "
    "discussing embeddings, retrieval and the virtues of measuring before optimising. " * 3,
    " ".join(f"token{i}" for i in range(2000)),
)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows, in float64; two zero rows count as identical (1.0)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    dots = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cos)


def parity_check(model_dir: Path, source_dir: Path, texts: tuple[str, ...] = PARITY_TEXTS) -> np.ndarray:
    """Cosine between this package's embeddings of ``model_dir`` and sentence-transformers' of
    ``source_dir``, one per text (needs sentence-transformers: the [export] extra)."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(source_dir), device="cpu").encode(
        list(texts), convert_to_numpy=True, batch_size=len(texts)
    )
    ours = Embedder(model_dir).embed(list(texts))
    return cosine_rows(ours, reference)


#: Largest |score difference| an exported cross-encoder may have against sentence-transformers'
#: logits on the parity pairs (float32 through a different runtime: ~1e-6 is typical).
SCORE_TOLERANCE = 1e-4


def parity_pairs(texts: tuple[str, ...] = PARITY_TEXTS) -> list[tuple[str, str]]:
    """(query, document) probe pairs: every parity text against a short and a long query, so
    longest-first truncation cuts the document, the query, or both."""
    queries = ("what is the capital of France?", PARITY_TEXTS[8])
    return [(q, d) for q in queries for d in texts]


def score_parity(model_dir: Path, source_dir: Path) -> np.ndarray:
    """|difference| between this package's raw scores (logits) for ``model_dir`` and
    sentence-transformers' ``CrossEncoder`` of ``source_dir``, one row per parity pair (needs
    sentence-transformers: the [export] extra)."""
    from sentence_transformers import CrossEncoder
    from torch import nn

    pairs = parity_pairs()
    reference = CrossEncoder(str(source_dir), device="cpu").predict(
        pairs, activation_fn=nn.Identity(), convert_to_numpy=True, batch_size=len(pairs)
    )
    ours = Scorer(model_dir).predict(pairs, raw_scores=True)
    return np.abs(ours - np.asarray(reference, dtype=np.float32).reshape(ours.shape))


#: Largest relative difference an exported SPLADE model's sparse vectors may have against
#: sentence-transformers' ``SparseEncoder`` (the issue's bar: 1e-4 relative, same non-zero indices).
SPARSE_TOLERANCE = 1e-4


def sparse_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest |difference| of two dense sparse-vector batches, relative to each row's largest value;
    infinite when the non-zero indices differ (a value near zero may flip: entries under 1e-6 of the
    row's largest are not counted)."""
    worst = 0.0
    for a, b in zip(ours, reference, strict=True):
        scale = max(float(np.abs(b).max()), 1e-12)
        significant = (np.abs(a) > 1e-6 * scale) | (np.abs(b) > 1e-6 * scale)
        if not np.array_equal(a[significant] != 0, b[significant] != 0):
            return float("inf")
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst


def sparse_parity(model_dir: Path, source_dir: Path, texts: tuple[str, ...] = PARITY_TEXTS) -> float:
    """:func:`sparse_difference` between this package's sparse vectors for ``model_dir`` and
    sentence-transformers' ``SparseEncoder`` of ``source_dir`` (needs the [export] extra)."""
    from sentence_transformers import SparseEncoder

    from ..engine.sparse import SparseEmbedder

    reference = SparseEncoder(str(source_dir), device="cpu").encode(list(texts), convert_to_tensor=True)
    reference = reference.to_dense().numpy()
    embedder = SparseEmbedder(model_dir)
    ours = np.stack([e.to_dense(embedder.vocab_size) for e in embedder.embed(list(texts))])
    return sparse_difference(ours, reference)


def inference_free_parity(model_dir: Path, source_dir: Path, texts: tuple[str, ...] = PARITY_TEXTS) -> float:
    """:func:`sparse_difference` of both sides of an inference-free model: queries (static weights)
    and documents (SPLADE) against ``SparseEncoder.encode_query`` / ``encode_document``."""
    from sentence_transformers import SparseEncoder

    from ..engine.sparse import SparseEmbedder

    reference = SparseEncoder(str(source_dir), device="cpu")
    embedder = SparseEmbedder(model_dir)
    worst = 0.0
    for ours, theirs in (
        (embedder.embed_query(list(texts)), reference.encode_query(list(texts), convert_to_tensor=True)),
        (embedder.embed_passage(list(texts)), reference.encode_document(list(texts), convert_to_tensor=True)),
    ):
        dense = np.stack([e.to_dense(embedder.vocab_size) for e in ours])
        worst = max(worst, sparse_difference(dense, theirs.to_dense().numpy()))
    return worst
