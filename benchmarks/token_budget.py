"""Tokens per ONNX Runtime call (``max_batch_tokens``, ``ATTENTION_WIDTH``): speed and peak RSS.

The engine cuts length-sorted texts into batches of at most ``batch_size`` texts and a token budget
(texts x longest text, padding included), by default ``batch_size x 32``: 1,024 tokens at batch 32.
On the CPU, texts wider than the engine's ``attention_width`` (``engine.tokens.ATTENTION_WIDTH``)
get a budget smaller in proportion to their width, as their attention scores grow with its square. Each call's activations live in ONNX
Runtime's arena, once per concurrent run, so these set most of the memory an embed call adds; this
script measures what they do to speed too, for every pair of ``--budgets`` and ``--attention-widths``
(``off``: no width rule, the engine before it had one).

- speed: one process holds the model and switches the setting between calls (the engine reads
  both on every call), ``--repeats`` rounds over ``--texts`` benchmark texts, the order of the
  settings reversed every other round; printed are the median seconds and the speed against the
  first setting with the default budget;
- memory: a fresh process per setting loads the model, makes the same call once, and prints its
  peak RSS (VmHWM).

    python benchmarks/token_budget.py MODEL_DIR [--kind embed|late|sparse|rerank] [--onnx-file F]
        [--budgets 128,256,512,1024,2048] [--attention-widths 64] [--texts 1000]
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


def _apply(engine, setting: tuple[int, int | None]) -> None:
    """Make the next call run with ``setting`` (budget, attention width or None for no width rule)."""
    engine.max_batch_tokens, engine.attention_width = setting


def _name(setting: tuple[int, int | None]) -> str:
    budget, width = setting
    return f"budget {budget:>5} tokens, attention width {width or 'off':>3}"


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
    parser.add_argument("--attention-widths", default="64", help="comma-separated; off: no width rule")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a memory run's setting, as JSON
    args = parser.parse_args()
    if args.child:
        model, call = _load(args)
        _apply(_engine(model), tuple(json.loads(args.child)))
        call()
        print(json.dumps(_peak_rss_mb()))
        return 0

    widths = [None if w == "off" else int(w) for w in args.attention_widths.split(",")]
    settings = [(int(b), w) for b in args.budgets.split(",") for w in widths]
    model, call = _load(args)
    engine = _engine(model)
    print(
        f"{args.model_dir} {args.onnx_file or ''} ({args.kind}): {args.texts} texts, {args.threads} threads"
    )
    call()  # sessions made
    seconds: dict[tuple[int, int | None], list[float]] = {s: [] for s in settings}
    for round_ in range(args.repeats):
        for setting in settings if round_ % 2 == 0 else settings[::-1]:
            _apply(engine, setting)
            time.sleep(0.3)  # the previous call's threads go idle
            start = time.perf_counter()
            call()
            seconds[setting].append(time.perf_counter() - start)
    base = next((s for s in settings if s[0] == DEFAULT_BUDGET), settings[0])
    reference = statistics.median(seconds[base])
    for setting in settings:
        command = [sys.executable, __file__, args.model_dir, "--kind", args.kind, "--texts", str(args.texts)]
        command += ["--threads", str(args.threads), "--child", json.dumps(setting)]
        command += ["--onnx-file", args.onnx_file] if args.onnx_file else []
        peak = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600).stdout
        )
        median = statistics.median(seconds[setting])
        print(
            f"{_name(setting)}: {median:.2f} s (speed {reference / median:.2f}x that of {_name(base)}; "
            f"runs {', '.join(f'{s:.2f}' for s in seconds[setting])}), peak RSS of a fresh process {peak:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
