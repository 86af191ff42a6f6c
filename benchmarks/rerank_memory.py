"""Peak RSS of a reranker with its weights inside the graph file against the same graph with its
weights in a data file beside it, which the engine's two sessions share (README, Design).

    python benchmarks/rerank_memory.py ~/.cache/fastembed_native/bench-rerank/bge-reranker-base/onnx

copies the model directory's graph into a temporary directory as ``onnx/model.onnx`` +
``onnx/model.onnx_data`` (the other files linked), then, each in a fresh process, reranks
``--queries`` queries x ``--docs`` documents of the benchmark corpus with ``TextCrossEncoder`` on
both layouts and prints the peak RSS and the seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rerank(model_dir: str, queries: int, docs: int) -> None:
    import resource

    from fastembed_native import TextCrossEncoder
    from fastembed_native.bench.corpus import gather_corpus

    corpus = gather_corpus(queries * docs)
    model = TextCrossEncoder(model_dir, threads=2)
    start = time.perf_counter()
    for q in range(queries):
        model.rerank(corpus[q][:80], corpus[q * docs : (q + 1) * docs])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB, {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _rerank(args.model_dir, args.queries, args.docs)
        return
    import onnx

    source = Path(args.model_dir)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "data-file"
        (copy / "onnx").mkdir(parents=True)
        for item in source.iterdir():
            if item.name != "onnx":
                (copy / item.name).symlink_to(item.resolve())
        onnx.save_model(
            onnx.load(str(source / "onnx" / "model.onnx")),
            str(copy / "onnx" / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx_data",
            size_threshold=1024,
        )
        for name, path in (("weights in the graph file", source), ("weights in a data file", copy)):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    str(path),
                    "--queries",
                    str(args.queries),
                    "--docs",
                    str(args.docs),
                    "--child",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            print(f"{name}: {out.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
