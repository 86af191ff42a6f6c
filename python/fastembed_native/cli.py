"""The ``fastembed-native`` command line: embed, inspect, export, bench, models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .engine import TOKENIZE_WINDOW

#: Texts per embed() call (and the progress bar's step): one tokenize-and-sort window.
CHUNK = TOKENIZE_WINDOW


def _read_texts(paths: list[str], field: str | None) -> list[str]:
    """One text per line from each file (or stdin for '-' / no file); with ``field``, JSONL records."""

    def lines() -> Iterator[tuple[str, int, str]]:
        for path in paths or ["-"]:
            stream: TextIO = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
            with stream if path != "-" else nullcontext(stream):
                for number, line in enumerate(stream, 1):
                    yield path, number, line.rstrip("\r\n")

    texts = []
    for path, number, line in lines():
        if field is None:
            texts.append(line)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not JSON ({exc.msg})") from None
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise SystemExit(f"{path}:{number}: field {field!r} missing or not a string")
        texts.append(value)
    return texts


def _providers(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


def cmd_embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .text_embedding import TextEmbedding

    texts = _read_texts(args.inputs, args.field)
    model = TextEmbedding(args.model, providers=_providers(args.providers), batch_size=args.batch_size)
    prompt = model.prompts.get(args.prompt, args.prompt) if args.prompt else ""
    out = np.empty((len(texts), model.dim), dtype=np.float32)
    # A progress bar only for people: quiet when stderr is not a terminal (pipes, CI, logs).
    show = sys.stderr.isatty() and not args.quiet and len(texts) > CHUNK
    with tqdm(total=len(texts), unit="text", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(texts), CHUNK):
            out[start : start + CHUNK] = model.embed(texts[start : start + CHUNK], prompt=prompt)
            bar.update(min(CHUNK, len(texts) - start))
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, out)
    else:
        sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
        try:
            for text, vector in zip(texts, out, strict=True):
                sink.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
        finally:
            if sink is not sys.stdout:
                sink.close()
    if not args.quiet:
        print(f"embedded {len(texts)} texts -> {args.output or 'stdout'} ({model.dim} dims)", file=sys.stderr)
    return 0


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

    report = export_model(args.source, args.output, min_cosine=args.min_cosine, fuse=args.fuse)
    print(f"exported {args.source} -> {report.model_dir}; parity min cosine {report.min_cosine:.6f}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .models import fuse_model

    path = fuse_model(args.model)
    print(
        f"wrote {path}" if path else f"nothing fused: {args.model}'s model type has no fusions that match it"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .models import quantize_model

    report = quantize_model(args.model)
    print(
        f"wrote {report.path}: cosine vs fp32 min {report.min_cosine:.4f} mean {report.mean_cosine:.4f}, "
        f"{report.speedup:.2f}x the fp32 speed; load it with TextEmbedding(model, onnx_file='{report.path.relative_to(Path(args.model))}')"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .text_embedding import TextEmbedding

    for info in TextEmbedding.list_supported_models():
        print(
            f"{info['model']:36} dim={info['dim']:<5} pooling={info['pooling']:<10} max_length={info['max_length']}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastembed-native", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="embed texts from files or stdin")
    embed.add_argument("inputs", nargs="*", help="text files, one text per line ('-' or none: stdin)")
    embed.add_argument(
        "-o", "--output", help="output: .npy (array) or anything else (JSONL); default JSONL to stdout"
    )
    embed.add_argument("--field", help="read JSONL input and embed this field of each record")
    embed.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--providers", help="comma-separated, in priority order, e.g. cuda,cpu")
    embed.add_argument("--prompt", help="'query', 'passage' (the model's prompts) or a literal prefix")
    embed.add_argument("-q", "--quiet", action="store_true")
    embed.set_defaults(func=cmd_embed)

    inspect_cmd = sub.add_parser("inspect", help="what a model file holds and what to watch out for")
    inspect_cmd.add_argument("model", help="model directory, or an .onnx file")
    inspect_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    inspect_cmd.set_defaults(func=cmd_inspect)

    export = sub.add_parser("export", help="export a Hugging Face checkpoint to ONNX, with a parity check")
    export.add_argument("source", help="checkpoint directory (config.json, weights, tokenizer)")
    export.add_argument("output", help="new model directory to create")
    export.add_argument("--min-cosine", type=float, default=0.9999)
    export.add_argument("--no-fuse", dest="fuse", action="store_false", help="skip onnx/model_fused.onnx")
    export.set_defaults(func=cmd_export)

    fuse = sub.add_parser(
        "fuse", help="add onnx/model_fused.onnx (faster single queries, same vectors) to a model dir"
    )
    fuse.add_argument("model", help="model directory")
    fuse.set_defaults(func=cmd_fuse)

    quantize = sub.add_parser(
        "quantize", help="write an int8 copy of a model (faster, less exact) and report both"
    )
    quantize.add_argument("model", help="model directory; the copy goes to onnx/model_int8.onnx inside it")
    quantize.set_defaults(func=cmd_quantize)

    models = sub.add_parser("models", help="list the models this package knows")
    models.set_defaults(func=cmd_models)

    # Listed for --help; main() hands `bench ...` to fastembed_native.bench before parsing.
    sub.add_parser(
        "bench", help="benchmark against onnxruntime, fastembed and sentence-transformers (bench --help)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark parses its own options
        from .bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .errors import FastembedNativeError

    try:
        return int(args.func(args))
    except (FastembedNativeError, FileNotFoundError, FileExistsError, ValueError, TypeError) as exc:
        print(f"fastembed-native {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
