"""How closely a model variant (int8) agrees with its reference (fp32) where the output is not one
vector per text: a reranker's ordering of candidates, and SPLADE's sparse vectors.

Shared by ``quantize`` (measured on the parity pairs / texts when an int8 file is made) and
``bench quality --kind rerank|sparse`` (measured on the docstring set).

**Ranking agreement** (:func:`ndcg_at_k`): NDCG@10 of the variant's ordering of one query's
candidates, the reference's ordering taken as graded relevance: the reference's best candidate has
grade ``k``, its second ``k - 1``, ..., its ``k``-th grade 1, the rest 0 (linear gains, log2
discount). Grades come from the reference's *order*, not from its score values: logits can be
negative (gains must not be), and their scale depends on the model and its activation (a sigmoid near
saturation makes every top candidate's gain nearly equal, and then no swap would cost anything).
Graded by order, NDCG@10 is 1 exactly when the variant puts the reference's top 10 first and in the
same order, a swap near the top costs more than one near the bottom, and a candidate from outside the
reference's top 10 costs the grade of the one it displaced. Taking the reference's top 10 as merely
"relevant" (binary) would score every reordering of that top 10 as perfect, which is the part of a
reranker's work a user sees; :func:`top_k_overlap` reports that weaker measure beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: The cut-off of the ranking metrics (a reranker's first page).
RANK_K = 10


def reference_grades(reference: np.ndarray, k: int = RANK_K) -> np.ndarray:
    """Graded relevance of each candidate from the reference's scores: ``k`` for its best, ``k - 1``
    for the next, ..., 1 for its ``k``-th, 0 below (ties broken by position, as ``rank`` does)."""
    order = np.argsort(-np.asarray(reference, dtype=np.float64), kind="stable")
    grades = np.zeros(len(order), dtype=np.float64)
    top = order[:k]
    grades[top] = np.arange(k, k - len(top), -1, dtype=np.float64)
    return grades


def ndcg_at_k(reference: np.ndarray, scores: np.ndarray, k: int = RANK_K) -> float:
    """NDCG@k of the order of ``scores`` against the reference's order (see the module doc): 1.0
    when the top ``k`` are the reference's, in its order. One query's candidates; ties in
    ``scores`` keep input order."""
    reference, scores = np.asarray(reference), np.asarray(scores)
    if reference.shape != scores.shape or reference.ndim != 1:
        raise ValueError(f"one score per candidate in both: got shapes {reference.shape} and {scores.shape}")
    if len(reference) == 0:
        return 1.0
    grades = reference_grades(reference, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    picked = grades[np.argsort(-scores.astype(np.float64), kind="stable")[:k]]
    ideal = np.sort(grades)[::-1][:k]
    return float((picked * discount[: len(picked)]).sum() / (ideal * discount[: len(ideal)]).sum())


def top_k_overlap(reference: np.ndarray, scores: np.ndarray, k: int = RANK_K) -> float:
    """Share of the reference's top ``k`` that ``scores`` also puts in its top ``k`` (order within
    the top ``k`` not counted)."""
    k = min(k, len(reference))
    if k == 0:
        return 1.0
    ref = np.argsort(-np.asarray(reference, dtype=np.float64), kind="stable")[:k]
    got = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return len(np.intersect1d(ref, got)) / k


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(unique) < len(values):  # average the ranks of tied values
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score lists (ties averaged); 1.0 for fewer than two items
    or when both are constant."""
    a, b = _average_ranks(a), _average_ranks(b)
    if len(a) < 2:
        return 1.0
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if norm == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / norm)


def ranking_agreement(
    reference: Sequence[np.ndarray], scores: Sequence[np.ndarray], k: int = RANK_K
) -> dict[str, Any]:
    """Per-query agreement of a variant's scores with the reference's (one array of candidate
    scores per query, both in the same units): NDCG@k (mean and min), Spearman (mean and min), the
    top-k overlap, how often the top candidate is the same, the largest |score difference|, and how
    large the variant's error is against what orders the candidates: ``noise_to_spread``, the spread
    of its differences within a query (their standard deviation: a shift of the whole query moves no
    candidate) over the spread of the reference's scores (both averaged over queries), and
    ``reference_gap``, the median distance between neighbours in the reference's top k."""
    if len(reference) != len(scores):
        raise ValueError(f"{len(reference)} reference queries but {len(scores)} scored ones")
    ndcg = np.array([ndcg_at_k(r, s, k) for r, s in zip(reference, scores, strict=True)])
    rho = np.array([spearman(r, s) for r, s in zip(reference, scores, strict=True)])
    overlap = np.array([top_k_overlap(r, s, k) for r, s in zip(reference, scores, strict=True)])
    same_top = np.array(
        [int(np.argmax(r)) == int(np.argmax(s)) for r, s in zip(reference, scores, strict=True) if len(r)]
    )
    diffs = [
        np.abs(np.asarray(r) - np.asarray(s)).max() for r, s in zip(reference, scores, strict=True) if len(r)
    ]
    noise = [
        float(np.std(np.asarray(s) - np.asarray(r))) for r, s in zip(reference, scores, strict=True) if len(r)
    ]
    spread = [float(np.std(r)) for r in reference if len(r)]
    gaps = [-np.diff(np.sort(np.asarray(r, dtype=np.float64))[::-1][:k]) for r in reference if len(r) > 1]
    return {
        "queries": len(reference),
        "pairs": int(sum(len(r) for r in reference)),
        f"ndcg@{k}": float(ndcg.mean()),
        f"min_ndcg@{k}": float(ndcg.min()),
        "spearman": float(rho.mean()),
        "min_spearman": float(rho.min()),
        f"top{k}_overlap": float(overlap.mean()),
        "same_top1": float(same_top.mean()) if len(same_top) else 1.0,
        "max_abs_score_difference": float(max(diffs)) if diffs else 0.0,
        "noise_to_spread": float(np.mean(noise) / np.mean(spread)) if spread and np.mean(spread) > 0 else 0.0,
        "reference_gap": float(np.median(np.concatenate(gaps))) if gaps else 0.0,
    }


def sparse_agreement(reference: Sequence[Any], other: Sequence[Any]) -> dict[str, Any]:
    """How much of each reference sparse vector another keeps (vectors with ``indices`` and
    ``values``, as :class:`~fastembed_native.engine.sparse.SparseEmbedding`): the share of the
    reference's non-zero indices that are non-zero in the other (mean and min over texts), the
    share of the reference's value mass on those kept indices, the share of the other's indices the
    reference did not have, the cosine of the two vectors (min and mean), the largest value
    difference relative to the text's largest reference value, and the order of the values (the
    words' weights): the share of the reference's :data:`RANK_K` largest that are the other's
    :data:`RANK_K` largest, and Spearman over the indices either has (a missing one counts 0)."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference vectors but {len(other)} others")
    kept, mass, added, cosine, relative, top, rho = [], [], [], [], [], [], []
    for ref, got in zip(reference, other, strict=True):
        ri, rv = np.asarray(ref.indices), np.asarray(ref.values, dtype=np.float64)
        gi, gv = np.asarray(got.indices), np.asarray(got.values, dtype=np.float64)
        common, at_ref, at_got = np.intersect1d(ri, gi, assume_unique=True, return_indices=True)
        kept.append(len(common) / len(ri) if len(ri) else 1.0 if not len(gi) else 0.0)
        mass.append(float(rv[at_ref].sum() / rv.sum()) if rv.sum() > 0 else 1.0)
        added.append((len(gi) - len(common)) / len(gi) if len(gi) else 0.0)
        dot = float((rv[at_ref] * gv[at_got]).sum())
        norms = float(np.linalg.norm(rv) * np.linalg.norm(gv))
        cosine.append(dot / norms if norms > 0 else 1.0 if not len(ri) and not len(gi) else 0.0)
        union = np.union1d(ri, gi)
        a = np.zeros(len(union))
        b = np.zeros(len(union))
        a[np.searchsorted(union, ri)] = rv
        b[np.searchsorted(union, gi)] = gv
        scale = float(rv.max()) if len(rv) else 1.0
        relative.append(float(np.abs(a - b).max() / scale) if len(union) else 0.0)
        top.append(top_k_overlap(a, b) if len(union) else 1.0)
        rho.append(spearman(a, b))
    return {
        "texts": len(reference),
        "indices_kept": float(np.mean(kept)),
        "min_indices_kept": float(np.min(kept)),
        "mass_kept": float(np.mean(mass)),
        "min_mass_kept": float(np.min(mass)),
        "indices_added": float(np.mean(added)),
        "mean_nonzero_reference": float(np.mean([len(r.indices) for r in reference])),
        "mean_nonzero": float(np.mean([len(o.indices) for o in other])),
        "min_cosine": float(np.min(cosine)),
        "mean_cosine": float(np.mean(cosine)),
        "max_relative_difference": float(np.max(relative)),
        f"top{RANK_K}_terms_kept": float(np.mean(top)),
        "term_spearman": float(np.mean(rho)),
    }
