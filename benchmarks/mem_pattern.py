"""ONNX Runtime's memory pattern, on and off, for the engine's varied batch shapes.

With the memory pattern on (ORT's default), a session plans one block for all of a Run's
intermediate tensors and caches that plan per input shape. The engine's length-sorted token-budget
batches rarely repeat a shape, so the plans keep coming and the arena keeps growing. This script
measures both settings on one model file:

- memory: a fresh process per setting makes the same ``--calls`` embed calls (1 to 200 texts of the
  benchmark corpus, picked by a seeded generator) and samples its RSS after each one; printed are the
  RSS after the first call, the medians of the first and last quarter of the samples, and the peak;
- speed: one process holds both settings and alternates them, ``--repeats`` embeds of the corpus
  and 200 single texts each, the order swapped every round; printed are the medians and their ratio.

    python benchmarks/mem_pattern.py MODEL_DIR [--onnx-file onnx/model_int8.onnx] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def _model(model_dir: str, onnx_file: str | None, threads: int, mem_pattern: bool):
    from fastembed_native import TextEmbedding

    model = TextEmbedding(model_dir, onnx_file=onnx_file, threads=threads, lazy_load=True)
    model._session_args = {**model._session_args, "mem_pattern": mem_pattern}  # the setting compared
    return model


def _trace(args: argparse.Namespace, corpus: list[str], mem_pattern: bool) -> list[float]:
    """RSS after each of the seeded calls (run in a fresh process)."""
    model = _model(args.model_dir, args.onnx_file, args.threads, mem_pattern)
    rng = random.Random(0)
    trace = []
    for _ in range(args.calls):
        model.embed(rng.sample(corpus, rng.choice([1, 3, 8, 20, 64, 200])))
        trace.append(_rss_mb())
    return trace


def _speed(args: argparse.Namespace, corpus: list[str]) -> dict[bool, dict[str, float]]:
    models = {p: _model(args.model_dir, args.onnx_file, args.threads, p) for p in (True, False)}
    for model in models.values():  # sessions made, shapes seen once
        model.embed(corpus[:200])
        model.embed(corpus[:1])
    bulk: dict[bool, list[float]] = {True: [], False: []}
    single: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.repeats):
        for p in (True, False) if round_ % 2 == 0 else (False, True):
            time.sleep(0.5)  # the other setting's idle threads stop spinning
            start = time.perf_counter()
            models[p].embed(corpus)
            bulk[p].append(time.perf_counter() - start)
    for i in range(200):
        for p in (True, False) if i % 2 == 0 else (False, True):
            start = time.perf_counter()
            models[p].embed([corpus[i]])
            single[p].append((time.perf_counter() - start) * 1000)
    return {
        p: {
            "bulk_texts_per_s": len(corpus) / statistics.median(bulk[p]),
            "single_p50_ms": statistics.median(single[p]),
        }
        for p in (True, False)
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--onnx-file", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--corpus-size", type=int, default=1000)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        corpus = json.loads(Path(args.corpus_file).read_text())
        print(json.dumps(_trace(args, corpus, args.child == "on")))
        return 0

    import tempfile

    from fastembed_native.bench.corpus import gather_corpus

    corpus = gather_corpus(args.corpus_size)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(corpus, handle)
    print(f"{args.model_dir} {args.onnx_file or ''}: {len(corpus)} texts, {args.threads} threads")
    for setting in ("on", "off"):
        command = [sys.executable, __file__, args.model_dir, "--threads", str(args.threads)]
        command += ["--calls", str(args.calls), "--child", setting, "--corpus-file", handle.name]
        command += ["--onnx-file", args.onnx_file] if args.onnx_file else []
        trace = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        quarter = max(1, len(trace) // 4)
        print(
            f"memory pattern {setting:>3}: RSS after the first call {trace[0]:.0f} MB, first-quarter median "
            f"{statistics.median(trace[:quarter]):.0f}, last-quarter median {statistics.median(trace[-quarter:]):.0f}, "
            f"peak {max(trace):.0f} ({len(trace)} calls)"
        )
    speed = _speed(args, corpus)
    for p in (True, False):
        print(
            f"memory pattern {'on' if p else 'off':>3}: {speed[p]['bulk_texts_per_s']:.0f} texts/s in bulk, "
            f"single text p50 {speed[p]['single_p50_ms']:.2f} ms"
        )
    print(
        f"off / on: bulk {speed[False]['bulk_texts_per_s'] / speed[True]['bulk_texts_per_s']:.3f}x texts/s, "
        f"single p50 {speed[False]['single_p50_ms'] / speed[True]['single_p50_ms']:.3f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
