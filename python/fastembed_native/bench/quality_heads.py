"""``fastembed-native bench quality --kind rerank|sparse``: does an int8 reranker order candidates as
fp32 does, and does an int8 SPLADE model retrieve as fp32 does?

Both read the dense mode's docstring set (:mod:`.quality`: a docstring's summary is a query, the
rest of it its one right answer; calibration never sees it) and compare each variant file with the
reference file (fp32) of the same model directory.

* **rerank** (:func:`evaluate_rerank`): ``queries`` queries (default 50), each with ``candidates``
  candidates (default 20): its answer and the answers of other queries sharing the most words with
  it, IDF-weighted (a lexical first stage, so the list is as close as a reranker's usual input),
  scored as (query, document) pairs, raw logits. Per query: NDCG@10 of the variant's order with the
  reference's order as graded relevance (the reference's best candidate grade 10, its 10th grade 1:
  see :mod:`fastembed_native.models.agreement` for why its order and not its score values), Spearman
  over all candidates, the top-10 overlap, the same top 1, the largest |logit difference|; with the
  labels, each file's MRR of the answer.
* **sparse** (:func:`evaluate_sparse`): ``queries`` queries (default 200) against a pool of
  ``candidates`` texts (default 600: their answers and other answers drawn with a fixed seed), each
  encoded by the reference and each variant, scored by sparse dot products. Agreement: recall@10 of
  the reference's top 10 and the MRR of the reference's top hit in the variant's ranking; labeled:
  recall@1 / recall@10 / MRR of the answer, with the paired bootstrap 95% interval of the MRR
  difference; the vectors themselves: the share of the reference's non-zero indices kept (and of
  its value mass), indices added, the order of the words' weights (the reference's 10 heaviest
  words kept among the variant's 10, Spearman over the words either has), cosine.

Models built by ``bench rerank`` / ``bench sparse`` have random weights at a real model's shape: the
report says so (``note``). Agreement with fp32 is what int8 changes and is measurable on them; the
labeled numbers mean nothing there.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .quality import SEED, EvalSet, paired_bootstrap, ranks, retrieval

DEFAULT_RERANK_QUERIES = 50
DEFAULT_RERANK_CANDIDATES = 20
DEFAULT_SPARSE_QUERIES = 200
DEFAULT_SPARSE_CANDIDATES = 600
_WORD = re.compile(r"[a-z][a-z0-9_]{2,}")


def benchmark_note(model_dir: Path) -> str:
    """What the weights are, when the model is one of ``bench rerank`` / ``bench sparse``'s random
    models at a real model's shape (found by where its ONNX file lives); else ""."""
    from ..engine import find_onnx
    from .head_models import SPLADE_SHAPES
    from .rerank_models import SHAPES

    parts = find_onnx(model_dir).resolve().parts
    for folder, shapes, builder in (
        ("bench-rerank", SHAPES, "bench/rerank_models.py"),
        ("bench-sparse", SPLADE_SHAPES, "bench/head_models.py"),
    ):
        if folder in parts:
            name = parts[parts.index(folder) + 1]
            shape = shapes.get(name)
            real = f" at {shape.real_model}'s shape" if shape is not None and shape.real_model else ""
            return f"random weights{real} ({builder} {name}): agreement with fp32 only, labeled metrics meaningless"
    return ""


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def rerank_lists(eval_set: EvalSet, queries: int, candidates: int) -> list[tuple[str, list[str], int]]:
    """(query, candidate texts, index of the answer among them) for the set's first ``queries``
    queries: the answer and the ``candidates - 1`` other answers of the set's queries that share the
    most IDF-weighted words with the query (ties by position); the answer sits where its own score
    puts it."""
    pool = list(dict.fromkeys(int(a) for a in eval_set.answers))  # every query's answer, in order
    pool_words = [_words(eval_set.candidates[i]) for i in pool]
    df = Counter(w for words in pool_words for w in words)
    idf = {w: math.log(len(pool) / c) for w, c in df.items()}
    index: dict[str, list[int]] = {}
    for j, words in enumerate(pool_words):
        for w in words:
            index.setdefault(w, []).append(j)
    lists = []
    for q in range(min(queries, len(eval_set.queries))):
        scores: dict[int, float] = {}
        for w in _words(eval_set.queries[q]):
            for j in index.get(w, ()):
                scores[j] = scores.get(j, 0.0) + idf[w]
        answer = pool.index(int(eval_set.answers[q]))
        scores[answer] = scores.get(answer, 0.0)
        others = sorted((j for j in scores if j != answer), key=lambda j: (-scores[j], j))
        if len(others) < candidates - 1:  # too few share a word: fill in pool order
            seen = set(others) | {answer}
            others += [j for j in range(len(pool)) if j not in seen][: candidates - 1 - len(others)]
        picked = sorted([answer, *others[: candidates - 1]], key=lambda j: (-scores.get(j, 0.0), j))
        texts = [eval_set.candidates[pool[j]] for j in picked]
        lists.append((eval_set.queries[q], texts, picked.index(answer)))
    return lists


def evaluate_rerank(
    model_dir: Path,
    variants: list[str],
    eval_set: EvalSet,
    *,
    queries: int = DEFAULT_RERANK_QUERIES,
    candidates: int = DEFAULT_RERANK_CANDIDATES,
    reference: str | None = None,
    threads: int | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The reference file and each variant reranking the same candidate lists (see the module doc)."""
    from ..engine import find_onnx
    from ..engine.scores import Scorer
    from ..models.agreement import ranking_agreement

    if reference is None:
        reference = str(find_onnx(model_dir).relative_to(model_dir))
    lists = rerank_lists(eval_set, queries, candidates)
    pairs = [(query, text) for query, texts, _ in lists for text in texts]
    bounds = np.cumsum([0] + [len(texts) for _, texts, _ in lists])
    answers = np.array([answer for _, _, answer in lists])
    results: dict[str, Any] = {}
    base: list[np.ndarray] | None = None
    base_rr: np.ndarray | None = None
    for name in [reference, *variants]:
        start = time.perf_counter()
        scores = Scorer(model_dir, onnx_file=name, threads=threads).predict(pairs, raw_scores=True)[:, 0]
        per_query = [scores[bounds[i] : bounds[i + 1]] for i in range(len(lists))]
        right = np.array([s[a] for s, a in zip(per_query, answers, strict=True)])
        rank = np.array([int((s >= r).sum()) for s, r in zip(per_query, right, strict=True)])
        rr = 1.0 / rank
        entry: dict[str, Any] = {
            "labeled_mrr": float(rr.mean()),
            "labeled_recall@1": float((rank <= 1).mean()),
        }
        if base is None or base_rr is None:
            base, base_rr = per_query, rr
        else:
            entry.update(ranking_agreement(base, per_query))
            entry["labeled_mrr_difference_95"] = list(paired_bootstrap(base_rr, rr))
        entry["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = entry
        print(f"{name}: {format_rerank_row(entry)}", file=sys.stderr, flush=True)
    return {
        "kind": "rerank",
        "model": str(model_dir),
        "note": benchmark_note(model_dir) if note is None else note,
        "set": {
            "name": eval_set.name,
            "queries": len(lists),
            "candidates_per_query": candidates,
            "pairs": len(pairs),
            "candidates": "the answer and the answers of other queries sharing the most IDF-weighted words",
            **eval_set.meta,
        },
        "reference": reference,
        "variants": results,
    }


def sparse_pool(
    eval_set: EvalSet, queries: int, candidates: int, seed: int = SEED
) -> tuple[list[int], np.ndarray]:
    """Indices into ``eval_set.candidates`` of a pool of ``candidates`` texts (the answers of the
    first ``queries`` queries, then others drawn with ``seed``) and each query's answer's place in it."""
    n = min(queries, len(eval_set.queries))
    pool = list(dict.fromkeys(int(a) for a in eval_set.answers[:n]))
    rest = np.setdiff1d(np.arange(len(eval_set.candidates)), pool)
    extra = max(0, candidates - len(pool))
    pool += sorted(
        np.random.default_rng(seed).choice(rest, size=min(extra, len(rest)), replace=False).tolist()
    )
    where = {c: i for i, c in enumerate(pool)}
    return pool, np.array([where[int(a)] for a in eval_set.answers[:n]])


def _dense(vectors: list[Any], size: int) -> np.ndarray:
    out = np.zeros((len(vectors), size), dtype=np.float32)
    for i, v in enumerate(vectors):
        out[i, v.indices] = v.values
    return out


def evaluate_sparse(
    model_dir: Path,
    variants: list[str],
    eval_set: EvalSet,
    *,
    queries: int = DEFAULT_SPARSE_QUERIES,
    candidates: int = DEFAULT_SPARSE_CANDIDATES,
    reference: str | None = None,
    threads: int | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The reference file and each variant retrieving over the same pool (see the module doc)."""
    from ..engine import find_onnx
    from ..engine.sparse import SparseEmbedder
    from ..models.agreement import sparse_agreement

    if reference is None:
        reference = str(find_onnx(model_dir).relative_to(model_dir))
    pool, answers = sparse_pool(eval_set, queries, candidates)
    n = len(answers)
    texts = eval_set.queries[:n] + [eval_set.candidates[i] for i in pool]
    results: dict[str, Any] = {}
    base: dict[str, Any] = {}
    for name in [reference, *variants]:
        start = time.perf_counter()
        model = SparseEmbedder(model_dir, onnx_file=name, threads=threads)
        vectors = model.embed(texts)
        dense = _dense(vectors, model.vocab_size)
        scores = dense[:n] @ dense[n:].T
        rank = ranks(dense[:n], dense[n:], answers)
        rr = 1.0 / rank
        entry: dict[str, Any] = retrieval(rank)
        if not base:
            base = {"vectors": vectors, "scores": scores, "rr": rr}
        else:
            top10 = np.argsort(-base["scores"], axis=1, kind="stable")[:, :10]
            mine10 = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            entry["recall@10_of_reference"] = float(
                np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(top10, mine10, strict=True)])
            )
            best = top10[:, 0]
            best_score = scores[np.arange(n), best]
            entry["mrr_of_reference_top1"] = float(np.mean(1.0 / (scores >= best_score[:, None]).sum(axis=1)))
            low, high = paired_bootstrap(base["rr"], rr)
            entry["mrr_difference"] = float(rr.mean() - base["rr"].mean())
            entry["mrr_difference_95"] = [low, high]
            entry.update(sparse_agreement(base["vectors"], vectors))
        entry["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = entry
        print(f"{name}: {format_sparse_row(entry)}", file=sys.stderr, flush=True)
    return {
        "kind": "sparse",
        "model": str(model_dir),
        "note": benchmark_note(model_dir) if note is None else note,
        "set": {
            "name": eval_set.name,
            "queries": n,
            "candidates": len(pool),
            "texts": len(texts),
            "pool": f"the queries' answers and others drawn with seed {SEED}",
            **eval_set.meta,
        },
        "reference": reference,
        "variants": results,
    }


def format_rerank_row(entry: dict[str, Any]) -> str:
    text = f"labeled MRR {entry['labeled_mrr']:.4f}"
    if "ndcg@10" in entry:
        text += (
            f" NDCG@10 {entry['ndcg@10']:.4f} (min {entry['min_ndcg@10']:.4f}) Spearman {entry['spearman']:.4f} "
            f"top-10 overlap {entry['top10_overlap']:.4f} same top-1 {entry['same_top1']:.3f} "
            f"max |logit diff| {entry['max_abs_score_difference']:.4f} noise/spread {entry['noise_to_spread']:.3f} "
            f"(fp32 top-10 neighbours {entry['reference_gap']:.3f} apart)"
        )
    return text


def format_sparse_row(entry: dict[str, Any]) -> str:
    text = f"R@1 {entry['recall@1']:.4f} R@10 {entry['recall@10']:.4f} MRR {entry['mrr']:.4f}"
    if "recall@10_of_reference" in entry:
        text += (
            f" fp32 top-10 recall {entry['recall@10_of_reference']:.4f} MRR of fp32 top-1 "
            f"{entry['mrr_of_reference_top1']:.4f} indices kept {entry['indices_kept']:.4f} "
            f"(mass {entry['mass_kept']:.4f}) cos min {entry['min_cosine']:.4f}"
        )
    return text


def markdown(report: dict[str, Any]) -> str:
    s = report["set"]
    note = f" Weights: {report['note']}." if report.get("note") else ""
    if report["kind"] == "rerank":
        lines = [
            f"Set {s['name']}: {s['queries']} queries x {s['candidates_per_query']} candidates ({s['pairs']} pairs; "
            f"{s['candidates']}); reference {report['reference']}. Noise / spread: the int8 scores' spread "
            f"around fp32's within a query over fp32's own spread there.{note}",
            "",
            "| variant | NDCG@10 vs ref (min) | Spearman (min) | top-10 overlap | same top-1 | max abs logit diff "
            "| noise / spread | labeled MRR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, e in report["variants"].items():
            if "ndcg@10" in e:
                lines.append(
                    f"| {name} | {e['ndcg@10']:.4f} ({e['min_ndcg@10']:.4f}) | {e['spearman']:.4f} "
                    f"({e['min_spearman']:.4f}) | {e['top10_overlap']:.4f} | {e['same_top1']:.3f} | "
                    f"{e['max_abs_score_difference']:.4f} | {e['noise_to_spread']:.3f} | {e['labeled_mrr']:.4f} |"
                )
            else:
                lines.append(f"| {name} | (reference) | | | | | | {e['labeled_mrr']:.4f} |")
        return "\n".join(lines) + "\n"
    lines = [
        f"Set {s['name']}: {s['queries']} queries over {s['candidates']} candidates ({s['pool']}); sparse dot "
        f"products; reference {report['reference']}.{note}",
        "",
        "| variant | recall@10 of ref top-10 | MRR of ref top-1 | indices kept (min) | value mass kept | "
        "indices added | top-10 terms kept | term Spearman | min cos | recall@10 | MRR | MRR diff (95% interval) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["variants"].items():
        if "recall@10_of_reference" in e:
            low, high = e["mrr_difference_95"]
            lines.append(
                f"| {name} | {e['recall@10_of_reference']:.4f} | {e['mrr_of_reference_top1']:.4f} | "
                f"{e['indices_kept']:.4f} ({e['min_indices_kept']:.4f}) | {e['mass_kept']:.5f} | "
                f"{e['indices_added']:.4f} | {e['top10_terms_kept']:.4f} | {e['term_spearman']:.4f} | "
                f"{e['min_cosine']:.4f} | {e['recall@10']:.4f} | {e['mrr']:.4f} | "
                f"{e['mrr_difference']:+.4f} [{low:+.4f}, {high:+.4f}] |"
            )
        else:
            lines.append(f"| {name} | (reference) | | | | | | | | {e['recall@10']:.4f} | {e['mrr']:.4f} | |")
    return "\n".join(lines) + "\n"


def record(model_dir: Path, report: dict[str, Any]) -> None:
    """Write each variant's agreement into the recipe beside it ("ranking" for a reranker,
    "retrieval" for a SPLADE model), skipping files ``quantize`` did not make."""
    from ..models.quantize import read_recipe, record_quality

    s = report["set"]
    reference = report["variants"][report["reference"]]
    for name, entry in report["variants"].items():
        if name == report["reference"]:
            continue
        path = Path(name) if Path(name).is_absolute() else model_dir / name
        if read_recipe(path) is None:
            print(f"{name}: no recipe file beside it; not recorded", file=sys.stderr)
            continue
        common = {"reference": report["reference"], "note": report.get("note", "")}
        if report["kind"] == "rerank":
            quality = {
                "kind": "rerank",
                "set": f"{s['name']} ({s['queries']} queries x {s['candidates_per_query']} candidates)",
                **common,
                **{k: v for k, v in entry.items() if k != "seconds"},
                "reference_labeled_mrr": reference["labeled_mrr"],
            }
            record_quality(path, quality, key="ranking")
        else:
            quality = {
                "kind": "sparse",
                "set": f"{s['name']} ({s['queries']} queries, {s['candidates']} candidates)",
                **common,
                **{k: v for k, v in entry.items() if k != "seconds"},
                "reference_recall@10": reference["recall@10"],
                "reference_mrr": reference["mrr"],
            }
            record_quality(path, quality, key="retrieval")
