"""``fastembed-native bench serve``: embedding servers side by side on 127.0.0.1, same ONNX file,
same thread count, same texts, with a load generator (aiohttp) that stops by itself.

Contenders: this server (JSON floats, base64, and gRPC: see :func:`run_grpc_load`), infinity (``infinity-emb``, its optimum/ONNX engine,
batch 32; in its own venv, see benchmarks/peers/setup_infinity.sh), a plain FastAPI + onnxruntime
server that embeds each request on its own (bench/naive_server.py), and in-process
``TextEmbedding.embed`` on the same texts as the ceiling. Every load is run for each contender in
turn; each run stops after its request count or its time limit, whichever comes first.

``--soak N`` instead sends N requests of random lengths and batch sizes to this server alone and
records its RSS along the way (the memory-flatness check).

``--rerank``: the same for rerankers (bench/serve_rerank.py): this server's ``/rerank`` under
``--clients`` concurrent clients against in-process ``TextCrossEncoder.rerank``, interleaved, on
``bench rerank``'s model and workload; with ``--soak N``, a long varied rerank run with RSS sampled.

Writes ``serve.json`` / ``serve.md`` (or ``soak.json`` / ``soak.png``; with ``--rerank``
``serve_rerank.{json,md}`` or ``soak_rerank.{json,md,png}``) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import gather_corpus
from .load import run_grpc_load, run_load
from .measure import cosine_min
from .servers import GRPC_PORT, engine_split, make_peers
from .soak import soak, soak_chart

QUERY = "how do I reset my password"


@dataclass
class Load:
    name: str
    clients: int
    texts_per_request: int
    requests: int


LOADS = (
    Load("1 client x 1 query", 1, 1, 300),
    Load("16 clients x 1 text", 16, 1, 1000),
    Load("64 clients x 1 text", 64, 1, 1000),
    Load("256 clients x 1 text", 256, 1, 1000),
    Load("8 clients x 32 texts", 8, 32, 40),
    Load("1000 concurrent requests", 1000, 1, 1000),
)


def in_process(model: Any, batches: list[list[str]], load: Load) -> dict[str, Any]:
    """The ceiling: the same texts through ``TextEmbedding.embed`` in this process."""
    if load.clients == 1:  # lone queries: one call each
        latencies = []
        for batch in batches:
            start = time.perf_counter()
            model.embed(batch)
            latencies.append(time.perf_counter() - start)
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
        seconds = sum(latencies)
    else:
        texts = [t for batch in batches for t in batch]
        start = time.perf_counter()
        model.embed(texts, batch_size=32)
        seconds = time.perf_counter() - start
        p50 = p95 = p99 = np.nan
    count = sum(len(b) for b in batches)
    return {
        "requests": len(batches), "errors": 0, "texts": count, "seconds": seconds,
        "texts_per_s": count / seconds, "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    from ..models import resolve_model
    from ..text_embedding import TextEmbedding

    model_dir = resolve_model(args.model)
    corpus = gather_corpus(args.corpus_size)
    model = TextEmbedding(model_dir, threads=args.threads)
    reference = _reference(model_dir, corpus)
    peers = make_peers(args, model_dir)
    results: dict[str, Any] = {
        "threads": args.threads,
        "corpus_texts": len(corpus),
        "loads": {},
        "servers": {},
    }
    try:
        for peer in peers:
            peer.start(args.ready_timeout)
            results["servers"][peer.name] = {"ready_seconds": peer.ready_seconds, "idle": peer.rss_mb()}
            print(f"{peer.name}: ready in {peer.ready_seconds:.2f} s", file=sys.stderr)
        variants = [(p, p.encoding) for p in peers]
        if any(p.name == "fastembed_native" for p in peers):
            ours = next(p for p in peers if p.name == "fastembed_native")
            variants += [(ours, "base64"), (ours, "grpc")]
        for full in LOADS:
            load = Load(
                full.name, full.clients, full.texts_per_request, max(1, round(full.requests * args.scale))
            )
            if load.clients == 1:
                batches = [[f"{QUERY} {i}"] for i in range(load.requests)]
            else:
                texts = corpus * (load.requests * load.texts_per_request // len(corpus) + 1)
                batches = [
                    texts[i : i + load.texts_per_request]
                    for i in range(0, load.requests * load.texts_per_request, load.texts_per_request)
                ]
            row: dict[str, Any] = {"in_process": in_process(model, batches, load)}
            for peer, encoding in variants:
                peer.encoding = encoding
                name = peer.name + ("" if encoding == "float" else f"_{encoding}")
                time.sleep(args.settle)
                before = peer.metrics()
                if encoding == "grpc":
                    work = run_grpc_load(
                        f"127.0.0.1:{GRPC_PORT}", peer.model, batches, load.clients, args.limit_seconds
                    )
                else:
                    work = run_load(peer, batches, load.clients, args.limit_seconds)
                outcome = uvloop.run(work)
                outcome.update(engine_split(before, peer.metrics()))
                vectors = outcome.pop("vectors")
                if load.clients > 1 and vectors:
                    got = np.vstack([vectors[i] for i in sorted(vectors)])
                    rows = [corpus.index(t) for i in sorted(vectors) for t in batches[i]]
                    outcome["min_cosine_vs_st"] = cosine_min(got, reference[rows])
                row[name] = outcome
                print(f"{load.name}: {name} {outcome['texts_per_s']:.1f} texts/s, p50 {outcome['p50_ms']:.1f} ms, "
                      f"errors {outcome['errors']}", file=sys.stderr)  # fmt: skip
            results["loads"][load.name] = row
        for peer in peers:
            results["servers"][peer.name]["after"] = peer.rss_mb()
    finally:
        for peer in peers:
            peer.stop()
    return results


def _reference(model_dir: Path, corpus: list[str]) -> np.ndarray:
    """sentence-transformers' vectors of the corpus (torch), the parity reference."""
    from sentence_transformers import SentenceTransformer

    from ..models import default_model_source

    source = default_model_source() if not (model_dir / "model.safetensors").exists() else model_dir
    return SentenceTransformer(str(source), device="cpu").encode(corpus, convert_to_numpy=True)


def markdown(results: dict[str, Any]) -> str:
    names = sorted(
        {n for row in results["loads"].values() for n in row}, key=lambda n: (n != "in_process", n)
    )
    lines = ["| load | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for load, row in results["loads"].items():
        cells = []
        for name in names:
            r = row.get(name)
            if r is None:
                cells.append("-")
                continue
            cell = f"{r['texts_per_s']:.0f}/s"
            if not np.isnan(r["p50_ms"]):
                cell += f", p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} ms"
            if r["errors"]:
                cell += f", {r['errors']} errors"
            cells.append(cell)
        lines.append(f"| {load} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| server | ready s | idle RSS MB | peak RSS MB | min cosine vs ST |")
    lines.append("|---|---|---|---|---|")
    for name, s in results["servers"].items():
        cosines = [r[n]["min_cosine_vs_st"] for r in results["loads"].values() for n in r if n.startswith(name) and "min_cosine_vs_st" in r[n]]  # fmt: skip
        lines.append(
            f"| {name} | {s['ready_seconds']:.2f} | {s['idle']['rss_mb']:.0f} | {s.get('after', s['idle'])['peak_rss_mb']:.0f} | "
            f"{min(cosines):.6f} |" if cosines else f"| {name} | {s['ready_seconds']:.2f} | - | - | - |"
        )  # fmt: skip
    lines += [
        "",
        "| load | engine calls | inputs per call | requests per call | tokenize ms / request |",
        "|---|---|---|---|---|",
    ]
    for load, row in results["loads"].items():
        r = row.get("fastembed_native", {})
        if r.get("engine_calls"):
            lines.append(
                f"| {load} | {r['engine_calls']:.0f} | {r['inputs_per_call']:.1f} | {r['requests_per_call']:.1f} | "
                f"{r['tokenize_ms_per_request']:.3f} |"
            )
    return "\n".join(lines) + f"\n\nThreads: {results['threads']}; corpus: {results['corpus_texts']} texts.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastembed-native bench serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus-size", type=int, default=1000)
    parser.add_argument("--contenders", default="fastembed_native,naive_fastapi_ort,infinity")
    parser.add_argument(
        "--infinity",
        help="infinity's venv (made by benchmarks/peers/setup_infinity.sh VENV); without it, no infinity",
    )
    parser.add_argument(
        "--infinity-view", help="where infinity's view of the model goes (default: beside the venv)"
    )
    parser.add_argument(
        "--limit-seconds", type=float, help="time limit of one load run (default 30; 300 with --rerank)"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="pause before each run (s)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every load's request count (tests: 0.02)"
    )
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("--soak", type=int, help="instead: N random requests to this server, RSS recorded")
    parser.add_argument(
        "--soak-clients", type=int, help="concurrent clients of --soak (32; 16 with --rerank)"
    )
    parser.add_argument("--soak-warmup", type=int, default=200, help="requests before the first RSS sample")
    parser.add_argument("--soak-seconds", type=float, help="stop --soak after this long (after a whole step)")
    rerank = parser.add_argument_group("rerankers (--rerank)")
    rerank.add_argument("--rerank", action="store_true", help="instead: the reranker loads (or --soak)")
    rerank.add_argument("--reranker", default="minilm-l6", help="bench rerank's model (default minilm-l6)")
    rerank.add_argument(
        "--models-dir", type=Path, help="bench rerank's models (default <cache>/bench-rerank)"
    )
    rerank.add_argument(
        "--clients",
        type=lambda s: [int(c) for c in s.split(",") if c],
        default=[64],
        help="comma-separated concurrent client counts, one load each (default 64)",
    )
    rerank.add_argument("--docs", type=int, default=100, help="documents per request")
    rerank.add_argument("--queries", type=int, default=100, help="distinct (query, documents) items")
    rerank.add_argument("--requests", type=int, default=128, help="server requests per round")
    rerank.add_argument("--in-process", type=int, default=16, help="in-process reranks per round")
    rerank.add_argument("--rounds", type=int, default=3, help="interleaved rounds per load")
    rerank.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rerank:
        return _rerank_main(args)
    args.limit_seconds = args.limit_seconds or 30
    if args.soak:
        results = soak(args)
        (args.out / "soak.json").write_text(json.dumps(results, indent=2))
        soak_chart(results, args.out / "soak.png")
        print(json.dumps({k: v for k, v in results.items() if k != "samples"}))
        return 0
    results = run(args)
    (args.out / "serve.json").write_text(json.dumps(results, indent=2, default=float))
    table = markdown(results)
    (args.out / "serve.md").write_text(table)
    print(table)
    return 0


def _rerank_main(args: argparse.Namespace) -> int:
    from .serve_rerank import markdown as rerank_markdown
    from .serve_rerank import rerank_soak, run_rerank, soak_markdown

    if args.soak:
        results = rerank_soak(args)
        (args.out / "soak_rerank.json").write_text(json.dumps(results, indent=2))
        soak_chart(results, args.out / "soak_rerank.png", "varied rerank requests")
        table = soak_markdown(results)
        (args.out / "soak_rerank.md").write_text(table)
        print(table)
        return 0
    results = run_rerank(args)
    (args.out / "serve_rerank.json").write_text(json.dumps(results, indent=2, default=float))
    table = rerank_markdown(results)
    (args.out / "serve_rerank.md").write_text(table)
    print(table)
    return 0
