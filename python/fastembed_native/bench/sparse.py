"""``fastembed-native bench sparse``: SPLADE encoders side by side on the same ONNX file, the same threads
and the same texts.

Workload: ``--texts`` real mixed-length texts of the benchmark corpus (:mod:`.corpus`; every paragraph
once before any comes twice), on each model of ``--models`` (random weights at real SPLADE shapes,
built once into ``--models-dir``: :mod:`.head_models`). Contenders (:mod:`.sparse_contenders`):
fastembed_native's ``SparseTextEmbedding``, the same engine with the pooling moved into the graph
(``fastembed_native_graph_max``), fastembed's ``SparseTextEmbedding``, sentence-transformers'
``SparseEncoder`` on torch and on its ONNX backend, and a naive onnxruntime loop.

Each contender runs in a worker process of its own (:mod:`.sparse_worker`), started and warmed up
before the rounds and ended after them (on an error or Ctrl-C too); one that cannot start is reported
and skipped. This process holds only the texts and the sparse vectors sent back: every contender keeps
its batch x tokens x vocabulary logits buffers (ONNX Runtime's arena, torch's allocator) alive, and
at SPLADE's shape all of them in one process reached 19 GB. A worker times its own calls, so the
transfer is not counted.

Interleaved: the texts are cut into ``--rounds`` parts; part by part every contender encodes it in
turn (the order rotating), after a pause that lets the one before it go idle (one worker computes at a
time; the idle ones keep their memory); then single queries the same way, ``--queries`` per contender
per round, each timed alone in its worker. Reported per contender: texts/s over all parts, p50/p99 ms
of one query, peak RSS of a fresh process encoding ``--rss-texts`` texts (after the workers have
ended), and the agreement with sentence-transformers on torch: the largest |difference| relative to
the text's largest weight (over both sides' indices) and the texts whose non-zero indices are the
same. The JSON also has each worker's peak RSS over the rounds and this process's own.

Writes ``sparse.json`` and ``sparse.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import measure, report
from .corpus import gather_corpus, query_sentences, sample_texts
from .head_models import MAXPOOL_FILE, SPLADE_SHAPES, HeadModel, ensure_model
from .sparse_contenders import BATCHING, CONTENDERS, FACTORIES, Sparse
from .sparse_worker import SparseWorker

REFERENCE = "st_torch"
OURS = "fastembed_native"
GRAPH_MAX = "fastembed_native_graph_max"


def agreement(ours: list[Sparse], reference: list[Sparse]) -> tuple[float, int]:
    """(largest |difference| of two lists of sparse vectors relative to each text's largest value, over
    the union of their indices; how many texts have exactly the same non-zero indices)."""
    worst, same = 0.0, 0
    for (ia, va), (ib, vb) in zip(ours, reference, strict=True):
        ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
        same += bool(np.array_equal(ia, ib))
        if not len(ia) and not len(ib):
            continue
        union = np.union1d(ia, ib)
        a, b = np.zeros(len(union)), np.zeros(len(union))
        a[np.searchsorted(union, ia)] = va
        b[np.searchsorted(union, ib)] = vb
        scale = max(float(np.abs(b).max()), float(np.abs(a).max()), 1e-12)
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst, same


def run_model(
    model: HeadModel, texts: list[str], queries: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Every contender on ``model``, each in a worker process of its own: the results of one model."""
    from ..sparse_text_embedding import SparseTextEmbedding

    counter = SparseTextEmbedding(model.onnx_dir, lazy_load=True)  # its tokenizer: no session made here
    tokens = sum(len(e) for e in counter.engine.tokenizer.encode(texts))
    max_length = counter.max_length
    del counter
    print(
        f"{model.name}: {len(texts)} texts, {tokens} tokens (max length {max_length}); threads={args.threads}",
        file=sys.stderr,
    )
    workers: dict[str, SparseWorker] = {}
    try:
        for name in args.contenders:
            try:
                workers[name] = SparseWorker(name, model, args.models_dir, args.threads)
                workers[name].warm_up(texts[:8])
            except Exception as exc:  # a missing optional peer is reported, not fatal
                print(f"skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed = workers.pop(name, None)
                if failed is not None:
                    failed.close()
        if not workers:
            raise RuntimeError(f"no contender could run {model.name}")
        out = _run(model, texts, queries, workers, args, tokens=tokens, max_length=max_length)
    finally:
        for worker in workers.values():
            worker.close()
    if args.memory:
        rss_texts = texts[: args.rss_texts] if args.rss_texts else texts
        out["rss_texts"] = len(rss_texts)
        for name in out["contenders"]:
            out["contenders"][name]["peak_rss_mb"] = peak_rss_mb(name, model, rss_texts, args)
    return out


def _run(
    model: HeadModel,
    texts: list[str],
    queries: list[str],
    workers: dict[str, SparseWorker],
    args: argparse.Namespace,
    *,
    tokens: int,
    max_length: int,
) -> dict[str, Any]:
    """The interleaved rounds and the agreement, on the started workers."""
    ours = workers.get(OURS)
    if ours is not None:
        ours.engine_stats(reset=True)

    parts = [list(p) for p in np.array_split(np.array(texts, dtype=object), args.rounds) if len(p)]

    def progress(done: int, seconds: dict[str, list[float]]) -> None:
        count = sum(len(p) for p in parts[:done])
        print(
            f"  {done}/{len(parts)}: "
            + ", ".join(f"{n} {count / sum(t):.1f} texts/s" for n, t in seconds.items()),
            file=sys.stderr,
        )

    seconds, outputs = measure.interleaved(workers, parts, args.settle, progress)
    engine = ours.engine_stats() if ours is not None else None
    blocks = [queries[i : i + args.queries] for i in range(0, len(queries), args.queries)]
    timers = {name: worker.time_queries for name, worker in workers.items()}
    _, latencies = measure.interleaved(timers, blocks, args.settle)

    reference_name = REFERENCE if REFERENCE in workers else next(iter(workers))
    vectors = {name: [v for part in outputs[name] for v in part] for name in workers}
    reference = vectors[reference_name]
    out: dict[str, Any] = {
        "shape": model.shape.describe(),
        "real_model": model.shape.real_model,
        "vocab_size": model.vocab_size,
        "onnx_file": str(model.onnx_path),
        "max_length": max_length,
        "texts": len(texts),
        "distinct_texts": len(set(texts)),
        "tokens": tokens,
        "reference": reference_name,
        "reference_mean_active_dims": float(np.mean([len(i) for i, _ in reference])),
        "contenders": {},
    }
    for name, worker in workers.items():
        total = sum(seconds[name])
        worst, same = agreement(vectors[name], reference)
        out["contenders"][name] = {
            "batching": BATCHING[name],
            "seconds": total,
            "texts_per_s": len(texts) / total,
            "tokens_per_s": tokens / total,
            "latency_ms": measure.percentiles_ms([t for block in latencies[name] for t in block]),
            "max_relative_difference": worst,
            "texts_with_same_indices": same,
            "worker_peak_rss_mb": worker.peak_rss_mb(),
        }
    if engine is not None:
        out["fastembed_native_engine"] = {
            "runs": engine["stats"]["runs"],
            "padding_efficiency": engine["stats"]["padding_efficiency"],
            "logits_budget_bytes": engine["logits_budget_bytes"],
        }
    return out


def peak_rss_mb(name: str, model: HeadModel, texts: list[str], args: argparse.Namespace) -> float | None:
    """Peak RSS of a fresh process that loads one contender and encodes ``texts`` in one call."""
    code = (
        "from pathlib import Path\n"
        "from fastembed_native.bench import head_models as m, sparse_contenders as c\n"
        f"model = m.built_model({model.name!r}, Path({str(args.models_dir)!r}))\n"
        f"encode = c.FACTORIES[{name!r}](model, {args.threads})\n"
        "encode(payload)\n"
    )
    return measure.child_peak_rss_mb(name, code, texts, timeout=7200)


def _goals(contenders: dict[str, Any]) -> str:
    """Issue 19's goals for SPLADE, as this run measured them: >= 2x fastembed's texts/s, peak RSS
    <= 1/3 of fastembed's and sentence-transformers'."""
    ours = contenders.get(OURS)
    if not ours:
        return ""
    parts = []
    if "fastembed" in contenders:
        parts.append(
            f"{report.ratio(ours['texts_per_s'], contenders['fastembed']['texts_per_s'])} fastembed's texts/s (goal >= 2x)"
        )
    for peer in ("fastembed", "st_torch", "st_onnx"):
        peak, theirs = ours.get("peak_rss_mb"), contenders.get(peer, {}).get("peak_rss_mb")
        if peak is not None and theirs:
            parts.append(f"peak RSS {peak / theirs:.2f} of {peer}'s (goal <= 0.33)")
    return f"Goals, {OURS}: " + "; ".join(parts) + "." if parts else ""


def markdown(results: dict[str, Any]) -> str:
    """The report: one table per model, then pooling in the graph against pooling in C++."""
    sections = []
    for name, r in results["models"].items():
        ours = r["contenders"].get(OURS)
        header = [
            "contender",
            "texts/s",
            f"{OURS} speed-up",
            "query p50 ms",
            "query p99 ms",
            "peak RSS MB",
            f"max rel. diff vs {r['reference']}",
            "same indices",
            "batching",
        ]
        rows = []
        for contender, c in r["contenders"].items():
            rss = c.get("peak_rss_mb")
            rows.append(
                [
                    f"**{contender}**" if contender == OURS else contender,
                    f"{c['texts_per_s']:.1f}",
                    report.ratio(ours["texts_per_s"], c["texts_per_s"]) if ours else "-",
                    f"{c['latency_ms']['p50']:.1f}",
                    f"{c['latency_ms']['p99']:.1f}",
                    f"{rss:.0f}" if rss is not None else "-",
                    f"{c['max_relative_difference']:.1e}",
                    f"{c['texts_with_same_indices']}/{r['texts']}",
                    c["batching"],
                ]
            )
        lines = [
            f"### {name}: {r['shape']}",
            "",
            f"{r['texts']} texts ({r['distinct_texts']} distinct), {r['tokens']} tokens (cut at {r['max_length']}); "
            f"vocabulary {r['vocab_size']}; random weights, the MLM bias shifted so a text keeps a few hundred "
            f"words at most ({r['reference']}: {r['reference_mean_active_dims']:.0f} non-zero weights per text on average).",
            "",
            *report.table(header, rows),
            "",
            "Relative difference: the largest |difference| over both sides' indices, divided by the text's "
            "largest weight; same indices: texts whose non-zero indices are exactly the reference's.",
        ]
        graph = r["contenders"].get(GRAPH_MAX)
        if ours and graph:
            rss_ours, rss_graph = ours.get("peak_rss_mb"), graph.get("peak_rss_mb")
            memory = (
                f"; peak RSS {rss_graph:.0f} MB against {rss_ours:.0f} MB"
                if rss_ours is not None and rss_graph is not None
                else ""
            )
            lines.append(
                f"Masked max + log1p(relu) inside the graph (`{MAXPOOL_FILE}`, ONNX Runtime returns batch x "
                f"vocabulary) against the full logits pooled in C++ (`_core.splade`), same batches: "
                f"{graph['texts_per_s']:.1f} against {ours['texts_per_s']:.1f} texts/s "
                f"({report.ratio(graph['texts_per_s'], ours['texts_per_s'])}){memory}."
            )
        goals = _goals(r["contenders"])
        if goals:
            lines.append(goals)
        engine = r.get("fastembed_native_engine")
        if engine:
            lines.append(
                f"{OURS}: {engine['runs']} ORT runs, padding efficiency {engine['padding_efficiency']:.3f}, "
                f"logits budget {engine['logits_budget_bytes'] // 2**20} MB at once (shared by the concurrent runs)."
            )
        sections.append("\n".join(lines))
    machine = results["machine"]
    footer = (
        f"Threads: {results['threads']} for every contender; {results['rounds']} interleaved rounds, "
        f"{results['queries_per_round']} single queries per contender per round; pause between turns "
        f"{results['settle_s']} s; peak RSS of a fresh process encoding "
        + (f"{results['rss_texts']} texts in one call" if results["rss_texts"] else "nothing (not measured)")
        + f"; machine: {machine['platform']}, {machine['cpus']} CPUs."
    )
    parent = results.get("parent_peak_rss_mb")
    if parent is not None:
        footer += (
            " Each contender ran in a worker process of its own, which timed its own calls; the "
            f"benchmark's process, holding the texts and the sparse vectors, peaked at {parent:.0f} MB."
        )
    return "\n\n".join([*sections, footer]) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..models import cache_root

    args.models_dir = args.models_dir or cache_root() / "bench-sparse"
    corpus = gather_corpus(10**9, seed=args.seed)  # all of it: texts, queries, the sparsity calibration
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
    results["parent_peak_rss_mb"] = measure.own_peak_rss_mb()
    return results


def add_common_arguments(parser: argparse.ArgumentParser, *, cache: str, texts: str) -> None:
    """The options ``bench sparse`` and ``bench late`` share."""
    parser.add_argument(
        "--models-dir",
        type=Path,
        help=f"where the benchmark's models are built once and found again (default: <cache>/{cache})",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--texts", type=int, default=10_000, help=f"{texts} to encode (default 10000)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the texts are cut into")
    parser.add_argument("--queries", type=int, default=20, help="single queries per contender per round")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of pause before each turn")
    parser.add_argument(
        "--rss-texts", type=int, default=0, help=f"{texts} in each peak-RSS process (default: all of them)"
    )
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-RSS subprocesses"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench sparse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        default=["splade-distil"],
        help=f"comma-separated, from {', '.join(SPLADE_SHAPES)} (default: splade-distil)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda s: [c for c in s.split(",") if c],
        default=list(CONTENDERS),
        help=f"comma-separated, from {', '.join(FACTORIES)} (default: all)",
    )
    add_common_arguments(parser, cache="bench-sparse", texts="texts")
    args = parser.parse_args(argv)
    unknown = [c for c in args.contenders if c not in FACTORIES] + [
        m for m in args.models if m not in SPLADE_SHAPES
    ]
    if unknown:
        parser.error(f"unknown contender or model: {', '.join(unknown)}")
    results = run(args)
    report.write(args.out, "sparse", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
