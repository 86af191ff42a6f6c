"""``fastembed-native bench rerank``: rerankers side by side on the same ONNX file, the same threads
and the same workload, the way a retrieval pipeline calls them: one query against its candidates.

Workload: ``--queries`` queries (short real sentences from the benchmark corpus, :mod:`.corpus`),
each with ``--docs`` candidate documents drawn from that corpus (mixed lengths, real text), on each
model of ``--models`` (random weights at real rerankers' shapes, built once into ``--models-dir``:
:mod:`.rerank_models`). Contenders (:mod:`.rerank_contenders`): fastembed_native's
``TextCrossEncoder``, sentence-transformers' ``CrossEncoder`` on torch and on its ONNX backend,
fastembed's ``TextCrossEncoder`` and a naive onnxruntime loop.

Interleaved: query by query, every contender reranks that query's documents in turn (the order
rotating), after a pause that lets the one before it go idle. Reported per contender: pairs/s over
all reranks, p50/p99 ms of one rerank, peak RSS of a fresh process doing ``--rss-queries`` reranks,
and max |logit difference| against sentence-transformers on torch (raw logits on both sides).
For fastembed_native also: tokens/s of one rerank against tokens/s of one bulk call scoring every
pair of the workload at once (the goal: >= 0.9x, a rerank being one length-sorted bulk call).

Writes ``rerank.json`` and ``rerank.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import measure
from .corpus import gather_corpus, query_sentences
from .rerank_contenders import BATCH_SIZES, CONTENDERS, FACTORIES, Rerank
from .rerank_models import SHAPES, RerankerModel, ensure_model

Workload = list[tuple[str, list[str]]]
REFERENCE = "st_torch"
REAL_XLMR_VOCAB = 250_002  # BAAI/bge-reranker-base's (XLM-R's) vocabulary


def build_workload(queries: int, docs: int, corpus: list[str], seed: int = 0) -> Workload:
    """``queries`` (query, documents) items: each query a short single-line sentence from
    ``corpus`` (its paragraphs' first sentences), each with ``docs`` distinct corpus paragraphs,
    drawn reproducibly (candidates of different queries overlap, as retrieval results do)."""
    if len(corpus) < docs:
        raise ValueError(
            f"the corpus has {len(corpus)} paragraphs; asked for {queries} queries of {docs} documents"
        )
    rng = np.random.default_rng(seed)
    try:
        picked = query_sentences(corpus, queries, rng)  # the queries first, then each one's documents
    except ValueError as exc:
        raise ValueError(f"{exc} of {docs} documents") from None
    return [(q, [corpus[d] for d in rng.choice(len(corpus), size=docs, replace=False)]) for q in picked]


def run_model(model: RerankerModel, workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Every contender on ``model`` over ``workload``: the results of one model."""
    from ..cross_encoder import TextCrossEncoder

    counter = TextCrossEncoder(model.onnx_dir, threads=args.threads)
    max_length = counter.max_length  # every contender cuts pairs here (the model's tokenizer_config)
    tokens = [
        sum(len(e) for e in counter.engine.tokenizer.encode_pairs([(q, d) for d in docs]))
        for q, docs in workload
    ]
    pairs = sum(len(docs) for _, docs in workload)
    del counter
    print(
        f"{model.name}: {len(workload)} queries, {pairs} pairs, {sum(tokens)} tokens (max length "
        f"{max_length}); threads={args.threads}",
        file=sys.stderr,
    )
    rerankers: dict[str, Rerank] = {}
    for name in args.contenders:
        try:
            rerankers[name] = FACTORIES[name](model, args.threads, max_length)
            rerankers[name](*workload[0])  # warm-up: lazy loads, ORT's arena, torch's first call
        except Exception as exc:  # a missing optional peer is reported, not fatal
            print(f"skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            rerankers.pop(name, None)
    if not rerankers:
        raise RuntimeError(f"no contender could run {model.name}")
    engine = getattr(rerankers.get("fastembed_native"), "encoder", None)
    if engine is not None:
        engine.engine.stats(reset=True)

    seconds: dict[str, list[float]] = {name: [] for name in rerankers}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in rerankers}
    names = list(rerankers)
    for index, (query, documents) in enumerate(workload):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            time.sleep(args.settle)
            start = time.perf_counter()
            result = rerankers[name](query, documents)
            seconds[name].append(time.perf_counter() - start)
            scores[name].append(result)
        if (index + 1) % 10 == 0 or index + 1 == len(workload):
            print(
                f"  {index + 1}/{len(workload)}: "
                + ", ".join(
                    f"{n} {(index + 1) * len(documents) / sum(t):.0f} pairs/s" for n, t in seconds.items()
                ),
                file=sys.stderr,
            )

    reference_name = REFERENCE if REFERENCE in rerankers else names[0]
    reference = scores[reference_name]
    out: dict[str, Any] = {
        "shape": model.shape.describe(),
        "real_model": model.shape.real_model,
        "vocab_size": model.vocab_size,
        "onnx_file": str(model.onnx_path),
        "max_length": max_length,
        "queries": len(workload),
        "pairs": pairs,
        "tokens": sum(tokens),
        "reference": reference_name,
        # How far apart the reference's logits are: a score difference means something against this.
        "reference_logit_std": float(np.concatenate(reference).std()),
        "contenders": {},
    }
    for name in rerankers:
        total = sum(seconds[name])
        p50, p99 = np.percentile(np.array(seconds[name]) * 1000, [50, 99])
        diffs = [np.abs(s - r) for s, r in zip(scores[name], reference, strict=True)]
        same_ranking = sum(
            np.array_equal(np.argsort(-s, kind="stable"), np.argsort(-r, kind="stable"))
            for s, r in zip(scores[name], reference, strict=True)
        )
        out["contenders"][name] = {
            "batching": BATCH_SIZES[name],
            "seconds": total,
            "pairs_per_s": pairs / total,
            "tokens_per_s": sum(tokens) / total,
            "latency_ms": {"p50": float(p50), "p99": float(p99)},
            "max_abs_logit_difference": float(max(d.max() for d in diffs)),
            "queries_ranked_identically": int(same_ranking),
        }
    if engine is not None:
        out["fastembed_native_bulk"] = _bulk(engine, workload, seconds["fastembed_native"], tokens, args)
        out["fastembed_native_bulk"]["max_abs_logit_difference_vs_reranks"] = float(
            np.abs(
                out["fastembed_native_bulk"].pop("scores") - np.concatenate(scores["fastembed_native"])
            ).max()
        )
    if args.memory:
        for name in rerankers:
            out["contenders"][name]["peak_rss_mb"] = peak_rss_mb(
                name, model, workload[: args.rss_queries], max_length, args
            )
    return out


def _bulk(engine, workload: Workload, rerank_seconds: list[float], tokens: list[int], args) -> dict[str, Any]:
    """fastembed_native's reranks against one bulk call over every pair of the workload, in tokens/s."""
    reranks = engine.engine.stats(reset=True)
    all_pairs = [(q, d) for q, docs in workload for d in docs]
    time.sleep(args.settle)
    start = time.perf_counter()
    bulk_scores = engine.rerank_pairs(all_pairs, raw_scores=True)
    bulk_seconds = time.perf_counter() - start
    bulk = engine.engine.stats()
    rerank_rate = sum(tokens) / sum(rerank_seconds)
    bulk_rate = sum(tokens) / bulk_seconds
    return {
        "bulk_seconds": bulk_seconds,
        "bulk_tokens_per_s": bulk_rate,
        "rerank_tokens_per_s": rerank_rate,
        "rerank_tokens_per_s_median": statistics.median(
            t / s for t, s in zip(tokens, rerank_seconds, strict=True)
        ),
        "rerank_over_bulk": rerank_rate / bulk_rate,
        "rerank_padding_efficiency": reranks["padding_efficiency"],
        "bulk_padding_efficiency": bulk["padding_efficiency"],
        "rerank_ort_run_seconds": reranks["run_seconds"],
        "scores": bulk_scores,
    }


def peak_rss_mb(
    name: str, model: RerankerModel, workload: Workload, max_length: int, args: argparse.Namespace
) -> float | None:
    """Peak RSS of a fresh process that loads one contender and reranks ``workload``.

    The workload reaches the child as a JSON file: gathering the corpus imports much of the standard
    library, which would dominate the child's peak."""
    code = (
        "from pathlib import Path\n"
        "from fastembed_native.bench import rerank_contenders as c, rerank_models as m\n"
        f"model = m.built_model({model.name!r}, Path({str(args.models_dir)!r}))\n"
        f"rerank = c.FACTORIES[{name!r}](model, {args.threads}, {max_length})\n"
        "for query, docs in payload: rerank(query, docs)\n"
    )
    return measure.child_peak_rss_mb(name, code, workload, timeout=1800)


def markdown(results: dict[str, Any]) -> str:
    """The report: one table per model, then fastembed_native's rerank against its bulk call."""
    sections = []
    for name, r in results["models"].items():
        ours = r["contenders"].get("fastembed_native")
        lines = [
            f"### {name}: {r['shape']}",
            "",
            f"{r['queries']} queries x {r['pairs'] // r['queries']} documents = {r['pairs']} pairs, "
            f"{r['tokens']} tokens (pairs cut at {r['max_length']}); vocabulary {r['vocab_size']}; random weights.",
            "",
            "| contender | pairs/s | fastembed_native speed-up | rerank p50 ms | rerank p99 ms | peak RSS MB "
            f"| max abs logit diff vs {r['reference']} | same ranking | batching |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for contender, c in r["contenders"].items():
            rss = c.get("peak_rss_mb")
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"**{contender}**" if contender == "fastembed_native" else contender,
                        f"{c['pairs_per_s']:.0f}",
                        f"{ours['pairs_per_s'] / c['pairs_per_s']:.2f}x" if ours else "-",
                        f"{c['latency_ms']['p50']:.0f}",
                        f"{c['latency_ms']['p99']:.0f}",
                        f"{rss:.0f}" if rss is not None else "-",
                        f"{c['max_abs_logit_difference']:.1e}",
                        f"{c['queries_ranked_identically']}/{r['queries']}",
                        c["batching"],
                    ]
                )
                + " |"
            )
        lines.append("")
        lines.append(
            f"Scores are raw logits on every side (fastembed returns logits; the others were asked for "
            f"theirs); the reference's logits have a standard deviation of {r['reference_logit_std']:.2f}."
        )
        bulk = r.get("fastembed_native_bulk")
        if bulk:
            lines.append(
                f"fastembed_native: one {r['pairs'] // r['queries']}-document rerank runs at "
                f"{bulk['rerank_tokens_per_s']:.0f} tokens/s, one bulk call of all {r['pairs']} pairs at "
                f"{bulk['bulk_tokens_per_s']:.0f} tokens/s: {bulk['rerank_over_bulk']:.2f}x (goal >= 0.9x); "
                f"padding efficiency {bulk['rerank_padding_efficiency']:.3f} (reranks), "
                f"{bulk['bulk_padding_efficiency']:.3f} (bulk)."
            )
        if SHAPES[name].real_model == "BAAI/bge-reranker-base":
            extra_mb = (REAL_XLMR_VOCAB - r["vocab_size"]) * SHAPES[name].hidden * 4 / 2**20
            lines.append(
                f"The real {r['real_model']} has {REAL_XLMR_VOCAB:,} tokens of vocabulary, this one "
                f"{r['vocab_size']:,}: the same work per token, but the real embedding table is "
                f"{extra_mb:.0f} MB larger in fp32, which raises load time and peak RSS, not pairs/s."
            )
        sections.append("\n".join(lines))
    machine = results["machine"]
    footer = (
        f"Threads: {results['threads']} for every contender; pause between turns {results['settle_s']} s; "
        f"peak RSS of a fresh process doing {results['rss_queries']} reranks; "
        f"machine: {machine['platform']}, {machine['cpus']} CPUs."
    )
    return "\n\n".join([*sections, footer]) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..models import cache_root

    args.models_dir = args.models_dir or cache_root() / "bench-rerank"
    corpus = gather_corpus(10**9, seed=args.seed)  # all of it: candidates, queries, tokenizer training
    workload = build_workload(args.queries, args.docs, corpus, seed=args.seed)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "threads": args.threads,
        "settle_s": args.settle,
        "rss_queries": args.rss_queries if args.memory else 0,
        "models": {},
    }
    for name in args.models:
        results["models"][name] = run_model(ensure_model(name, args.models_dir, corpus), workload, args)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench rerank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        default=["minilm-l6", "bge-reranker-base"],
        help=f"comma-separated, from {', '.join(SHAPES)} (default: minilm-l6,bge-reranker-base)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="where the benchmark's models are built once and found again (default: <cache>/bench-rerank)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--docs", type=int, default=100, help="candidate documents per query")
    parser.add_argument(
        "--contenders",
        type=lambda s: [c for c in s.split(",") if c],
        default=list(CONTENDERS),
        help=f"comma-separated, from {', '.join(FACTORIES)} (default: all)",
    )
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of pause before each turn")
    parser.add_argument("--rss-queries", type=int, default=10, help="reranks in each peak-RSS process")
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-RSS subprocesses"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    unknown = [c for c in args.contenders if c not in FACTORIES] + [m for m in args.models if m not in SHAPES]
    if unknown:
        parser.error(f"unknown contender or model: {', '.join(unknown)}")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rerank.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "rerank.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
