"""``fastembed-native embed``: its options, and the order in which it checks, loads and runs.

Everything that can be wrong without a model (the output's format and folder, the inputs, an
existing or partial output) is checked first, so a typo costs no model load and no hour of work.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..engine.stream import STREAM_WINDOW
from .inputs import CorpusError, CorpusUsageError
from .job import COMMIT_SECONDS
from .outputs import OUTPUT_FORMATS, check_kind, partial_path
from .resume import load_state
from .rows import m3_kind


def add_embed_parser(sub: Any) -> None:
    """Add the ``embed`` subcommand to the command line's subparsers."""
    formats = ", ".join(OUTPUT_FORMATS)
    embed = sub.add_parser(
        "embed",
        help="embed texts from files or stdin into .npy, .jsonl or .parquet, streaming and resumable",
        description="Embed a corpus of any size in constant memory: inputs are read, embedded and "
        "written one window at a time. File outputs grow as <out>.partial and are renamed when complete; "
        "an interrupted run continues with --resume. The model's files say what it makes: dense vectors "
        "(an 'embedding' column), sparse vectors of a SPLADE model ('indices' and 'values' list columns) "
        "or token vectors of a ColBERT model (an 'embedding' column of lists of vectors; no .npy for "
        "either of these two). A BGE-M3 model writes its dense vectors, or with --outputs any of its "
        "three outputs side by side from one forward pass.",
    )
    embed.add_argument(
        "inputs",
        nargs="*",
        help="text files, one text per line; .parquet files (see --column); JSONL with --field; "
        "'-' or none: stdin",
    )
    embed.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"output file, format from its extension ({formats}); default: JSONL on stdout",
    )
    embed.add_argument(
        "--field", metavar="NAME", help="read the inputs as JSONL and embed this field of each record"
    )
    embed.add_argument(
        "--column",
        metavar="NAME",
        help="the text column of .parquet inputs (default: 'text'; needs the [corpus] extra)",
    )
    embed.add_argument(
        "--model", metavar="DIR_OR_ID", help="model directory or id (default: all-MiniLM-L6-v2)"
    )
    embed.add_argument(
        "--outputs",
        metavar="LIST",
        help="a BGE-M3 model's outputs to write, comma-separated, of dense, sparse, colbert (default: "
        "dense), all from one forward pass: dense as the 'embedding' column, sparse (its lexical "
        "weights by token id) as 'indices' and 'values' list columns, colbert as a 'colbert' column of "
        "token vectors; .parquet or .jsonl (.npy holds dense alone)",
    )
    embed.add_argument(
        "--onnx-file",
        metavar="PATH",
        help="which ONNX file of the model directory to run, e.g. onnx/model_int8.onnx (from `quantize`)",
    )
    embed.add_argument(
        "--quantized",
        action="store_true",
        help="run the model's int8 file (onnx/model_int8.onnx, made by `quantize`; `inspect` shows its "
        "recipe and measured quality)",
    )
    embed.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="tokens per text; longer texts are truncated (default: the model's)",
    )
    embed.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads in all (default: every CPU this process may use)",
    )
    embed.add_argument(
        "--batch-size", type=int, metavar="N", help="texts per ONNX Runtime call at most (default: 32)"
    )
    embed.add_argument(
        "--providers",
        metavar="LIST",
        help="execution providers in priority order, comma-separated, e.g. cuda,cpu",
    )
    prompts = embed.add_mutually_exclusive_group()
    prompts.add_argument(
        "--prompt", metavar="NAME", help="prepend the model's named prompt, e.g. 'query' or 'passage'"
    )
    prompts.add_argument("--prompt-text", metavar="TEXT", help="prepend this literal text to every input")
    prompts.add_argument(
        "--query",
        action="store_true",
        help="encode the texts as search queries, on the model's query side: a ColBERT model's query "
        "marker and [MASK] expansion, an inference-free sparse model's static weights, else the model's "
        "'query' prompt if it has one (default: as documents)",
    )
    embed.add_argument(
        "--no-text",
        dest="with_text",
        action="store_false",
        help="leave the text out of .jsonl / .parquet rows",
    )
    embed.add_argument(
        "--window",
        type=int,
        metavar="N",
        default=STREAM_WINDOW,
        help="texts read, embedded, written and committed per step (default %(default)s); "
        "memory grows with it, and a resume restarts at a step boundary",
    )
    embed.add_argument(
        "--commit-seconds",
        type=float,
        metavar="S",
        default=COMMIT_SECONDS,
        help="also commit within a window once this many seconds of work are uncommitted (default "
        "%(default)s), at the next 4,096-text boundary: what Ctrl-C or a crash can lose",
    )
    existing = embed.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume", action="store_true", help="continue an interrupted run where its output ends"
    )
    existing.add_argument("--overwrite", action="store_true", help="replace an existing or partial output")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary on stderr")
    embed.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    """Run ``fastembed-native embed``; returns the exit status (130 after Ctrl-C)."""
    try:
        return _embed(args)
    except KeyboardInterrupt:
        print(_interrupted_message(args.output), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk, a vanished folder: the message says which file
        raise CorpusError(str(exc)) from None


def _embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..models import DEFAULT_MODEL, resolve_model
    from .encoders import Encoder, model_kind
    from .inputs import count_texts
    from .job import plan, run

    if args.commit_seconds < 0:
        raise CorpusUsageError(f"--commit-seconds must be 0 or more, got {args.commit_seconds}")
    if args.quantized:
        from ..text_embedding import quantized_file

        try:
            args.onnx_file = quantized_file(resolve_model(args.model), args.onnx_file)
        except ValueError:
            raise CorpusUsageError("give --quantized or --onnx-file, not both") from None

    outputs = _m3_outputs(args)  # before plan: a refused run leaves any partial output as it was
    job = plan(
        args.inputs,
        args.output,
        field=args.field,
        column=args.column,
        with_text=args.with_text,
        window=args.window,
        options={
            "model": args.model or DEFAULT_MODEL,
            "onnx_file": args.onnx_file,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "prompt": args.prompt,
            "prompt_text": args.prompt_text,
            # Only when set, so that a partial run of a version without --query still resumes.
            **({"query": True} if args.query else {}),
            **({"outputs": list(outputs)} if outputs else {}),
        },
        resume=args.resume,
        overwrite=args.overwrite,
    )
    for note in job.notes:
        if not args.quiet:
            print(note, file=sys.stderr)
    if job.complete:
        return 0
    # What the model makes, from its files, before it is loaded: .npy holds dense vectors only.
    kind = model_kind(resolve_model(args.model), args.model) if not outputs else m3_kind(outputs)
    check_kind(args.output, kind)
    options: dict[str, Any] = {
        "providers": [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None,
        "threads": args.threads,
        "max_length": args.max_length,
        "onnx_file": args.onnx_file,
    }
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if kind == "multi-vector":
        for flag, value in (
            ("--max-length", args.max_length),
            ("--prompt or --prompt-text", args.prompt or args.prompt_text),
        ):
            if value is not None:
                raise CorpusUsageError(
                    f"{args.model} is a multi-vector (ColBERT) model: it takes no {flag}, its query and "
                    "document lengths and markers come from its config (use --query for the query side)"
                )
    model = Encoder.load(
        args.model,
        query=args.query,
        kind=kind,
        outputs=outputs or None,
        **{k: v for k, v in options.items() if v is not None},
    )
    prompt = args.prompt_text or ""
    if args.prompt is not None:
        if args.prompt not in model.prompts:
            has = ", ".join(map(repr, model.prompts)) or "none"
            raise CorpusError(
                f"the model has no prompt named {args.prompt!r} (its prompts: {has}); "
                "to prepend text of your own use --prompt-text"
            )
        prompt = model.prompts[args.prompt]
    # A progress bar only for people: quiet when stderr is not a terminal (pipes, CI, logs).
    show = sys.stderr.isatty() and not args.quiet
    total = count_texts(job.inputs) if show else None
    with tqdm(
        total=total,
        initial=job.rows_done,
        unit="text",
        disable=not show,
        file=sys.stderr,
        delay=1.0,  # runs shorter than a second stay silent
        dynamic_ncols=True,
        smoothing=0.05,
    ) as bar:
        rows = run(
            job,
            model,
            batch_size=args.batch_size,
            prompt=prompt,
            progress=bar.update if show else None,
            commit_seconds=args.commit_seconds,
        )
    if not args.quiet:
        texts = "text" if rows == 1 else "texts"
        print(f"embedded {rows} {texts} -> {args.output or 'stdout'} ({model.describe()})", file=sys.stderr)
    return 0


def _m3_outputs(args: argparse.Namespace) -> tuple[str, ...]:
    """``--outputs``, checked before any work: BGE-M3's names, a BGE-M3 model, and an output format
    that holds them; () without the option, and for dense alone (the model's plain dense run).

    Raises:
        CorpusUsageError: an unknown output, a model that is not BGE-M3, or a .npy output of
            sparse or colbert rows; the message says what to do instead.
    """
    if args.outputs is None:
        return ()
    from ..engine.m3 import is_m3_model
    from ..models import resolve_model
    from .encoders import check_outputs

    try:
        outputs = check_outputs(args.outputs)
    except ValueError as exc:
        raise CorpusUsageError(f"--outputs: {exc}") from None
    model = args.model or "the default model"
    if not is_m3_model(resolve_model(args.model)):
        raise CorpusUsageError(
            f"--outputs is for BGE-M3 models (with colbert_linear.pt and sparse_linear.pt), and {model} is "
            "not one: leave --outputs out (its files say what it writes)"
        )
    if outputs == ("dense",):
        return ()
    check_kind(args.output, m3_kind(outputs))
    return outputs


def _interrupted_message(output: str | None) -> str:
    if output is None:
        return "interrupted"
    try:
        state = load_state(output)
    except CorpusError:
        state = None
    if state is None:  # the run removed its partial output: a rerun starts afresh, no --resume
        return f"interrupted before anything was committed to {output}; nothing was saved"
    return (
        f"interrupted: {state['rows']} rows are saved in {partial_path(output)}; "
        "rerun the same command with --resume to continue"
    )
