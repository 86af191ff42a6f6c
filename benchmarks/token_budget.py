"""Tokens per ONNX Runtime call (``max_batch_tokens``): speed and peak RSS, per budget.

The engine cuts length-sorted texts into batches of at most ``batch_size`` texts and a token budget
(texts x longest text, padding included), by default ``batch_size x 32``: 1,024 tokens at batch 32.
Each call's activations live in ONNX Runtime's arena, once per concurrent run, so the budget sets
most of the memory an embed call adds; this script measures what it does to speed too.

- speed: one process holds the model and switches the budget between calls (the engine reads
  ``max_batch_tokens`` on every call), ``--repeats`` rounds over ``--texts`` benchmark texts, the
  order of the budgets reversed every other round; printed are the median seconds and the speed
  against the default budget;
- memory: a fresh process per budget loads the model, makes the same call once, and prints its peak
  RSS (VmHWM).

    python benchmarks/token_budget.py MODEL_DIR [--kind embed|late|sparse|rerank] [--onnx-file F]
        [--budgets 128,256,512,1024,2048] [--texts 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

DEFAULT_BUDGET = 1024  # batch 32 x TOKENS_PER_TEXT_BUDGET (engine/tokens.py)
RERANK_QUERY = "what is a package manager"


def _load(args: argparse.Namespace):
    """The model and a call that makes it do its work on the texts."""
    from fastembed_native.bench.corpus import gather_corpus

    texts = gather_corpus(args.texts)
    options = {"threads": args.threads, **({"onnx_file": args.onnx_file} if args.onnx_file else {})}
    if args.kind == "rerank":
        from fastembed_native import TextCrossEncoder

        model = TextCrossEncoder(args.model_dir, **options)
        return model, lambda: list(model.rerank(RERANK_QUERY, texts))
    if args.kind == "embed":
        from fastembed_native import TextEmbedding

        model = TextEmbedding(args.model_dir, **options)
        return model, lambda: model.embed(texts, batch_size=32)
    from fastembed_native import LateInteractionTextEmbedding, SparseTextEmbedding

    cls = LateInteractionTextEmbedding if args.kind == "late" else SparseTextEmbedding
    model = cls(args.model_dir, **options)
    return model, lambda: list(model.embed(texts))


def _engine(model):
    """The object whose ``max_batch_tokens`` the call reads (a head holds its engine)."""
    return getattr(model, "engine", model)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--kind", choices=["embed", "late", "sparse", "rerank"], default="embed")
    parser.add_argument("--onnx-file", default=None)
    parser.add_argument("--budgets", default="128,256,512,1024,2048")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # the budget of a memory run
    args = parser.parse_args()
    if args.child:
        model, call = _load(args)
        _engine(model).max_batch_tokens = args.child
        call()
        print(json.dumps(_peak_rss_mb()))
        return 0

    budgets = [int(b) for b in args.budgets.split(",")]
    model, call = _load(args)
    engine = _engine(model)
    print(
        f"{args.model_dir} {args.onnx_file or ''} ({args.kind}): {args.texts} texts, {args.threads} threads"
    )
    call()  # sessions made
    seconds: dict[int, list[float]] = {b: [] for b in budgets}
    for round_ in range(args.repeats):
        for budget in budgets if round_ % 2 == 0 else budgets[::-1]:
            engine.max_batch_tokens = budget
            time.sleep(0.3)  # the previous call's threads go idle
            start = time.perf_counter()
            call()
            seconds[budget].append(time.perf_counter() - start)
    base = DEFAULT_BUDGET if DEFAULT_BUDGET in budgets else budgets[0]
    reference = statistics.median(seconds[base])
    for budget in budgets:
        command = [sys.executable, __file__, args.model_dir, "--kind", args.kind, "--texts", str(args.texts)]
        command += ["--threads", str(args.threads), "--child", str(budget)]
        command += ["--onnx-file", args.onnx_file] if args.onnx_file else []
        peak = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        median = statistics.median(seconds[budget])
        print(
            f"budget {budget:>5} tokens: {median:.2f} s (speed {reference / median:.2f}x that of "
            f"{base}; runs {', '.join(f'{s:.2f}' for s in seconds[budget])}), "
            f"peak RSS of a fresh process {peak:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
