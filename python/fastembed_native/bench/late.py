"""``fastembed-native bench late``: ColBERT encoders side by side on the same ONNX file, the same threads
and the same texts, then MaxSim scoring.

Workload: ``--texts`` real mixed-length documents of the benchmark corpus (:mod:`.corpus`), on each
model of ``--models`` (random weights at real ColBERT shapes, built once into ``--models-dir``:
:mod:`.head_models`). Contenders (:mod:`.late_contenders`): fastembed_native's
``LateInteractionTextEmbedding``, fastembed's, a naive onnxruntime loop, and with ``--pylate VENV``
pylate's ``ColBERT`` (torch, the reference; it runs in its own venv).

Interleaved as ``bench sparse``: the documents cut into ``--rounds`` parts, every contender encoding
each part in turn (the order rotating, a pause before each turn), then single queries. Reported per
contender: documents/s, p50/p99 ms of one query, peak RSS of a fresh process encoding
``--rss-texts`` documents, and the largest |vector difference| against the reference (pylate when it
runs, else fastembed_native) for documents and queries.

MaxSim: one query (query length x dim, unit rows) against ``--maxsim-docs`` documents of about
``--maxsim-tokens`` random unit vectors each: ``LateInteractionTextEmbedding.score`` on the list of
arrays (packed on every call) and on what ``pack`` made of it once (the goals use this one, as
pylate's documents are padded once before its timing), its C++ kernel on the packed array, numpy (one matmul, then ``np.maximum.reduceat``), pylate's ``colbert_scores`` (with
``--pylate``), and the time to read the vectors once (a numpy sum over them).

Writes ``late.json`` and ``late.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np

from . import measure, report
from .corpus import gather_corpus, query_sentences, sample_texts
from .head_models import COLBERT_SHAPES, ColbertShape, HeadModel, ensure_model
from .late_contenders import BATCHING, CONTENDERS, Contender, PylateContender, make
from .sparse import add_common_arguments

OURS = "fastembed_native"


def unit_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def vector_agreement(ours: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, int]:
    """(largest |difference| of the texts whose arrays have the reference's shape; how many have it).
    Rows are compared after L2 normalisation (fastembed leaves queries' rows as the graph gives them)."""
    worst, same = 0.0, 0
    for a, b in zip(ours, reference, strict=True):
        if a.shape != b.shape:
            continue
        same += 1
        if len(a):
            worst = max(worst, float(np.abs(unit_rows(a) - unit_rows(b)).max()))
    return worst, same


def run_model(
    model: HeadModel, texts: list[str], queries: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Every contender on ``model``, then MaxSim: the results of one model."""
    contenders: dict[str, Contender] = {}
    try:
        for name in args.contenders:
            try:
                contenders[name] = make(name, model, args.threads, args.pylate)
                contenders[name](texts[:8])  # warm-up: lazy loads, ORT's arena, torch's first call
                contenders[name].queries(queries[:2])
            except Exception as exc:  # a missing optional peer is reported, not fatal
                print(f"skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed = contenders.pop(name, None)
                if isinstance(failed, PylateContender):
                    failed.close()
        if not contenders:
            raise RuntimeError(f"no contender could run {model.name}")
        return _run(model, texts, queries, contenders, args)
    finally:
        for contender in contenders.values():
            if isinstance(contender, PylateContender):
                contender.close()


def _run(
    model: HeadModel,
    texts: list[str],
    queries: list[str],
    contenders: dict[str, Contender],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from ..late_interaction import LateInteractionTextEmbedding

    shape = model.shape
    assert isinstance(shape, ColbertShape)
    counter = LateInteractionTextEmbedding(model.onnx_dir)
    tokens = sum(len(e.ids) for e in counter.encode(texts, is_query=False))
    print(
        f"{model.name}: {len(texts)} documents, {tokens} tokens (cut at {shape.document_length}); "
        f"threads={args.threads}",
        file=sys.stderr,
    )
    parts = [list(p) for p in np.array_split(np.array(texts, dtype=object), args.rounds) if len(p)]

    def progress(done: int, seconds: dict[str, list[float]]) -> None:
        count = sum(len(p) for p in parts[:done])
        print(
            f"  {done}/{len(parts)}: "
            + ", ".join(f"{n} {count / sum(t):.1f} docs/s" for n, t in seconds.items()),
            file=sys.stderr,
        )

    seconds, outputs = measure.interleaved(dict(contenders), parts, args.settle, progress)
    blocks = [queries[i : i + args.queries] for i in range(0, len(queries), args.queries)]
    timers = {name: c.time_queries for name, c in contenders.items()}
    _, latencies = measure.interleaved(timers, blocks, args.settle)

    reference_name = (
        "pylate" if "pylate" in contenders else OURS if OURS in contenders else next(iter(contenders))
    )
    documents = {name: [v for part in outputs[name] for v in part] for name in contenders}
    query_vectors = {name: c.queries(queries) for name, c in contenders.items()}
    out: dict[str, Any] = {
        "shape": shape.describe(),
        "real_model": shape.real_model,
        "dim": shape.dim,
        "query_length": shape.query_length,
        "document_length": shape.document_length,
        "onnx_file": str(model.onnx_path),
        "texts": len(texts),
        "distinct_texts": len(set(texts)),
        "tokens": tokens,
        "queries": len(queries),
        "reference": reference_name,
        "contenders": {},
    }
    if "pylate" in contenders:
        out["pylate_version"] = contenders["pylate"].version  # type: ignore[attr-defined]
    for name in contenders:
        total = sum(seconds[name])
        doc_diff, doc_same = vector_agreement(documents[name], documents[reference_name])
        query_diff, query_same = vector_agreement(query_vectors[name], query_vectors[reference_name])
        out["contenders"][name] = {
            "batching": BATCHING[name],
            "seconds": total,
            "docs_per_s": len(texts) / total,
            "tokens_per_s": tokens / total,
            "latency_ms": measure.percentiles_ms([t for block in latencies[name] for t in block]),
            "max_abs_difference_documents": doc_diff,
            "documents_with_same_rows": doc_same,
            "max_abs_difference_queries": query_diff,
            "queries_with_same_rows": query_same,
        }
    del outputs, documents, query_vectors
    out["maxsim"] = maxsim(counter, shape, contenders.get("pylate"), args)
    if args.memory:
        rss_texts = texts[: args.rss_texts] if args.rss_texts else texts
        out["rss_texts"] = len(rss_texts)
        for name in list(out["contenders"]):
            out["contenders"][name]["peak_rss_mb"] = peak_rss_mb(name, model, rss_texts, args)
    return out


def maxsim(
    encoder, shape: ColbertShape, pylate: Contender | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One query against ``--maxsim-docs`` random documents, each way ``--maxsim-repeats`` times in
    rotation: the median seconds of each, and each way's largest |score difference| from float64."""
    from .. import _core

    rng = np.random.default_rng(args.seed)
    low, high = int(args.maxsim_tokens * 0.8), int(args.maxsim_tokens * 1.2)
    lengths = rng.integers(low, high + 1, size=args.maxsim_docs)
    documents = [unit_rows(rng.standard_normal((n, shape.dim))) for n in lengths]
    query = unit_rows(rng.standard_normal((shape.query_length, shape.dim)))
    packed = np.ascontiguousarray(np.concatenate(documents))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    starts = offsets[:-1]

    def numpy_maxsim() -> np.ndarray:
        return np.maximum.reduceat(packed @ query.T, starts, axis=0).sum(axis=1)

    packed_once = encoder.pack(documents)  # what a caller keeps to score many queries
    ways = {
        "LateInteractionTextEmbedding.score": lambda: encoder.score(query, documents),
        "LateInteractionTextEmbedding.score (packed once)": lambda: encoder.score(query, packed_once),
        "_core.maxsim (packed)": lambda: _core.maxsim(query, packed, offsets),
        "numpy (matmul + maximum.reduceat)": numpy_maxsim,
        "read the vectors once (numpy sum)": lambda: packed.sum(),
    }
    exact = np.maximum.reduceat(packed.astype(np.float64) @ query.T.astype(np.float64), starts, axis=0).sum(
        axis=1
    )
    timings: dict[str, list[float]] = {name: [] for name in ways}
    results: dict[str, Any] = {}
    names = list(ways)
    for repeat in range(args.maxsim_repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            results[name] = ways[name]()
            timings[name].append(time.perf_counter() - start)
    if isinstance(pylate, PylateContender):
        timings["pylate colbert_scores (padded)"], results["pylate colbert_scores (padded)"] = pylate.maxsim(
            query, documents, args.maxsim_repeats
        )
    out: dict[str, Any] = {
        "documents": int(args.maxsim_docs),
        "mean_tokens": float(lengths.mean()),
        "query_rows": shape.query_length,
        "dim": shape.dim,
        "bytes": int(packed.nbytes),
        "repeats": args.maxsim_repeats,
        "ways": {},
    }
    for name, spent in timings.items():
        median = statistics.median(spent)
        scores = results[name]
        out["ways"][name] = {
            "median_ms": median * 1000,
            "docs_per_s": args.maxsim_docs / median,
            "max_abs_score_difference": (
                None if np.ndim(scores) == 0 else float(np.abs(np.asarray(scores, np.float64) - exact).max())
            ),
        }
    return out


def peak_rss_mb(name: str, model: HeadModel, texts: list[str], args: argparse.Namespace) -> float | None:
    """Peak RSS of a fresh process that loads one contender and encodes ``texts`` in one call (pylate:
    a fresh worker, asked for its own peak)."""
    if name == "pylate":
        worker = make("pylate", model, args.threads, args.pylate)
        try:
            worker(texts)
            return worker.peak_rss_mb()  # type: ignore[attr-defined]
        finally:
            worker.close()  # type: ignore[attr-defined]
    code = (
        "from pathlib import Path\n"
        "from fastembed_native.bench import head_models as m, late_contenders as c\n"
        f"model = m.built_model({model.name!r}, Path({str(args.models_dir)!r}))\n"
        f"c.make({name!r}, model, {args.threads})(payload)\n"
    )
    return measure.child_peak_rss_mb(name, code, texts, timeout=7200)


PACKED_ONCE = "LateInteractionTextEmbedding.score (packed once)"


def _goals(contenders: dict[str, Any], ways: dict[str, Any]) -> str:
    """Issue 19's goals for ColBERT, as this run measured them: >= 1.5x fastembed's and pylate's
    docs/s; MaxSim >= 2x pylate's colbert_scores and within 2x of reading the vectors once."""
    ours = contenders.get(OURS)
    parts = [
        f"{report.ratio(ours['docs_per_s'], contenders[peer]['docs_per_s'])} {peer}'s docs/s (goal >= 1.5x)"
        for peer in ("fastembed", "pylate")
        if ours and peer in contenders
    ]
    # Documents already packed (score(query, pack(docs))), as pylate's are already padded: neither
    # side's preparation counts; score() on a list of arrays packs it on every call.
    score = ways[PACKED_ONCE]["median_ms"]
    if "pylate colbert_scores (padded)" in ways:
        parts.append(
            f"MaxSim {report.ratio(ways['pylate colbert_scores (padded)']['median_ms'], score)} as fast as "
            "pylate's colbert_scores (goal >= 2x)"
        )
    parts.append(
        f"MaxSim takes {report.ratio(score, ways['read the vectors once (numpy sum)']['median_ms'])} the time of "
        "one read of the vectors (goal <= 2x)"
    )
    return f"Goals, {OURS}: " + "; ".join(parts) + "."


def markdown(results: dict[str, Any]) -> str:
    """The report: per model, the encoders' table, then MaxSim's."""
    sections = []
    for name, r in results["models"].items():
        ours = r["contenders"].get(OURS)
        header = [
            "contender",
            "docs/s",
            f"{OURS} speed-up",
            "query p50 ms",
            "query p99 ms",
            "peak RSS MB",
            f"max abs diff vs {r['reference']}: docs",
            "queries",
            "same rows (docs)",
            "batching",
        ]
        rows = []
        for contender, c in r["contenders"].items():
            rss = c.get("peak_rss_mb")
            rows.append(
                [
                    f"**{contender}**" if contender == OURS else contender,
                    f"{c['docs_per_s']:.1f}",
                    report.ratio(ours["docs_per_s"], c["docs_per_s"]) if ours else "-",
                    f"{c['latency_ms']['p50']:.1f}",
                    f"{c['latency_ms']['p99']:.1f}",
                    f"{rss:.0f}" if rss is not None else "-",
                    f"{c['max_abs_difference_documents']:.1e}",
                    f"{c['max_abs_difference_queries']:.1e}",
                    f"{c['documents_with_same_rows']}/{r['texts']}",
                    c["batching"],
                ]
            )
        m = r["maxsim"]
        fastest = m["ways"]["LateInteractionTextEmbedding.score"]["median_ms"]
        maxsim_rows = [
            [
                way,
                f"{w['median_ms']:.2f}",
                f"{w['docs_per_s']:.0f}",
                report.ratio(w["median_ms"], fastest),
                "-" if w["max_abs_score_difference"] is None else f"{w['max_abs_score_difference']:.1e}",
            ]
            for way, w in m["ways"].items()
        ]
        lines = [
            f"### {name}: {r['shape']}",
            "",
            f"{r['texts']} documents ({r['distinct_texts']} distinct), {r['tokens']} tokens (cut at "
            f"{r['document_length']}), {r['queries']} single queries ({r['query_length']} rows each); random weights."
            + (f" Reference: pylate {r['pylate_version']}." if "pylate_version" in r else ""),
            "",
            *report.table(header, rows),
            "",
            "Differences are over unit rows (fastembed returns queries' rows unnormalised; they are normalised "
            "before comparing); same rows: documents whose array has the reference's shape. fastembed runs with "
            "two workarounds (bench/late_contenders.py): the marker inserted into token_type_ids too, and its view "
            "of the model says model_max_length = document_length (it cuts documents at the tokenizer's limit, "
            "not at the model's document_length).",
            "",
            f"MaxSim: one query of {m['query_rows']} x {m['dim']} against {m['documents']} documents of "
            f"{m['mean_tokens']:.0f} vectors on average ({m['bytes'] / 2**20:.1f} MB), median of {m['repeats']} calls:",
            "",
            *report.table(
                ["way", "ms per query", "docs/s", "time vs score()", "max abs score diff vs float64"],
                maxsim_rows,
            ),
        ]
        goals = _goals(r["contenders"], m["ways"])
        if goals:
            lines += ["", goals]
        sections.append("\n".join(lines))
    machine = results["machine"]
    footer = (
        f"Threads: {results['threads']} for every contender; {results['rounds']} interleaved rounds, "
        f"{results['queries_per_round']} single queries per contender per round; pause between turns "
        f"{results['settle_s']} s; peak RSS of a fresh process encoding "
        + (
            f"{results['rss_texts']} documents in one call"
            if results["rss_texts"]
            else "nothing (not measured)"
        )
        + f"; machine: {machine['platform']}, {machine['cpus']} CPUs."
    )
    return "\n\n".join([*sections, footer]) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..models import cache_root

    args.models_dir = args.models_dir or cache_root() / "bench-late"
    corpus = gather_corpus(10**9, seed=args.seed)
    texts = sample_texts(corpus, args.texts, seed=args.seed)
    queries = query_sentences(corpus, args.queries * args.rounds, args.seed)
    results: dict[str, Any] = {
        "machine": report.machine(),
        "threads": args.threads,
        "settle_s": args.settle,
        "rounds": args.rounds,
        "queries_per_round": args.queries,
        "rss_texts": min(args.rss_texts or len(texts), len(texts)) if args.memory else 0,
        "models": {},
    }
    for name in args.models:
        results["models"][name] = run_model(ensure_model(name, args.models_dir, corpus), texts, queries, args)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench late",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        default=["answerai-colbert-small"],
        help=f"comma-separated, from {', '.join(COLBERT_SHAPES)} (default: answerai-colbert-small)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda s: [c for c in s.split(",") if c],
        default=None,
        help=f"comma-separated, from {', '.join(BATCHING)} (default: {', '.join(CONTENDERS)}, and pylate "
        "with --pylate)",
    )
    parser.add_argument(
        "--pylate", help="a venv with pylate 1.6 (its own: tests/data/colbert_tiny/make_reference.py)"
    )
    parser.add_argument("--maxsim-docs", type=int, default=1000)
    parser.add_argument(
        "--maxsim-tokens", type=int, default=100, help="vectors per MaxSim document, on average"
    )
    parser.add_argument("--maxsim-repeats", type=int, default=50)
    add_common_arguments(parser, cache="bench-late", texts="documents")
    args = parser.parse_args(argv)
    if args.contenders is None:
        args.contenders = [*(["pylate"] if args.pylate else []), *CONTENDERS]
    unknown = [c for c in args.contenders if c not in BATCHING] + [
        m for m in args.models if m not in COLBERT_SHAPES
    ]
    if unknown:
        parser.error(f"unknown contender or model: {', '.join(unknown)}")
    if "pylate" in args.contenders and not args.pylate:
        parser.error("the pylate contender needs --pylate VENV")
    results = run(args)
    report.write(args.out, "late", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
