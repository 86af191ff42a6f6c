"""``fastembed-native bench serve --soak N``: N requests of random lengths and batch sizes to this
server alone, its RSS recorded along the way (the memory-flatness check). :func:`soak_run` is the
loop any soak uses (``--soak N --rerank``: the rerankers', in :mod:`.serve_rerank`)."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .corpus import gather_corpus
from .load import Call, embedding_call, run_calls
from .servers import Peer, make_peers


def soak_run(
    peer: Peer,
    make_call: Callable[[], Call],
    requests: int,
    *,
    clients: int = 32,
    warmup: int = 200,
    samples: int = 50,
    limit_s: float | None = None,
    label: str = "soak",
    ready_timeout: float = 300,
) -> dict[str, Any]:
    """``warmup`` calls of ``make_call()``, then ``requests`` more in ``samples`` steps, ``clients``
    at a time, sampling the server's RSS after the warm-up and after each step (with the requests
    done and the seconds since the warm-up ended). Stops early, after a whole step, once ``limit_s``
    seconds have passed since the warm-up. ``peer`` is started here and stopped at the end.

    Returns the samples and their summary: RSS after the warm-up, its maximum and growth, the
    medians of the first and last quarter of the samples (what "flat" is judged on), every answer's
    HTTP status, and ``errors`` (answers other than a call's ``expect``).
    """
    import uvloop

    statuses: Counter[int] = Counter()
    errors = 0
    points: list[dict[str, float]] = []
    peer.start(ready_timeout)
    try:
        warm = uvloop.run(run_calls(peer.url, [make_call() for _ in range(warmup)], clients, 3600))
        statuses.update(warm["statuses"])
        errors += warm["errors"]
        start = time.perf_counter()
        points.append({"requests": 0, "seconds": 0.0, **peer.rss_mb()})
        step = max(1, requests // samples)
        done = 0
        while done < requests and (limit_s is None or time.perf_counter() - start < limit_s):
            calls = [make_call() for _ in range(min(step, requests - done))]
            outcome = uvloop.run(run_calls(peer.url, calls, clients, 3600))
            statuses.update(outcome["statuses"])
            errors += outcome["errors"]
            done += outcome["requests"]
            points.append({"requests": done, "seconds": time.perf_counter() - start, **peer.rss_mb()})
            print(f"{label}: {done} requests, RSS {points[-1]['rss_mb']:.0f} MB", file=sys.stderr)
    finally:
        peer.stop()
    return {"requests": done, "warmup_requests": warmup, "clients": clients, "samples": points,
            **rss_summary(points), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors": errors}  # fmt: skip


def rss_summary(points: list[dict[str, float]]) -> dict[str, float]:
    """RSS after the warm-up (the first sample), its maximum and growth, and the medians of the first
    and last quarter of the samples (MB)."""
    rss = [p["rss_mb"] for p in points]
    quarter = max(1, len(rss) // 4)
    return {
        "rss_after_warmup_mb": rss[0],
        "rss_max_mb": max(rss),
        "growth_mb": max(rss) - rss[0],
        "rss_first_quarter_median_mb": statistics.median(rss[:quarter]),
        "rss_last_quarter_median_mb": statistics.median(rss[-quarter:]),
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """N requests of random lengths (1-40 words, one text in twenty 40-300) and batch sizes (30
    requests in 38 of one text, the rest 2-64) to this server, RSS sampled every ``N/50`` requests after a
    warm-up of 200 requests. Every shape ORT sees differs (batch x length), the case where per-shape
    state (memory patterns, arena growth) would show as growth."""
    from ..models import resolve_model

    model_dir = resolve_model(args.model)
    peer = make_peers(argparse.Namespace(**{**vars(args), "contenders": "fastembed_native"}), model_dir)[0]
    words = " ".join(gather_corpus(200)).split()
    rng = random.Random(0)

    def text() -> str:
        return " ".join(
            rng.choices(words, k=rng.randint(1, 40) if rng.random() < 0.95 else rng.randint(40, 300))
        )

    def request() -> Call:
        size = rng.choice([1] * 30 + [2, 3, 5, 8, 13, 21, 34, 64])
        return embedding_call(peer, [text() for _ in range(size)])

    clients = args.soak_clients or 32
    return soak_run(
        peer,
        request,
        args.soak,
        clients=clients,
        warmup=args.soak_warmup,
        limit_s=args.soak_seconds,
        ready_timeout=args.ready_timeout,
    )


def soak_chart(results: dict[str, Any], path: Path, what: str = "random requests") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(
        [s["requests"] for s in results["samples"]], [s["rss_mb"] for s in results["samples"]], marker="."
    )
    ax.set_xlabel("requests after warm-up")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"fastembed-native serve: RSS over {results['requests']} {what}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
