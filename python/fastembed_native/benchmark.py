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
import contextlib
import inspect as pyinspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Embedder = Callable[[list[str], int], np.ndarray]
CONTENDERS = ("naive_ort", "careful_ort", "fastembed", "st_onnx", "st_torch", "fastembed_native")
QUERY = "how do I reset my password"  # 8 tokens with [CLS]/[SEP]
PARITY_MIN_COSINE = 0.9999  # below this against the reference, a contender's vectors are flagged
LATENCY_BLOCK = 20  # single-query calls per contender per round
SETTLE_SECONDS = 0.5  # pause before each contender's turn: the previous one's threads go idle


# -- the corpus ----------------------------------------------------------------------------------
def gather_corpus(size: int, seed: int = 0) -> list[str]:
    """Mixed-length real text from this machine: docstrings of the standard library and the licence
    files of installed packages, split into paragraphs, sampled reproducibly."""
    import importlib
    import pkgutil
    import sysconfig

    texts: list[str] = []
    for module_info in sorted(pkgutil.iter_modules([sysconfig.get_paths()["stdlib"]]), key=lambda m: m.name):
        if module_info.name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity", "this")):
            continue
        try:
            module = importlib.import_module(module_info.name)
        except Exception:  # some stdlib modules need what this machine lacks
            continue
        for _, obj in sorted(vars(module).items())[:200]:
            doc = pyinspect.getdoc(obj) if callable(obj) else None
            if doc:
                texts.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 20)
    site = Path(np.__file__).parent.parent
    for licence in sorted(site.glob("*.dist-info/licenses/*")) + sorted(site.glob("*.dist-info/LICENSE*")):
        if licence.is_file() and licence.stat().st_size < 200_000:
            text = licence.read_text(errors="replace")
            texts.extend(p.strip() for p in text.split("\n\n") if len(p.strip()) > 20)
    texts = sorted(set(texts))
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), size=min(size, len(texts)), replace=False)]


# -- contenders ------------------------------------------------------------------------------------
def _ort_session(onnx_path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _numpy_mean_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _hf_tokenizer(model_dir: Path, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding()  # to the longest text of each call
    return tokenizer


def _run_ort(session, tokenizer, texts: list[str]) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(["last_hidden_state"], feed)[0]
    return _numpy_mean_normalize(hidden, mask)


def make_naive_ort(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
    """Texts in input order, a fixed batch, padding to each batch's longest, numpy pooling."""
    session, tokenizer = _ort_session(onnx_path, threads), _hf_tokenizer(model_dir, max_length)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.vstack(
            [
                _run_ort(session, tokenizer, texts[i : i + batch_size])
                for i in range(0, len(texts), batch_size)
            ]
        )

    return embed


def make_careful_ort(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
    """As naive, but batches texts of similar token length (sorted) and restores the order."""
    session, tokenizer = _ort_session(onnx_path, threads), _hf_tokenizer(model_dir, max_length)
    counter = _hf_tokenizer(model_dir, max_length)
    counter.no_padding()

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        lengths = [len(e) for e in counter.encode_batch(texts)]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            vectors = _run_ort(session, tokenizer, [texts[j] for j in rows])
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out

    return embed


def make_fastembed(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
    from fastembed import TextEmbedding as FastembedModel
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "local/all-MiniLM-L6-v2-bench"
    with contextlib.suppress(ValueError):  # registered already by an earlier call in this process
        FastembedModel.add_custom_model(
            model=name,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf="local/none"),
            dim=384,
            model_file=str(onnx_path.relative_to(model_dir)),
        )
    model = FastembedModel(name, specific_model_path=str(model_dir), threads=threads)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(list(model.embed(texts, batch_size=batch_size)), dtype=np.float32)

    return embed


def _sentence_transformer(model_dir: Path, threads: int, backend: str):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if backend == "torch":
        from .models import default_model_source

        return SentenceTransformer(str(default_model_source()), device="cpu")
    return SentenceTransformer(
        str(model_dir),
        device="cpu",
        backend="onnx",
        model_kwargs={"file_name": "onnx/model.onnx", "provider": "CPUExecutionProvider"},
    )


def make_st(backend: str) -> Callable[..., Embedder]:
    def factory(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
        model = _sentence_transformer(model_dir, threads, backend)

        def embed(texts: list[str], batch_size: int) -> np.ndarray:
            return model.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False
            )

        return embed

    return factory


def make_fastembed_native_with(**options: Any) -> Callable[..., Embedder]:
    """fastembed_native with TextEmbedding ``options``: the levers, one at a time."""

    def factory(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
        from .text_embedding import TextEmbedding

        model = TextEmbedding(model_dir, threads=threads, **options)

        def embed(texts: list[str], batch_size: int) -> np.ndarray:
            return model.embed(texts, batch_size=batch_size)

        embed.model = model  # type: ignore[attr-defined]  (for the Run-share statistics)
        return embed

    return factory


make_fastembed_native = make_fastembed_native_with()


def make_fastembed_native_int8(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embedder:
    """fastembed_native on the int8 copy (``fastembed-native quantize``, made here if missing)."""
    from .quantize import INT8_FILE, quantize_model
    from .text_embedding import TextEmbedding

    if not (model_dir / INT8_FILE).is_file():
        quantize_model(model_dir)
    model = TextEmbedding(model_dir, onnx_file=INT8_FILE, threads=threads)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return model.embed(texts, batch_size=batch_size)

    return embed


FACTORIES: dict[str, Callable[..., Embedder]] = {
    "naive_ort": make_naive_ort,
    "careful_ort": make_careful_ort,
    "fastembed": make_fastembed,
    "st_onnx": make_st("onnx"),
    "st_torch": make_st("torch"),
    "fastembed_native": make_fastembed_native,
    # Not in the default list; ask with --contenders. int8 trades parity for speed; the others
    # switch one lever off: concurrent runs for several batches, the fused single-batch graph.
    "fastembed_native_int8": make_fastembed_native_int8,
    "fastembed_native_serial": make_fastembed_native_with(parallel_runs=1),
    "fastembed_native_unfused": make_fastembed_native_with(fused=False),
}


# -- measurements ------------------------------------------------------------------------------------
def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    from .export import cosine_rows

    return float(cosine_rows(a, b).min())


def peak_rss_mb(
    contender: str, model_dir: Path, threads: int, corpus: list[str], batch_size: int
) -> float | None:
    """Peak RSS of a fresh process that loads one contender and embeds the corpus once.

    The corpus reaches the child as a JSON file: gathering it imports much of the standard
    library, which would dominate the child's peak."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(corpus, handle)
    code = (
        "import json; from pathlib import Path; from fastembed_native import benchmark as b\n"
        f"d = Path({str(model_dir)!r}); c = json.load(open({handle.name!r}))\n"
        f"e = b.FACTORIES[{contender!r}](d, b.find_onnx(d), {threads}, 256); e(c, {batch_size})\n"
        "print(b.own_peak_rss_mb())\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        print(f"peak RSS of {contender} not measured: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return float(result.stdout.strip().splitlines()[-1])


def own_peak_rss_mb() -> float:
    """This process's peak RSS. On Linux from VmHWM, which belongs to the address space made at
    exec; ru_maxrss would carry over the peak of the parent that forked us."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def find_onnx(model_dir: Path) -> Path:
    from .model_config import find_onnx as find

    return find(model_dir)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .models import resolve_model

    model_dir = resolve_model(args.model)
    onnx_path = find_onnx(model_dir)
    corpus = gather_corpus(args.corpus_size)
    from .text_embedding import TextEmbedding

    counter = TextEmbedding(model_dir)
    tokens = sum(min(len(e), counter.max_length) for e in counter._tokenizer.encode_batch(corpus))
    print(
        f"corpus: {len(corpus)} texts, {tokens} tokens (after truncation at {counter.max_length}); "
        f"threads={args.threads}",
        file=sys.stderr,
    )

    contenders = [c for c in args.contenders.split(",") if c]
    embedders: dict[str, Embedder] = {}
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


# -- reporting -------------------------------------------------------------------------------------
def markdown(results: dict[str, Any], batch_sizes: list[int]) -> str:
    ours = results["contenders"].get("fastembed_native")
    header = [
        "contender",
        *[f"texts/s @{b}" for b in batch_sizes],
        "fastembed_native speed-up @32",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "peak RSS MB",
        "min cosine",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results["contenders"].items():
        speeds = [f"{r['throughput'][str(b)]['texts_per_s']:.0f}" for b in batch_sizes]
        ratio = ""
        if ours and "32" in r["throughput"]:
            ratio = f"{ours['throughput']['32']['texts_per_s'] / r['throughput']['32']['texts_per_s']:.2f}x"
        lat = r["latency_ms"]
        rss = r.get("peak_rss_mb")
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    *speeds,
                    ratio,
                    f"{lat['p50']:.2f}",
                    f"{lat['p95']:.2f}",
                    f"{lat['p99']:.2f}",
                    f"{rss:.0f}" if rss is not None else "-",
                    f"{r['min_cosine_vs_reference']:.6f}"
                    + (" (deviates)" if r["min_cosine_vs_reference"] < PARITY_MIN_COSINE else ""),
                ]
            )
            + " |"
        )
    breakdown = results.get("fastembed_native_breakdown")
    text = "\n".join(lines)
    if breakdown:
        text += (
            f"\n\nfastembed_native at batch 32 ({breakdown['parallel_runs']} concurrent runs): "
            f"{breakdown['ort_run_share'] * 100:.1f}% of the runs' wall time inside ORT Run, "
            f"pooling {breakdown['pool_seconds'] * 1000:.1f} ms, padding efficiency {breakdown['padding_efficiency']:.3f}."
        )
    text += (
        f"\n\nCorpus: {results['corpus_texts']} texts / {results['corpus_tokens']} tokens; threads: {results['threads']}; "
        f"reference for cosine: {results['reference']}; machine: {results['machine']['platform']}, "
        f"{results['machine']['cpus']} CPUs."
    )
    return text + "\n"


def chart(results: dict[str, Any], batch_sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["contenders"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, name in enumerate(names):
        speeds = [results["contenders"][name]["throughput"][str(b)]["texts_per_s"] for b in batch_sizes]
        ax.bar(np.arange(len(batch_sizes)) + i * width, speeds, width, label=name)
    ax.set_xticks(
        np.arange(len(batch_sizes)) + width * (len(names) - 1) / 2, [f"batch {b}" for b in batch_sizes]
    )
    ax.set_ylabel("texts / s (higher is better)")
    ax.set_title(
        f"all-MiniLM-L6-v2, {results['corpus_texts']} mixed-length texts, {results['threads']} threads"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
