"""The benchmarks' reports: the in-process benchmark's markdown table and bar chart, and the pieces every
report uses (the machine, a markdown table, the json + markdown files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PARITY_MIN_COSINE = 0.9999  # below this against the reference, a contender's vectors are flagged


def markdown(results: dict[str, Any], batch_sizes: list[int]) -> str:
    ours = results["contenders"].get("fastembed_native")
    header = [
        "contender",
        *[f"texts/s @{b}" for b in batch_sizes],
        "fastembed_native speed-up @32",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "peak RSS MB",
        "min cosine",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results["contenders"].items():
        speeds = [f"{r['throughput'][str(b)]['texts_per_s']:.0f}" for b in batch_sizes]
        ratio = ""
        if ours and "32" in r["throughput"]:
            ratio = f"{ours['throughput']['32']['texts_per_s'] / r['throughput']['32']['texts_per_s']:.2f}x"
        lat = r["latency_ms"]
        rss = r.get("peak_rss_mb")
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    *speeds,
                    ratio,
                    f"{lat['p50']:.2f}",
                    f"{lat['p95']:.2f}",
                    f"{lat['p99']:.2f}",
                    f"{rss:.0f}" if rss is not None else "-",
                    f"{r['min_cosine_vs_reference']:.6f}"
                    + (" (deviates)" if r["min_cosine_vs_reference"] < PARITY_MIN_COSINE else ""),
                ]
            )
            + " |"
        )
    breakdown = results.get("fastembed_native_breakdown")
    text = "\n".join(lines)
    if breakdown:
        text += (
            f"\n\nfastembed_native at batch 32 ({breakdown['parallel_runs']} concurrent runs): "
            f"{breakdown['ort_run_share'] * 100:.1f}% of the runs' wall time inside ORT Run, "
            f"pooling {breakdown['pool_seconds'] * 1000:.1f} ms, padding efficiency {breakdown['padding_efficiency']:.3f}."
        )
    text += (
        f"\n\nCorpus: {results['corpus_texts']} texts / {results['corpus_tokens']} tokens; threads: {results['threads']}; "
        f"reference for cosine: {results['reference']}; machine: {results['machine']['platform']}, "
        f"{results['machine']['cpus']} CPUs."
    )
    return text + "\n"


def chart(results: dict[str, Any], batch_sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["contenders"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, name in enumerate(names):
        speeds = [results["contenders"][name]["throughput"][str(b)]["texts_per_s"] for b in batch_sizes]
        ax.bar(np.arange(len(batch_sizes)) + i * width, speeds, width, label=name)
    ax.set_xticks(
        np.arange(len(batch_sizes)) + width * (len(names) - 1) / 2, [f"batch {b}" for b in batch_sizes]
    )
    ax.set_ylabel("texts / s (higher is better)")
    ax.set_title(
        f"all-MiniLM-L6-v2, {results['corpus_texts']} mixed-length texts, {results['threads']} threads"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    """What a report says about the machine it ran on."""
    import os
    import platform

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def write(out: Path, stem: str, results: dict[str, Any], text: str) -> None:
    """``<stem>.json`` (the results) and ``<stem>.md`` (the report) into ``out``; the report printed."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(text)
    print(text)


def ratio(a: float, b: float) -> str:
    """``a / b`` as a speed-up ("1.23x"); "-" when ``b`` is 0."""
    return f"{a / b:.2f}x" if b else "-"
