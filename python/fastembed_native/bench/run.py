"""``fastembed-native bench``: fastembed_native against the pipelines users write today, on the same
ONNX file, the same thread count and the same corpus, in one run.

Contenders: a naive pure-onnxruntime pipeline, a careful one (length-sorted batches), fastembed,
sentence-transformers with its ONNX backend and with torch, and fastembed_native. Repetitions are
interleaved (every contender once per round) and medians reported; every contender's vectors are
compared with sentence-transformers (torch) so a speed win never hides a wrong answer.

Writes ``results.json``, ``results.md`` and ``results.png`` to ``--out``.
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

from .contenders import CONTENDERS, FACTORIES, Embed
from .corpus import gather_corpus
from .measure import cosine_min, find_onnx, peak_rss_mb
from .report import chart, markdown

QUERY = "how do I reset my password"  # 8 tokens with [CLS]/[SEP]
LATENCY_BLOCK = 20  # single-query calls per contender per round
SETTLE_SECONDS = 0.5  # pause before each contender's turn: the previous one's threads go idle


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..models import resolve_model

    model_dir = resolve_model(args.model)
    onnx_path = find_onnx(model_dir)
    corpus = gather_corpus(args.corpus_size)
    from ..text_embedding import TextEmbedding

    counter = TextEmbedding(model_dir)
    tokens = sum(len(e) for e in counter.tokenizer.encode(corpus))
    print(
        f"corpus: {len(corpus)} texts, {tokens} tokens (after truncation at {counter.max_length}); "
        f"threads={args.threads}",
        file=sys.stderr,
    )

    contenders = [c for c in args.contenders.split(",") if c]
    embedders: dict[str, Embed] = {}
    for name in contenders:
        try:
            embedders[name] = FACTORIES[name](model_dir, onnx_path, args.threads, counter.max_length)
        except Exception as exc:  # a missing optional peer is reported, not fatal
            print(f"skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)

    reference_name = "st_torch" if "st_torch" in embedders else next(iter(embedders))
    reference = embedders[reference_name](corpus, 32)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": str(model_dir),
        "threads": args.threads,
        "corpus_texts": len(corpus),
        "corpus_tokens": tokens,
        "reference": reference_name,
        "contenders": {},
    }
    for name, embed in embedders.items():
        results["contenders"][name] = {
            "min_cosine_vs_reference": cosine_min(embed(corpus, 32), reference),
            "throughput": {},
            "latency_ms": {},
        }

    # Throughput: interleaved rounds, every contender once per round per batch size.
    for batch_size in args.batch_sizes:
        times: dict[str, list[float]] = {name: [] for name in embedders}
        for _ in range(args.repeats):
            for name, embed in embedders.items():
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                embed(corpus, batch_size)
                times[name].append(time.perf_counter() - start)
        for name, samples in times.items():
            median = statistics.median(samples)
            results["contenders"][name]["throughput"][str(batch_size)] = {
                "seconds": median,
                "texts_per_s": len(corpus) / median,
                "tokens_per_s": tokens / median,
            }
        print(
            f"batch {batch_size}: "
            + ", ".join(f"{n} {len(corpus) / statistics.median(t):.0f}/s" for n, t in times.items()),
            file=sys.stderr,
        )

    # Single-query latency, interleaved in blocks: each contender makes LATENCY_BLOCK calls in a
    # row after a pause, so the thread pools of the one before (torch's OpenMP threads and ORT's
    # spin after work) have gone idle instead of competing for the cores.
    calls: dict[str, list[float]] = {name: [] for name in embedders}
    for embed in embedders.values():  # warm-up
        for _ in range(10):
            embed([QUERY], 1)
    for _ in range(max(1, args.latency_calls // LATENCY_BLOCK)):
        for name, embed in embedders.items():
            time.sleep(SETTLE_SECONDS)
            for _ in range(LATENCY_BLOCK):
                start = time.perf_counter()
                embed([QUERY], 1)
                calls[name].append((time.perf_counter() - start) * 1000)
    for name, samples in calls.items():
        p50, p95, p99 = np.percentile(samples, [50, 95, 99])
        results["contenders"][name]["latency_ms"] = {"p50": p50, "p95": p95, "p99": p99}

    # Where fastembed_native's time goes, at batch 32.
    if "fastembed_native" in embedders:
        model = embedders["fastembed_native"].model  # type: ignore[attr-defined]
        model.stats(reset=True)
        start = time.perf_counter()
        model.embed(corpus, batch_size=32)
        wall = time.perf_counter() - start
        stats = model.stats()
        results["fastembed_native_breakdown"] = {
            "wall_seconds": wall,
            "ort_run_seconds": stats["run_seconds"],
            "pool_seconds": stats["pool_seconds"],
            "parallel_runs": model.parallel_runs,
            # Concurrent runs add up: the share is of the time the parallel_runs workers had.
            "ort_run_share": stats["run_seconds"] / (wall * model.parallel_runs),
            "padding_efficiency": stats["padding_efficiency"],
        }

    if args.memory:
        for name in embedders:
            results["contenders"][name]["peak_rss_mb"] = peak_rss_mb(
                name, model_dir, args.threads, corpus, 32
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus-size", type=int, default=1000)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(FACTORIES)} (default: all but fastembed_native_int8)",
    )
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-RSS subprocesses"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if 32 not in args.batch_sizes:
        args.batch_sizes.append(32)
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results, args.batch_sizes)
    (args.out / "results.md").write_text(table)
    chart(results, args.batch_sizes, args.out / "results.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
