"""``fastembed-native bench ray``: when does Ray Data pay off against one in-process call?

For each corpus size, the same texts are embedded end to end both ways, interleaved, medians kept:

- in-process: load the model (``TextEmbedding(model, threads=...)``) and one ``embed`` call;
- Ray: ``embed_dataset`` on an Arrow Dataset of (id, text) on a running local cluster, results
  collected in the driver (actor start-up and model loads included: every pipeline pays them).

Starting the cluster itself (``ray.init``) is timed once and reported apart. Each side is fitted as
``seconds = fixed + rows / rate``; the break-even is the size from which Ray is faster, with the
cluster already running and with its start-up counted, or "never" when Ray's rate is no better on
this machine (on one small machine the actors share the same cores the in-process call uses, and
``reserve_cpus`` keeps one of them for Ray's own tasks). The vectors of both sides are compared.

The cluster runs on loopback in its own temp dir (see fastembed_native.integrations.ray). Writes
``ray.json`` and ``ray.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import gather_corpus


def texts_of_size(corpus: list[str], size: int) -> list[str]:
    """``size`` texts: the corpus repeated (numbered, so repeats are distinct strings) as needed."""
    if size <= len(corpus):
        return corpus[:size]
    return [f"{i} {text}" for i, text in enumerate(islice(cycle(corpus), size))]


def fit_line(sizes: list[int], seconds: list[float]) -> tuple[float, float] | None:
    """Least squares ``seconds = fixed + per_row * size``: (fixed, per_row), or None with fewer than
    two distinct sizes (one point cannot tell a fixed cost from a rate) or when the time does not
    grow with the size (sizes too close together for the noise)."""
    if len(set(sizes)) < 2:
        return None
    per_row, fixed = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    return (float(fixed), float(per_row)) if per_row > 0 else None


def break_even(
    in_process: tuple[float, float] | None, ray_side: tuple[float, float] | None, extra: float = 0.0
) -> float | None:
    """Rows from which Ray (fixed + ``extra`` start-up) is faster; None when its per-row cost is no
    lower (or there is no fit)."""
    if in_process is None or ray_side is None:
        return None
    (fixed_in, row_in), (fixed_ray, row_ray) = in_process, ray_side
    if row_ray >= row_in:
        return None
    return max(0.0, (fixed_ray + extra - fixed_in) / (row_in - row_ray))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both sides at every size; returns the results (also what ``main`` writes)."""
    # Before Ray is imported: the single-machine mode keeps every socket on loopback, and nothing is
    # reported home (see fastembed_native.integrations.ray). setdefault: the caller's values win.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import pyarrow as pa
    import ray

    from ..integrations.ray import embed_dataset, plan_actors
    from ..models import resolve_model
    from ..text_embedding import TextEmbedding

    model_dir = resolve_model(args.model)
    corpus = gather_corpus(max(args.sizes))
    cpus = args.cpus or os.cpu_count() or 1
    started_here = not ray.is_initialized()
    startup = None
    if started_here:
        start = time.perf_counter()
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            _temp_dir=tempfile.mkdtemp(prefix="ray-"),
            log_to_driver=False,
        )
        startup = time.perf_counter() - start
    cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    actors, cpus_per_actor = plan_actors(cluster_cpus, args.actors, args.cpus_per_actor, args.reserve_cpus)
    print(
        f"cluster: {cluster_cpus:g} CPUs (start-up {startup or 0:.1f} s); {actors} actors x "
        f"{cpus_per_actor:g} CPUs; in-process threads={args.threads}",
        file=sys.stderr,
    )

    def in_process(texts: list[str]) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        vectors = TextEmbedding(model_dir, threads=args.threads).embed(texts, args.batch_size)
        return time.perf_counter() - start, vectors

    def on_ray(texts: list[str]) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        table = pa.table({"id": np.arange(len(texts)), "text": texts})
        step = args.rows_per_batch
        # One block per batch of rows, so every actor gets work (one big block would go to one).
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(texts), step)])
        out = embed_dataset(
            ds,
            model_dir,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            reserve_cpus=args.reserve_cpus,
            rows_per_batch=step,
            batch_size=args.batch_size,
            keep_text=False,
        )
        result = pa.concat_tables(ray.get(out.to_arrow_refs()))
        seconds = time.perf_counter() - start
        ids = result.column("id").to_numpy()
        flat = result.column("embedding").combine_chunks().flatten().to_numpy()
        vectors = np.empty((len(texts), result.schema.field("embedding").type.list_size), np.float32)
        vectors[ids] = flat.reshape(len(ids), -1)
        return seconds, vectors

    sizes: dict[str, Any] = {}
    try:
        # Untimed warm-up: the first pipeline also starts Ray's worker processes and imports.
        in_process(corpus[:64])
        on_ray(corpus[:64])
        for size in args.sizes:
            texts = texts_of_size(corpus, size)
            times: dict[str, list[float]] = {"in_process": [], "ray": []}
            max_diff = 0.0
            for _ in range(args.repeats):
                t_in, v_in = in_process(texts)
                t_ray, v_ray = on_ray(texts)
                times["in_process"].append(t_in)
                times["ray"].append(t_ray)
                max_diff = max(max_diff, float(np.max(np.abs(v_in - v_ray))))
            row = {name: statistics.median(samples) for name, samples in times.items()}
            row["max_abs_diff"] = max_diff
            sizes[str(size)] = row
            print(
                f"{size} texts: in-process {row['in_process']:.2f} s ({size / row['in_process']:.0f}/s), "
                f"ray {row['ray']:.2f} s ({size / row['ray']:.0f}/s), max |diff| {max_diff:.2e}",
                file=sys.stderr,
            )
    finally:
        if started_here:
            ray.shutdown()

    counts = [int(s) for s in sizes]
    fit_in = fit_line(counts, [sizes[str(s)]["in_process"] for s in counts])
    fit_ray = fit_line(counts, [sizes[str(s)]["ray"] for s in counts])
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
        },
        "model": str(model_dir),
        "cluster_cpus": cluster_cpus,
        "cluster_startup_seconds": startup,
        "actors": actors,
        "cpus_per_actor": cpus_per_actor,
        "reserve_cpus": args.reserve_cpus,
        "in_process_threads": args.threads,
        "rows_per_batch": args.rows_per_batch,
        "repeats": args.repeats,
        "sizes": sizes,
        "fit": {name: _fit_dict(fit) for name, fit in (("in_process", fit_in), ("ray", fit_ray))},
        "break_even_rows": break_even(fit_in, fit_ray),
        "break_even_rows_with_startup": break_even(fit_in, fit_ray, startup or 0.0),
    }


def _fit_dict(fit: tuple[float, float] | None) -> dict[str, float] | None:
    return None if fit is None else {"fixed_seconds": fit[0], "rows_per_second": 1 / fit[1]}


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table plus the fitted rates and the break-even, in words."""
    lines = [
        f"{results['actors']} Ray actors x {results['cpus_per_actor']:g} CPUs on a {results['cluster_cpus']:g}-CPU "
        f"local cluster (reserve {results['reserve_cpus']:g}) vs in-process on "
        f"{results['in_process_threads']} threads; Ray {results['machine']['ray']}, "
        f"{results['machine']['cpus']} CPUs, medians of {results['repeats']}.",
        "",
        "| texts | in-process s | texts/s | Ray s | texts/s | Ray / in-process | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, row in results["sizes"].items():
        n = int(size)
        lines.append(
            f"| {n} | {row['in_process']:.2f} | {n / row['in_process']:.0f} | {row['ray']:.2f} | "
            f"{n / row['ray']:.0f} | {row['ray'] / row['in_process']:.2f}x | {row['max_abs_diff']:.1e} |"
        )
    fit = results["fit"]
    startup = results["cluster_startup_seconds"]

    def said(rows: float | None) -> str:
        return (
            "never on this machine (Ray's rate is no better)"
            if rows is None
            else f"from about {rows:,.0f} texts"
        )

    def fitted(name: str) -> str:
        line = fit[name]
        return f"{name} {line['fixed_seconds']:.2f} s + n / {line['rows_per_second']:.0f}/s"

    lines.append("")
    if startup is not None:
        lines.append(f"Cluster start-up (ray.init): {startup:.1f} s.")
    if fit["in_process"] is None or fit["ray"] is None:
        lines.append(
            "No break-even: it needs at least two sizes whose times grow with the size "
            "(give more, further apart sizes, or more repeats)."
        )
    else:
        lines += [
            f"Fitted: {fitted('in_process')}; {fitted('ray')}.",
            f"Ray is faster {said(results['break_even_rows'])} with the cluster running"
            + (
                f", {said(results['break_even_rows_with_startup'])} counting its start-up."
                if startup is not None
                else "."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastembed-native bench ray",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model directory or id (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 5000, 20000],
        help="corpus sizes, comma-separated (default: 1000,5000,20000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (default %(default)s)")
    parser.add_argument("--cpus", type=int, help="CPUs of the local cluster (default: all)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="in-process threads (default: all)"
    )
    parser.add_argument("--actors", type=int, help="Ray actors (default: see plan_actors)")
    parser.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (default: see plan_actors)")
    parser.add_argument("--reserve-cpus", type=float, default=1.0, help="CPUs left to Ray's other tasks")
    parser.add_argument("--rows-per-batch", type=int, default=4096, help="rows per actor call")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per ONNX Runtime run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if min(args.sizes) <= 0 or args.repeats <= 0:
        parser.error("--sizes and --repeats must be positive")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "ray.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
