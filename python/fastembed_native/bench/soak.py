"""``fastembed-native bench serve --soak N``: N requests of random lengths and batch sizes to this
server alone, its RSS recorded along the way (the memory-flatness check)."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from .corpus import gather_corpus
from .load import run_load
from .servers import make_peers


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """N requests of random lengths (1-40 words, one text in twenty 40-300) and batch sizes (30
    requests in 38 of one text, the rest 2-64) to this server, RSS sampled every ``N/50`` requests after a
    warm-up of 200 requests. Every shape ORT sees differs (batch x length), the case where per-shape
    state (memory patterns, arena growth) would show as growth."""
    import uvloop

    from ..models import resolve_model

    model_dir = resolve_model(args.model)
    peer = make_peers(argparse.Namespace(**{**vars(args), "contenders": "fastembed_native"}), model_dir)[0]
    words = " ".join(gather_corpus(200)).split()
    rng = random.Random(0)

    def text() -> str:
        return " ".join(
            rng.choices(words, k=rng.randint(1, 40) if rng.random() < 0.95 else rng.randint(40, 300))
        )

    def request() -> list[str]:
        size = rng.choice([1] * 30 + [2, 3, 5, 8, 13, 21, 34, 64])
        return [text() for _ in range(size)]

    samples = []
    peer.start(args.ready_timeout)
    try:
        warm = [request() for _ in range(200)]
        uvloop.run(run_load(peer, warm, 32, 600))
        base = peer.rss_mb()
        samples.append({"requests": 0, **base})
        step = max(1, args.soak // 50)
        for done in range(step, args.soak + 1, step):
            uvloop.run(run_load(peer, [request() for _ in range(step)], 32, 3600))
            samples.append({"requests": done, **peer.rss_mb()})
            print(f"soak: {done} requests, RSS {samples[-1]['rss_mb']:.0f} MB", file=sys.stderr)
    finally:
        peer.stop()
    rss = [s["rss_mb"] for s in samples]
    return {"requests": args.soak, "samples": samples, "rss_after_warmup_mb": rss[0], "rss_max_mb": max(rss),
            "growth_mb": max(rss) - rss[0]}  # fmt: skip


def soak_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(
        [s["requests"] for s in results["samples"]], [s["rss_mb"] for s in results["samples"]], marker="."
    )
    ax.set_xlabel("requests after warm-up")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"fastembed-native serve: RSS over {results['requests']} random requests")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
