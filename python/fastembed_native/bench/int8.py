"""``fastembed-native bench int8``: a model's int8 files against its fp32 file, side by side in one
run, and the retrieval quality beside the speed.

The model is an embedding model, a reranker or a SPLADE model (as ``quantize`` tells them apart), run
through its class (``TextEmbedding``, ``TextCrossEncoder``, ``SparseTextEmbedding``). Contenders
(that class each, the same threads): ``fp32`` as users get it (the plain graph for
bulk calls, the fused graph for single queries when the directory has one), ``int8``
(``quantized=True``: ``onnx/model_int8.onnx``, made here with ``quantize``'s default recipe when
missing) and, with ``--dynamic``, ONNX Runtime's dynamic quantization (``quantize --method
dynamic``, written to ``onnx/model_int8_dynamic.onnx``).

Measured, interleaved (every contender once per round, after a pause that lets the previous one's
threads go idle): bulk texts/s over the benchmark corpus at ``--batch-size`` (a reranker: pairs/s,
every text scored against one query), single-query latency (p50/p99 over ``--queries`` short real
sentences; a reranker: that query's rerank of the corpus's first 20 texts), peak RSS of a fresh
process that loads the model and makes the bulk call once, the file size on disk, and how close each
variant's bulk output is to fp32's (min cosine; a reranker: the largest score difference). An
embedding model's quality columns are read from each int8 file's recipe (``bench quality
--record``), so run that first for them to be filled; a reranker's and a SPLADE model's agreement is
``bench quality --kind rerank|sparse``'s.

Peak RSS is reported twice: the whole process's, and the model's part of it (the peak less the same
process's RSS just before the model loads, with the interpreter, numpy, the tokenizer and ONNX Runtime
in memory). The first is what a deployment pays; the second is what int8 can change, since the
runtime under it is the same for every variant (57 MB here, a fifth of all-MiniLM-L6-v2's fp32 peak).

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
    """The ONNX file of each contender (None: fp32 as its model class picks it), made if missing."""
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


# Per kind of model (quantize's model_kind): its class, its bulk call, its single call (a search
# query, or one query's rerank of RERANK_CANDIDATES documents), what its bulk speed counts.
MODEL_CLASSES = {  # kind -> (module of fastembed_native, class)
    "embedding": ("text_embedding", "TextEmbedding"),
    "rerank": ("cross_encoder", "TextCrossEncoder"),
    "sparse": ("sparse_text_embedding", "SparseTextEmbedding"),
}
UNITS = {"embedding": "texts", "rerank": "pairs", "sparse": "texts"}
RERANK_CANDIDATES = 20


def bulk_call(kind: str, model: Any, texts: list[str], batch_size: int, query: str) -> Any:
    """The model's work on many texts: embed them, or score every one against ``query``."""
    if kind == "rerank":
        return model.rerank(query, texts, batch_size=batch_size)
    if kind == "sparse":
        return list(model.embed(texts, batch_size=batch_size))
    return model.embed(texts, batch_size=batch_size)


def single_call(kind: str, model: Any, query: str, documents: list[str]) -> Any:
    """What a search does per query: embed it, or rerank its first candidates."""
    if kind == "rerank":
        return model.rerank(query, documents[:RERANK_CANDIDATES])
    return bulk_call(kind, model, [query], 1, query)


def agreement(kind: str, reference: Any, output: Any) -> tuple[str, float]:
    """How close a variant's bulk output is to fp32's: (measure, value)."""
    if kind == "rerank":
        return "max abs score diff", float(np.abs(np.asarray(output) - np.asarray(reference)).max())
    if kind == "sparse":
        cosines = [_sparse_cosine(a, b) for a, b in zip(reference, output, strict=True)]
        return "min cos", float(min(cosines))
    from ..models import cosine_rows

    return "min cos", float(cosine_rows(reference, output).min())


def _sparse_cosine(a: Any, b: Any) -> float:
    union = np.union1d(a.indices, b.indices)
    x, y = np.zeros(len(union)), np.zeros(len(union))
    x[np.searchsorted(union, a.indices)] = a.values
    y[np.searchsorted(union, b.indices)] = b.values
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / norm if norm else float(np.array_equal(x, y))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import importlib

    from ..engine import find_onnx
    from ..models import resolve_model
    from ..models.quantize import model_kind, read_recipe

    if args.shape:
        from ..models import cache_root
        from .head_models import ensure_model

        models_dir = args.models_dir or cache_root() / "bench-int8"
        model_dir = ensure_model(args.shape, models_dir, []).onnx_dir
    else:
        model_dir = Path(resolve_model(args.model))
    kind = model_kind(model_dir)
    module, class_name = MODEL_CLASSES[kind]
    model_class = getattr(importlib.import_module(f"fastembed_native.{module}"), class_name)
    files = prepare(model_dir, args.dynamic)
    corpus = gather_corpus(args.corpus_size)
    queries = query_sentences(corpus, args.queries, 0)
    bulk_query = queries[0]
    models = {
        name: model_class(model_dir, onnx_file=file, threads=args.threads) for name, file in files.items()
    }
    engine = getattr(models["fp32"], "engine", models["fp32"])  # a head holds its engine
    tokens = sum(len(e) for e in engine.tokenizer.encode(corpus))
    print(
        f"{kind} model: corpus {len(corpus)} texts, {tokens} tokens; {len(queries)} queries; "
        f"threads={args.threads}",
        file=sys.stderr,
    )

    def bulk(model: Any) -> Any:
        return bulk_call(kind, model, corpus, args.batch_size, bulk_query)

    reference = bulk(models["fp32"])
    results: dict[str, Any] = {
        "machine": report.machine(),
        "model": str(model_dir),
        "kind": kind,
        "unit": UNITS[kind],
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
        for query in queries[:10]:  # warm-up, both sessions
            single_call(kind, model, query, corpus)
        bulk_call(kind, model, corpus[:64], args.batch_size, bulk_query)
        path = find_onnx(model_dir) if files[name] is None else model_dir / str(files[name])
        measure_name, value = agreement(kind, reference, bulk(model))
        results["contenders"][name] = {
            "file": str(path.relative_to(model_dir)),
            "size_mb": round(_size_mb(path), 1),
            "agreement_with_fp32": {"measure": measure_name, "value": value},
            "recipe": read_recipe(path) if files[name] else None,
            "bulk_seconds": [],
            "query_ms": [],
        }
    for _ in range(args.repeats):  # bulk, interleaved
        for name, model in models.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            bulk(model)
            results["contenders"][name]["bulk_seconds"].append(time.perf_counter() - start)
    block = max(1, len(queries) // args.repeats)
    for start_index in range(0, len(queries), block):  # single queries, interleaved in blocks
        for name, model in models.items():
            time.sleep(SETTLE_SECONDS)
            for query in queries[start_index : start_index + block]:
                start = time.perf_counter()
                single_call(kind, model, query, corpus)
                results["contenders"][name]["query_ms"].append((time.perf_counter() - start) * 1000)
    for name, entry in results["contenders"].items():
        seconds = statistics.median(entry["bulk_seconds"])
        entry["per_s"] = len(corpus) / seconds
        entry["query_p50_ms"], entry["query_p99_ms"] = (
            float(v) for v in np.percentile(entry["query_ms"], [50, 99])
        )
        if args.memory:
            code = (
                f"from fastembed_native.{module} import {class_name}\n"
                "from fastembed_native.bench.int8 import bulk_call\n"
                "from fastembed_native.bench.measure import print_rss\n"
                "from fastembed_native.engine import runtime\n"
                "runtime.ensure_loaded()\n"
                "print_rss('runtime')\n"
                f"m = {class_name}({str(model_dir)!r}, onnx_file={files[name]!r}, threads={args.threads})\n"
                f"bulk_call({kind!r}, m, payload, {args.batch_size}, {bulk_query!r})\n"
            )
            marks = measure.child_rss_mb(name, code, corpus, timeout=1800) or {}
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
    kind, unit = results["kind"], results["unit"]
    embedding = kind == "embedding"
    rows = []
    for name, e in results["contenders"].items():
        retrieval = (e.get("recipe") or {}).get("retrieval") or {}
        if not embedding:
            quality = []
        elif retrieval:
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
                f"{e['per_s']:.{0 if e['per_s'] >= 10 else 1}f} ({report.ratio(e['per_s'], fp32['per_s'])})",
                f"{e['query_p50_ms']:.2f} ({e['query_p50_ms'] / fp32['query_p50_ms']:.2f}x)",
                f"{e['query_p99_ms']:.2f}",
                f"{rss:.0f} ({rss / fp32['peak_rss_mb']:.2f}x)" if rss and fp32.get("peak_rss_mb") else "-",
                f"{own:.0f} ({own / _model_rss_mb(fp32):.2f}x)" if own and _model_rss_mb(fp32) else "-",
                f"{e['size_mb']:.1f} ({e['size_mb'] / fp32['size_mb']:.2f}x)",
                f"{e['agreement_with_fp32']['value']:.4f}",
                *quality,
            ]
        )
    single = f"one {RERANK_CANDIDATES}-document rerank" if kind == "rerank" else "query"
    lines = [
        f"`{results['command']}`",
        "",
        f"{kind.capitalize()} model {results['model']}; {results['corpus_texts']} texts "
        f"({results['corpus_tokens']} tokens) at batch {results['batch_size']}"
        + (", each scored against one query" if kind == "rerank" else "")
        + f", {results['queries']} single {'reranks' if kind == 'rerank' else 'queries'}; "
        f"threads={results['threads']}; load {results['load_before']:.2f} before, {results['load_after']:.2f} after.",
        *(
            [
                f"Random weights at {results['random_weights']}'s shape (`--shape`): speed, memory and size "
                "as a trained model's, no quality measured."
            ]
            if results.get("random_weights")
            else []
        ),
        *(
            []
            if embedding
            else [
                "Agreement with fp32 by ranking or retrieval: `fastembed-native bench quality --kind "
                f"{kind}` (benchmarks/results/int8_heads.md)."
            ]
        ),
        "Model's RSS: the peak less the same process's RSS with the runtime loaded and no model "
        + (
            f"({fp32['runtime_rss_mb']:.0f} MB for fp32)."
            if fp32.get("runtime_rss_mb")
            else "(not measured)."
        ),
        "",
        *report.table(
            [
                "variant",
                f"bulk {unit}/s (vs fp32)",
                f"{single} p50 ms (vs fp32)",
                f"{single} p99 ms",
                "peak RSS MB (vs fp32)",
                "model's RSS MB (vs fp32)",
                "file MB (vs fp32)",
                f"{fp32['agreement_with_fp32']['measure']} (corpus)",
                *(
                    ["MRR diff (95% interval)", "recall@10 (fp32)", "min / p1 cos (retrieval set)"]
                    if embedding
                    else []
                ),
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
