"""``fastembed-native bench quality``'s command line: a dense model's retrieval against fp32
(:mod:`.quality`), or a reranker's ordering / a SPLADE model's retrieval against fp32
(:mod:`.quality_heads`), as ``--kind`` (or the model's files) says."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import quality
from . import quality_heads as heads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench quality",
        description=quality.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="ONNX file to compare, relative to the model directory or absolute; repeat for several "
        "(default: onnx/model_int8.onnx when present)",
    )
    parser.add_argument("--reference", help="the file compared against (default: the model's fp32 file)")
    parser.add_argument("--quick", action="store_true", help="a small set from a few stdlib packages")
    parser.add_argument(
        "--kind",
        choices=["auto", "dense", "rerank", "sparse"],
        default="auto",
        help="what the model is (default: read from its files): dense retrieval, a reranker's ordering, "
        "or SPLADE retrieval against fp32",
    )
    parser.add_argument(
        "--queries",
        type=int,
        help=f"queries drawn (default {quality.DEFAULT_QUERIES}; rerank: the first 50 of them, sparse: 200)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        help="rerank: candidates per query (default 20); sparse: texts in the candidate pool (default 600)",
    )
    parser.add_argument(
        "--note",
        help="rerank/sparse: what the weights are, kept in the report and the recipe (default: said for "
        "bench rerank / bench sparse's random models, else none)",
    )
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-cache", dest="use_cache", action="store_false", help="embed afresh")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument(
        "--record",
        action="store_true",
        help="add each variant's results to the recipe file beside it (onnx/model_int8.json), which "
        "`inspect` prints",
    )
    args = parser.parse_args(argv)

    from ..engine import INT8_FILE
    from ..models import resolve_model

    model_dir = Path(resolve_model(args.model))
    variants = args.variant or ([INT8_FILE] if (model_dir / INT8_FILE).is_file() else [])
    kind = args.kind
    if kind == "auto":
        from ..models.quantize import model_kind

        kind = {"embedding": "dense"}.get(model_kind(model_dir), model_kind(model_dir))
    if kind != "dense":
        return _main_heads(args, kind, model_dir, variants)
    eval_set = quality.load_eval_set(quick=args.quick, queries=args.queries)
    report = quality.evaluate(
        model_dir,
        variants,
        eval_set,
        reference=args.reference,
        threads=args.threads,
        use_cache=args.use_cache,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.record:
        quality.record(model_dir, report)
    print(quality.markdown(report))
    return 0


def _main_heads(args: argparse.Namespace, kind: str, model_dir: Path, variants: list[str]) -> int:
    """``--kind rerank|sparse``: agreement with fp32 on the docstring set (see quality_heads)."""
    eval_set = quality.load_eval_set(quick=args.quick)  # its first queries: the set's draw is already random
    options: dict[str, Any] = {"reference": args.reference, "threads": args.threads, "note": args.note}
    for key in ("queries", "candidates"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    evaluate_heads = heads.evaluate_rerank if kind == "rerank" else heads.evaluate_sparse
    report = evaluate_heads(model_dir, variants, eval_set, **options)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.record:
        heads.record(model_dir, report)
    print(heads.markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
