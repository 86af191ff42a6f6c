"""``fastembed-native bench corpus``: what streaming costs, in memory and in speed.

- Memory: the peak RSS (VmHWM) of a fresh ``fastembed-native embed FILE -o out.npy`` process for
  each line count (default 10,000 and 2,000,000 lines, made by repeating the benchmark corpus), so
  the two numbers show whether memory stays flat as the input grows; with ``--formats``, the same
  input is written as each output format in turn (``out.npy``, ``out.jsonl``, ``out.parquet``),
  so each format's peak can be set against ``.npy``'s.
- Speed: texts/s of the streaming run (reading a file, windows, per-step progress, writing and
  committing a ``.npy``) against one in-process ``TextEmbedding.embed`` call on the same texts with
  the same loaded model, interleaved, medians; their ratio is what streaming costs, and the two
  outputs are compared.

Writes ``<name>.json`` and ``<name>.md`` to ``--out`` (``--name``, default ``corpus``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import numpy as np

PEAK_MARK = "PEAK_RSS_MB"

# The child runs the real command line, then reports its own peak RSS (see measure.own_peak_rss_mb).
_CHILD = (
    "import sys\n"
    "from fastembed_native.cli import main\n"
    "from fastembed_native.bench.measure import own_peak_rss_mb\n"
    "status = main(sys.argv[1:])\n"
    f"print('{PEAK_MARK}', own_peak_rss_mb(), flush=True)\n"
    "sys.exit(status)\n"
)


def source_lines(texts_file: Path | None, size: int = 2000, max_words: int | None = None) -> list[str]:
    """The texts to repeat: a file's non-empty lines, else the benchmark corpus (one line each),
    each cut to its first ``max_words`` words if given (shorter texts: a quicker run)."""
    if texts_file is not None:
        lines = [line for line in texts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from .corpus import gather_corpus

        lines = [" ".join(text.split()) for text in gather_corpus(size)]
    if max_words is not None:
        lines = [" ".join(line.split()[:max_words]) for line in lines]
    if not lines:
        raise ValueError(f"{texts_file}: no text to repeat")
    return lines


def write_lines(path: Path, lines: list[str], count: int) -> None:
    """``count`` lines cycling through ``lines``, written in blocks (never all in memory)."""
    source = cycle(lines)
    with open(path, "w", encoding="utf-8") as handle:
        left = count
        while left:
            block = min(left, 10_000)
            handle.write("\n".join(islice(source, block)) + "\n")
            left -= block


def count_rows(path: Path, fmt: str) -> int:
    """Rows in a finished output file of format ``fmt``."""
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def peak_rss_run(
    source: Path,
    count: int,
    model_dir: Path,
    threads: int,
    work: Path,
    batch_size: int | None,
    fmt: str = "npy",
) -> dict[str, Any]:
    """Embed the ``count`` lines of ``source`` into a ``fmt`` file with a fresh
    ``fastembed-native embed`` process; its peak RSS and speed."""
    out = work / f"vectors-{count}.{fmt}"
    command = ["embed", str(source), "-o", str(out), "--model", str(model_dir), "--threads", str(threads)]
    command += ["-q", "--overwrite"] + (["--batch-size", str(batch_size)] if batch_size else [])
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"embed of {count} lines to .{fmt} failed: {result.stderr.strip()[-2000:]}")
    peak = next(float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith(PEAK_MARK))
    rows = count_rows(out, fmt)
    if rows != count:
        raise RuntimeError(f"embed of {count} lines to .{fmt} wrote {rows} rows")
    record = {
        "lines": count,
        "format": fmt,
        "peak_rss_mb": round(peak, 1),
        "seconds": round(seconds, 2),
        "texts_per_s": round(count / seconds, 1),
        "input_mb": round(source.stat().st_size / 2**20, 1),
        "output_mb": round(out.stat().st_size / 2**20, 1),
    }
    out.unlink()
    return record


def throughput(
    lines: list[str],
    count: int,
    model_dir: Path,
    threads: int,
    work: Path,
    repeats: int,
    batch_size: int | None,
) -> dict[str, Any]:
    """Texts/s of one in-process embed() call and of a streaming run, same texts, same model."""
    from ..corpus import plan, run
    from ..text_embedding import TextEmbedding

    texts = list(islice(cycle(lines), count))
    source, out = work / "throughput.txt", work / "throughput.npy"
    write_lines(source, lines, count)
    options: dict[str, Any] = {"batch_size": batch_size} if batch_size else {}
    model = TextEmbedding(model_dir, threads=threads, **options)
    model.embed(texts[:256])  # warm both sessions before either is timed
    in_process, streamed = [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        start = time.perf_counter()
        expected = model.embed(texts)
        in_process.append(count / (time.perf_counter() - start))
        steps: list[int] = []  # a progress callback, as on a terminal: the per-step path is the one timed
        start = time.perf_counter()
        job = plan([str(source)], str(out), overwrite=True)
        run(job, model, progress=steps.append)
        streamed.append(count / (time.perf_counter() - start))
    got = np.load(out)
    source.unlink()
    out.unlink()
    embed_tps, stream_tps = statistics.median(in_process), statistics.median(streamed)
    return {
        "texts": count,
        "repeats": repeats,
        "embed_texts_per_s": round(embed_tps, 1),
        "stream_texts_per_s": round(stream_tps, 1),
        "ratio": round(stream_tps / embed_tps, 3),
        "max_abs_difference": float(np.abs(got - expected).max()) if count else 0.0,
    }


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| lines | output | peak RSS MB | seconds | texts/s | input MB | output MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["memory"]:
        rows.append(
            f"| {r['lines']:,} | .{r.get('format', 'npy')} | {r['peak_rss_mb']} | {r['seconds']} | "
            f"{r['texts_per_s']} | {r['input_mb']} | {r['output_mb']} |"
        )
    npy = [r for r in results["memory"] if r.get("format", "npy") == "npy"]
    lines = [
        f"Peak RSS of `fastembed-native embed FILE -o out.<format>` ({results['model']}, "
        f"{results['threads']} threads):",
        "",
        *rows,
    ]
    if len(npy) > 1:
        growth = npy[-1]["peak_rss_mb"] - npy[0]["peak_rss_mb"]
        lines += ["", f"{npy[-1]['lines']:,} lines vs {npy[0]['lines']:,} (.npy): {growth:+.1f} MB."]
    for base in npy:
        others = [
            f".{r['format']} {r['peak_rss_mb'] - base['peak_rss_mb']:+.1f} MB"
            for r in results["memory"]
            if r["lines"] == base["lines"] and r.get("format", "npy") != "npy"
        ]
        if others:
            lines += [
                "",
                f"Peak RSS against .npy on the same {base['lines']:,} lines: " + ", ".join(others) + ".",
            ]
    t = results.get("throughput")
    if t:
        lines += [
            "",
            f"Throughput on {t['texts']:,} texts (median of {t['repeats']}): in-process embed() "
            f"{t['embed_texts_per_s']} texts/s, streaming to .npy {t['stream_texts_per_s']} texts/s, "
            f"ratio {t['ratio']}; max |difference| {t['max_abs_difference']:.2e}.",
        ]
    return "\n".join(lines) + "\n"


def _formats(text: str) -> list[str]:
    from ..corpus import OUTPUT_FORMATS

    formats = [f.strip().lstrip(".").lower() for f in text.split(",") if f.strip()]
    known = set(OUTPUT_FORMATS.values())
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown output format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(sorted(known))}"
        )
    return formats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--lines",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 2_000_000],
        help="line counts whose peak RSS is measured, comma-separated (default: 10000,2000000)",
    )
    parser.add_argument(
        "--formats",
        type=_formats,
        default=["npy"],
        help="output formats whose peak RSS is measured on each line count, comma-separated, "
        "e.g. npy,jsonl,parquet (default: npy)",
    )
    parser.add_argument(
        "--throughput-texts",
        type=int,
        default=20_000,
        help="texts for the streaming vs in-process speed comparison (0: skip it; default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="speed comparison rounds (default %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--batch-size", type=int, help="texts per ONNX Runtime call (default: the model's)")
    parser.add_argument(
        "--texts", type=Path, help="a file whose lines are repeated (default: the benchmark corpus)"
    )
    parser.add_argument(
        "--max-words",
        type=int,
        help="cut each text to its first N words (default: whole texts; the corpus's paragraphs "
        "run to the model's 256 tokens, a slow run on a small machine)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the generated inputs and outputs go (default: a temp dir)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="where <name>.json/md go"
    )
    parser.add_argument(
        "--name", default="corpus", help="results file name, without extension (default %(default)s)"
    )
    args = parser.parse_args(argv)
    from ..models import resolve_model

    model_dir = resolve_model(args.model)
    lines = source_lines(args.texts, max_words=args.max_words)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        results: dict[str, Any] = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "model": str(model_dir),
            "threads": args.threads,
            "source_texts": len(lines),
            "max_words": args.max_words,
            "memory": [],
        }
        for count in args.lines:
            source = Path(work) / f"lines-{count}.txt"
            write_lines(source, lines, count)
            for fmt in args.formats:  # the same input file for every format
                record = peak_rss_run(
                    source, count, model_dir, args.threads, Path(work), args.batch_size, fmt
                )
                print(json.dumps(record), file=sys.stderr)
                results["memory"].append(record)
            source.unlink()
        if args.throughput_texts:
            results["throughput"] = throughput(
                lines,
                args.throughput_texts,
                model_dir,
                args.threads,
                Path(work),
                args.repeats,
                args.batch_size,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / f"{args.name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
