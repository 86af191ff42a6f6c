"""The ``fastembed-native`` command line: embed, inspect, export, bench, models."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .corpus.command import add_embed_parser

#: The extra that installs each optional module a command may import, by top-level import name.
_EXTRA_OF_MODULE = {
    "uvicorn": "serve",
    "fastapi": "serve",
    "starlette": "serve",
    "orjson": "serve",
    "prometheus_client": "serve",
    "grpc": "serve",
    "grpc_health": "serve",
    "grpc_reflection": "serve",
    "google": "serve",  # protobuf, for --grpc-port
    "onnx": "default-model",
    "safetensors": "default-model",
    "pyarrow": "corpus",
    "torch": "export",
    "optimum": "export",
    "transformers": "export",
    "sentence_transformers": "export",
    "ray": "ray",
}

#: Exit status of a command that cannot run as given (argparse's own for a bad option): a missing
#: extra, options that do not fit the inputs, a model argument that is not a model.
USAGE_ERROR = 2


def missing_module_message(exc: ImportError) -> str:
    """One line saying what to install when a command's optional module is missing."""
    if not exc.name:  # our own ImportError, whose message already says what to install
        return str(exc)
    top = exc.name.split(".")[0]
    extra = _EXTRA_OF_MODULE.get(top)
    if extra is None:
        return f"needs the Python module {exc.name!r}, which is not installed: pip install {top}"
    return (
        f"needs the [{extra}] extra ({exc.name} is not installed): pip install 'fastembed-native[{extra}]', "
        f"or from a source checkout pip install '.[{extra}]'"
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from .models import inspect_model

    report = inspect_model(args.model)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    for key, value in report.items():
        if key in ("inputs", "outputs"):
            print(f"{key}:")
            for item in value:
                print(f"  {item['name']}: {item['type']} {item['shape']}")
        elif key == "warnings":
            for warning in value:
                print(f"WARNING: {warning}")
        else:
            print(f"{key}: {value}")


def cmd_export(args: argparse.Namespace) -> int:
    from .models import export_model

    report = export_model(
        args.source,
        args.output,
        min_cosine=args.min_cosine,
        fuse=args.fuse,
        external_data=args.external_data,
        dtype=args.dtype,
    )
    print(f"exported {args.source} -> {report.model_dir}; {report.parity()}")
    if args.dtype == "int8":
        from .engine import INT8_FILE
        from .models.quantize import describe_recipe, read_recipe

        recipe = read_recipe(report.model_dir / INT8_FILE)
        print(f"{INT8_FILE}: {describe_recipe(recipe) if recipe else 'missing'}; load it with --quantized")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .models import fuse_model

    path = fuse_model(args.model)
    print(
        f"wrote {path}" if path else f"nothing fused: {args.model}'s model type has no fusions that match it"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .models import quantize_model, resolve_model
    from .models.quantize import describe_parity

    model_dir = Path(resolve_model(args.model))
    report = quantize_model(
        model_dir,
        method=args.method,
        calibration=args.calibration,
        outliers=args.outliers,
        vocab_projection=args.vocab_projection,
    )
    if report.kind == "embedding":
        measured = f"cosine vs fp32 min {report.min_cosine:.4f} mean {report.mean_cosine:.4f}"
    else:
        measured = f"{report.kind} model; {describe_parity(report.recipe)}"
    loader = {"rerank": "TextCrossEncoder", "sparse": "SparseTextEmbedding"}.get(report.kind, "TextEmbedding")
    print(
        f"wrote {report.path} ({args.method}): {measured}, {report.speedup:.2f}x the fp32 speed; recipe in "
        f"{report.path.with_suffix('.json').name}; load it with {loader}(model, quantized=True) "
        "(embed/serve --quantized)"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import cache_root, cached_model_dir
    from .text_embedding import TextEmbedding

    root = cache_root()
    known = TextEmbedding.list_supported_models()
    for info in known:
        here = "cached" if cached_model_dir(info["model"]).is_dir() else "-"
        print(
            f"{info['model']:36} dim={info['dim']:<5} pooling={info['pooling']:<10} "
            f"max_length={info['max_length']:<6} {here}"
        )
    # Entries are "org--name" folders; dot-prefixed ones are builds in progress or abandoned.
    names = {cached_model_dir(info["model"]).name for info in known}
    others = sorted(
        p.name.replace("--", "/")
        for p in (root.iterdir() if root.is_dir() else [])
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in names
        # a model folder, not a benchmark's or bench quality's ("eval") working folder
        and ((p / "config.json").is_file() or (p / "onnx").is_dir() or (p / "model.onnx").is_file())
    )
    for name in others:
        print(f"{name:36} (not in the registry; read from its own config files)  cached")
    print(f"model cache: {root}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import API_KEY_ENV, ModelSpec, ServeConfig
    from .serve.server import serve

    config = ServeConfig(
        models=tuple(ModelSpec.parse(m) for m in args.model) if args.model else ServeConfig().models,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_inputs=args.max_inputs,
        max_body_bytes=args.max_body_bytes,
        max_queued_tokens=args.max_queued_tokens,
        max_call_tokens=args.max_call_tokens,
        auto_truncate=not args.no_auto_truncate,
        cache_bytes=int(args.cache_size * 2**20),
        stuck_after=args.stuck_after,
        drain_seconds=args.drain_seconds,
        threads=args.threads,
        quantized=args.quantized,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        max_inflight_bytes=args.max_inflight_bytes,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        max_header_bytes=args.max_header_bytes,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    return serve(config, host=args.host, port=args.port, log_level=args.log_level, grpc_port=args.grpc_port)


def add_serve_parser(sub: Any) -> None:
    from .serve.config import API_KEY_ENV, ServeConfig

    defaults = ServeConfig(api_key=None)
    serve = sub.add_parser(
        "serve",
        help="OpenAI- and TEI-compatible embedding server (needs the [serve] extra)",
        description="Serve embeddings over HTTP: POST /v1/embeddings (OpenAI), /embed and /tokenize (TEI), "
        "GET /v1/models, /info, /health, /metrics.",
    )
    serve.add_argument(
        "--model",
        action="append",
        help="model to serve: a directory or id, or NAME=SOURCE to choose the name clients send; repeat for "
        "several models (the first is the default). Default: all-MiniLM-L6-v2",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="also serve gRPC (fastembed_native.v1, TEI's tei.v1, health, reflection) on this port, "
        "on the same queues as HTTP (default: no gRPC)",
    )
    serve.add_argument(
        "--grpc-max-message-bytes",
        type=int,
        default=defaults.grpc_max_message_bytes,
        help="largest gRPC request message (default %(default)s)",
    )
    serve.add_argument(
        "--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else none)"
    )
    serve.add_argument(
        "--max-inputs", type=int, default=defaults.max_inputs, help="inputs per request (default %(default)s)"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="request body bytes (default %(default)s)",
    )
    serve.add_argument(
        "--max-queued-tokens",
        type=int,
        default=defaults.max_queued_tokens,
        help="tokens waiting per model before requests get 429 (default %(default)s)",
    )
    serve.add_argument(
        "--max-call-tokens",
        type=int,
        default=defaults.max_call_tokens,
        help="tokens one engine call takes across requests (default %(default)s)",
    )
    serve.add_argument(
        "--no-auto-truncate",
        action="store_true",
        help="refuse inputs over the model's max length (400 stating the token count) instead of truncating",
    )
    serve.add_argument(
        "--cache-size", type=float, default=0, help="in-memory embedding cache in MB (default 0: off)"
    )
    serve.add_argument(
        "--stuck-after",
        type=float,
        default=defaults.stuck_after,
        help="seconds one engine call may take before /health fails (default %(default)s)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=defaults.drain_seconds,
        help="on SIGTERM, how long in-flight requests may take to finish (default %(default)s)",
    )
    serve.add_argument(
        "--max-inflight-bytes",
        type=int,
        default=defaults.max_inflight_bytes,
        help="bytes of requests in flight, all clients together: each request counts its body and the "
        "largest answer it can ask for; past it requests get 429 (default %(default)s)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open HTTP connections; more are answered 503 at once (default %(default)s)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        help="seconds a connection may take to send a complete request header (default %(default)s)",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        default=defaults.max_header_bytes,
        help="request header size; larger ones get 431 (default %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=defaults.body_timeout,
        help="seconds a request body (or a client reading its answer) may stall before the request is "
        "dropped (default %(default)s)",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=defaults.keep_alive_timeout,
        help="seconds an idle keep-alive connection stays open (default %(default)s)",
    )
    serve.add_argument("--threads", type=int, help="ORT threads per model (default: every CPU)")
    serve.add_argument(
        "--quantized",
        action="store_true",
        help="serve the int8 files (onnx/model_int8.onnx, made by `quantize`) of the embedding, reranker "
        "and sparse models (ColBERT models stay fp32)",
    )
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastembed-native", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_embed_parser(sub)

    inspect_cmd = sub.add_parser("inspect", help="what a model file holds and what to watch out for")
    inspect_cmd.add_argument(
        "model",
        nargs="?",
        help="anything embed's --model takes (directory, model id; default: all-MiniLM-L6-v2), or an .onnx file",
    )
    inspect_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    inspect_cmd.set_defaults(func=cmd_inspect)

    export = sub.add_parser("export", help="export a Hugging Face checkpoint to ONNX, with a parity check")
    export.add_argument("source", help="checkpoint directory (config.json, weights, tokenizer)")
    export.add_argument("output", help="new model directory to create")
    export.add_argument(
        "--min-cosine", type=float, default=None, help="parity bar (default 0.9999; 0.999 for --dtype fp16)"
    )
    export.add_argument("--no-fuse", dest="fuse", action="store_false", help="skip onnx/model_fused.onnx")
    export.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="fp16: for GPU / Core ML; int8: fp32 plus onnx/model_int8.onnx (as `quantize` makes it), "
        "loaded with --quantized / TextEmbedding(model, quantized=True)",
    )
    export.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every weight in onnx/model.onnx_data (default: tensors of 1 KB or more there, which the "
        "engine's sessions share; --no-external-data: all in onnx/model.onnx, under 2 GB only)",
    )
    export.set_defaults(func=cmd_export)

    fuse = sub.add_parser(
        "fuse", help="add onnx/model_fused.onnx (faster single queries, same vectors) to a model dir"
    )
    fuse.add_argument("model", help="model directory")
    fuse.set_defaults(func=cmd_fuse)

    quantize = sub.add_parser(
        "quantize",
        help="write an int8 copy of an embedding, reranker or SPLADE model (about 2x faster) with its "
        "recipe and quality",
    )
    quantize.add_argument(
        "model", help="model directory or id; the copy goes to onnx/model_int8.onnx inside it"
    )
    quantize.add_argument(
        "--method",
        choices=["rowwise", "dynamic"],
        default="rowwise",
        help="rowwise (default): per-token int8 activations, GPTQ-rounded weights, float32 outlier "
        "channels, int8 embedding table; dynamic: ONNX Runtime's quantize_dynamic, for comparison",
    )
    quantize.add_argument(
        "--calibration",
        type=Path,
        help="text file to calibrate on, one text per line (default: Debian package descriptions, "
        "else the licence files of installed packages)",
    )
    quantize.add_argument(
        "--outliers",
        choices=["shared", "all", "none"],
        default="shared",
        help="rowwise: which inputs keep outlier channels in float32: shared (default: attention's "
        "query/key/value input), all (closest to fp32, slower), none",
    )
    quantize.add_argument(
        "--vocab-projection",
        choices=["int8", "float32"],
        default="int8",
        help="rowwise, SPLADE models: the MLM head's vocabulary projection in int8 (default) or float32",
    )
    quantize.set_defaults(func=cmd_quantize)

    models = sub.add_parser("models", help="list the models this package knows")
    models.set_defaults(func=cmd_models)

    add_serve_parser(sub)

    # Listed for --help; main() hands `bench ...` to fastembed_native.bench before parsing.
    sub.add_parser(
        "bench",
        help="benchmark against onnxruntime, fastembed and sentence-transformers (bench --help); "
        "`bench corpus`: streaming's peak memory and speed (bench corpus --help); "
        "`bench ray`: Ray Data against in-process, and the break-even (bench ray --help); "
        "`bench serve`: embedding servers side by side, or --soak for memory, --rerank for rerankers "
        "(bench serve --help); "
        "`bench rerank`: rerankers side by side (bench rerank --help); "
        "`bench sparse`: SPLADE encoders side by side (bench sparse --help); "
        "`bench late`: ColBERT encoders and MaxSim side by side (bench late --help); "
        "`bench quality`: an int8 (or any) variant's retrieval against fp32 (bench quality --help); "
        "`bench int8`: int8 against fp32 side by side, speed, memory and size (bench int8 --help)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "corpus"]:  # streaming's memory and speed (bench/streaming.py)
        from .bench.streaming import main as corpus_main

        return corpus_main(argv[2:])
    if argv[:2] == ["bench", "ray"]:  # Ray Data against in-process (bench/ray.py)
        from .bench.ray import main as ray_main

        return ray_main(argv[2:])
    if argv[:2] == ["bench", "serve"]:  # servers side by side (bench/serve.py)
        from .bench.serve import main as serve_bench_main

        return serve_bench_main(argv[2:])
    if argv[:2] == ["bench", "int8"]:  # int8 against fp32: speed, memory, size (bench/int8.py)
        from .bench.int8 import main as int8_main

        return int8_main(argv[2:])
    if argv[:2] == ["bench", "quality"]:  # a variant's retrieval against fp32 (bench/quality.py)
        from .bench.quality_cli import main as quality_main

        return quality_main(argv[2:])
    if argv[:2] == ["bench", "rerank"]:  # rerankers side by side (bench/rerank.py)
        from .bench.rerank import main as rerank_bench_main

        return rerank_bench_main(argv[2:])
    if argv[:2] == ["bench", "sparse"]:  # SPLADE encoders side by side (bench/sparse.py)
        from .bench.sparse import main as sparse_bench_main

        return sparse_bench_main(argv[2:])
    if argv[:2] == ["bench", "late"]:  # ColBERT encoders and MaxSim side by side (bench/late.py)
        from .bench.late import main as late_bench_main

        return late_bench_main(argv[2:])
    if argv[:1] == ["bench"]:  # the benchmark parses its own options
        from .bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .corpus import CorpusUsageError
    from .errors import FastembedNativeError
    from .models.inspect import NotAnOnnxModelError

    def fail(message: object, status: int) -> int:
        print(f"fastembed-native {args.command}: error: {message}", file=sys.stderr)
        return status

    try:
        return int(args.func(args))
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "fastembed_native":
            raise  # our own module failing to import is a bug, not a missing extra
        return fail(missing_module_message(exc), USAGE_ERROR)
    except (CorpusUsageError, NotAnOnnxModelError) as exc:
        return fail(exc, USAGE_ERROR)
    except (FastembedNativeError, FileNotFoundError, FileExistsError, ValueError, TypeError) as exc:
        return fail(exc, 1)


if __name__ == "__main__":
    sys.exit(main())
