"""``fastembed-native bench int8``: a model's int8 files against its fp32 file, side by side in one
run, and the retrieval quality beside the speed.

Contenders (``TextEmbedding`` each, the same threads): ``fp32`` as users get it (the plain graph for
bulk calls, the fused graph for single queries when the directory has one), ``int8``
(``quantized=True``: ``onnx/model_int8.onnx``, made here with ``quantize``'s default recipe when
missing) and, with ``--dynamic``, ONNX Runtime's dynamic quantization (``quantize --method
dynamic``, written to ``onnx/model_int8_dynamic.onnx``).

Measured, interleaved (every contender once per round, after a pause that lets the previous one's
threads go idle): bulk texts/s over the benchmark corpus at ``--batch-size``, single-query latency
(p50/p99 over ``--queries`` short real sentences), peak RSS of a fresh process that loads the model
and embeds the corpus once, and the file size on disk. The quality columns are read from each int8
file's recipe (``bench quality --record``), so run that first for them to be filled.

Peak RSS is reported twice: the whole process's, and the model's part of it (the peak less the same
process's RSS just before the model loads, with the interpreter, numpy, the tokenizer and ONNX Runtime
in memory). The first is what a deployment pays; the second is what int8 can change, since the
runtime under it is the same for every variant (about 60 MB, a third of all-MiniLM-L6-v2's fp32 peak).

``--shape NAME`` runs the same on a dense model built with random weights at a bigger real model's
shape (``bge-small``, ``bge-base``; :mod:`.head_models`, built once into ``--models-dir``): speed,
memory and size depend on the shapes, not the weights' values, but its quality columns would mean
nothing and stay empty.

Run it on a quiet machine (``uptime``'s 1-minute load under 0.5): other work on the cores shows up
as noise in every number. Writes ``int8.json`` and ``int8.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import measure, report
from .corpus import gather_corpus, query_sentences

DYNAMIC_FILE = "onnx/model_int8_dynamic.onnx"
SETTLE_SECONDS = 0.5


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.suffix != ".json") / 2**20


def prepare(model_dir: Path, dynamic: bool) -> dict[str, str | None]:
    """The ONNX file of each contender (None: fp32 as TextEmbedding picks it), made if missing."""
    from ..engine import INT8_FILE
    from ..models.quantize import quantize_model

    files: dict[str, str | None] = {"fp32": None}
    if not (model_dir / INT8_FILE).is_file():
        print(f"making {INT8_FILE} (quantize's default recipe)", file=sys.stderr)
        quantize_model(model_dir, measure_speed=False)
    files["int8"] = INT8_FILE
    if dynamic:
        if not (model_dir / DYNAMIC_FILE).is_file():
            quantize_model(model_dir, DYNAMIC_FILE, method="dynamic", measure_speed=False)
        files["int8_dynamic"] = DYNAMIC_FILE
    return files


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..engine import find_onnx
    from ..models import resolve_model
    from ..models.quantize import read_recipe
    from ..text_embedding import TextEmbedding

    if args.shape:
        from ..models import cache_root
        from .head_models import ensure_model

        models_dir = args.models_dir or cache_root() / "bench-int8"
        model_dir = ensure_model(args.shape, models_dir, []).onnx_dir
    else:
        model_dir = Path(resolve_model(args.model))
    files = prepare(model_dir, args.dynamic)
    corpus = gather_corpus(args.corpus_size)
    queries = query_sentences(corpus, args.queries, 0)
    models = {
        name: TextEmbedding(model_dir, onnx_file=file, threads=args.threads) for name, file in files.items()
    }
    tokens = sum(len(e) for e in models["fp32"].tokenizer.encode(corpus))
    print(
        f"corpus: {len(corpus)} texts, {tokens} tokens; {len(queries)} queries; threads={args.threads}",
        file=sys.stderr,
    )
    reference = models["fp32"].embed(corpus, batch_size=args.batch_size)
    results: dict[str, Any] = {
        "machine": report.machine(),
        "model": str(model_dir),
        "random_weights": args.shape,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "corpus_texts": len(corpus),
        "corpus_tokens": tokens,
        "queries": len(queries),
        "load_before": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "contenders": {},
    }
    for name, model in models.items():
        model.embed(queries[:10])  # warm-up, both sessions
        model.embed(corpus[:64], batch_size=args.batch_size)
        path = find_onnx(model_dir) if files[name] is None else model_dir / str(files[name])
        vectors = model.embed(corpus, batch_size=args.batch_size)
        from ..models import cosine_rows

        cos = cosine_rows(reference, vectors)
        recipe = read_recipe(path) if files[name] else None
        results["contenders"][name] = {
            "file": str(path.relative_to(model_dir)),
            "size_mb": round(_size_mb(path), 1),
            "cosine_vs_fp32": {"min": float(cos.min()), "mean": float(cos.mean())},
            "recipe": recipe,
            "bulk_seconds": [],
            "query_ms": [],
        }
    for _ in range(args.repeats):  # bulk, interleaved
        for name, model in models.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            model.embed(corpus, batch_size=args.batch_size)
            results["contenders"][name]["bulk_seconds"].append(time.perf_counter() - start)
    block = max(1, len(queries) // args.repeats)
    for start_index in range(0, len(queries), block):  # single queries, interleaved in blocks
        for name, model in models.items():
            time.sleep(SETTLE_SECONDS)
            for query in queries[start_index : start_index + block]:
                start = time.perf_counter()
                model.embed([query])
                results["contenders"][name]["query_ms"].append((time.perf_counter() - start) * 1000)
    for name, entry in results["contenders"].items():
        seconds = statistics.median(entry["bulk_seconds"])
        entry["texts_per_s"] = len(corpus) / seconds
        entry["query_p50_ms"], entry["query_p99_ms"] = (
            float(v) for v in np.percentile(entry["query_ms"], [50, 99])
        )
        if args.memory:
            onnx_file = files[name]
            code = (
                "from fastembed_native import TextEmbedding\n"
                "from fastembed_native.bench.measure import print_rss\n"
                "from fastembed_native.engine import runtime\n"
                "runtime.ensure_loaded()\n"
                "print_rss('runtime')\n"
                f"m = TextEmbedding({str(model_dir)!r}, onnx_file={onnx_file!r}, threads={args.threads})\n"
                f"m.embed(payload, batch_size={args.batch_size})\n"
            )
            marks = measure.child_rss_mb(name, code, corpus, timeout=900) or {}
            entry["peak_rss_mb"] = marks.get("peak")
            entry["runtime_rss_mb"] = marks.get("runtime")
    results["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return results


def _model_rss_mb(entry: dict[str, Any]) -> float | None:
    """The part of a contender's peak RSS above its runtime (the process before the model loaded)."""
    peak, runtime = entry.get("peak_rss_mb"), entry.get("runtime_rss_mb")
    return None if peak is None or runtime is None else peak - runtime


def markdown(results: dict[str, Any]) -> str:
    fp32 = results["contenders"]["fp32"]
    rows = []
    for name, e in results["contenders"].items():
        retrieval = (e.get("recipe") or {}).get("retrieval") or {}
        if retrieval:
            low, high = retrieval["mrr_difference_95"]
            quality = [
                f"{retrieval['mrr_relative'] * 100:+.2f}% [{low:+.4f}, {high:+.4f}]",
                f"{retrieval['recall@10']:.4f} ({retrieval['reference_recall@10']:.4f})",
                f"{retrieval['min_cosine']:.4f} / {retrieval['p1_cosine']:.4f}",
            ]
        else:
            quality = ["(reference)" if name == "fp32" else "not measured", "-", "-"]
        rss, own = e.get("peak_rss_mb"), _model_rss_mb(e)
        rows.append(
            [
                name,
                f"{e['texts_per_s']:.0f} ({report.ratio(e['texts_per_s'], fp32['texts_per_s'])})",
                f"{e['query_p50_ms']:.2f} ({e['query_p50_ms'] / fp32['query_p50_ms']:.2f}x)",
                f"{e['query_p99_ms']:.2f}",
                f"{rss:.0f} ({rss / fp32['peak_rss_mb']:.2f}x)" if rss and fp32.get("peak_rss_mb") else "-",
                f"{own:.0f} ({own / _model_rss_mb(fp32):.2f}x)" if own and _model_rss_mb(fp32) else "-",
                f"{e['size_mb']:.1f} ({e['size_mb'] / fp32['size_mb']:.2f}x)",
                f"{e['cosine_vs_fp32']['min']:.4f}",
                *quality,
            ]
        )
    lines = [
        f"`{results['command']}`",
        "",
        f"Model {results['model']}; {results['corpus_texts']} texts ({results['corpus_tokens']} tokens) at batch "
        f"{results['batch_size']}, {results['queries']} single queries; threads={results['threads']}; "
        f"load {results['load_before']:.2f} before, {results['load_after']:.2f} after.",
        *(
            [
                f"Random weights at {results['random_weights']}'s shape (`--shape`): speed, memory and size "
                "as a trained model's, no quality measured."
            ]
            if results.get("random_weights")
            else []
        ),
        "Model's RSS: the peak less the same process's RSS with the runtime loaded and no model "
        + (
            f"({results['contenders']['fp32']['runtime_rss_mb']:.0f} MB for fp32)."
            if results["contenders"]["fp32"].get("runtime_rss_mb")
            else "(not measured)."
        ),
        "",
        *report.table(
            [
                "variant",
                "bulk texts/s (vs fp32)",
                "query p50 ms (vs fp32)",
                "query p99 ms",
                "peak RSS MB (vs fp32)",
                "model's RSS MB (vs fp32)",
                "file MB (vs fp32)",
                "min cos (corpus)",
                "MRR diff (95% interval)",
                "recall@10 (fp32)",
                "min / p1 cos (retrieval set)",
            ],
            rows,
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench int8",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .head_models import DENSE_SHAPES

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    source.add_argument(
        "--shape",
        choices=sorted(DENSE_SHAPES),
        help="a dense model with random weights at this shape instead (speed, memory and size only)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="where --shape models are built (default: the model cache's bench-int8 folder)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dynamic", action="store_true", help="add ONNX Runtime's dynamic quantization")
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-RSS processes"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    results = run(args)
    results["command"] = "fastembed-native bench int8 " + " ".join(argv if argv is not None else sys.argv[1:])
    report.write(args.out, "int8", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
