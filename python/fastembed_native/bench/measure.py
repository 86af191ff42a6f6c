"""Measurements shared by the benchmarks: parity against a reference, peak memory, interleaved timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..models import cosine_rows
from .worker_protocol import own_peak_rss_mb as own_peak_rss_mb  # re-exported: children print it


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosine_rows(a, b).min())


def peak_rss_mb(
    contender: str, model_dir: Path, threads: int, corpus: list[str], batch_size: int
) -> float | None:
    """Peak RSS of a fresh process that loads one contender and embeds the corpus once.

    The corpus reaches the child as a JSON file: gathering it imports much of the standard
    library, which would dominate the child's peak."""
    code = (
        "from pathlib import Path; from fastembed_native.bench import contenders as b, measure as m\n"
        f"d = Path({str(model_dir)!r})\n"
        f"e = b.FACTORIES[{contender!r}](d, m.find_onnx(d), {threads}, 256); e(payload, {batch_size})\n"
    )
    return child_peak_rss_mb(contender, code, corpus, timeout=900)


def child_peak_rss_mb(label: str, code: str, payload: object, timeout: float) -> float | None:
    """Peak RSS of a fresh interpreter running ``code`` with ``payload`` (anything JSON) bound to the
    name ``payload``; None, with the child's error on stderr, when it fails. The payload travels as a
    JSON file, so building it (a corpus gathered from the standard library) does not count."""
    marks = child_rss_mb(label, code, payload, timeout)
    return None if marks is None else marks["peak"]


def child_rss_mb(label: str, code: str, payload: object, timeout: float) -> dict[str, float] | None:
    """As :func:`child_peak_rss_mb`, with the RSS at every :func:`print_rss` ``(name)`` that ``code``
    calls beside ``"peak"``."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    preamble = f"import json\npayload = json.load(open({handle.name!r}))\n"
    epilogue = "from fastembed_native.bench import measure as _m\nprint('rss peak', _m.own_peak_rss_mb())\n"
    try:
        result = subprocess.run(
            [sys.executable, "-c", preamble + code + epilogue],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        print(f"peak RSS of {label} not measured: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    marks = (line.split() for line in result.stdout.splitlines() if line.startswith("rss "))
    return {name: float(mb) for _, name, mb in marks}


def print_rss(name: str) -> None:
    """Print this process's RSS now (VmRSS) as a mark :func:`child_rss_mb` reads."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.is_file() else []
    rss = next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), None)
    if rss is not None:
        print("rss", name, rss, flush=True)


def find_onnx(model_dir: Path) -> Path:
    from ..engine import find_onnx as find

    return find(model_dir)


def interleaved(
    contenders: dict[str, Callable[[Any], Any]],
    items: Sequence[Any],
    settle: float,
    progress: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Every contender called on every item, item by item, the contenders' order rotating from one
    item to the next, each turn after ``settle`` seconds of pause (the previous contender's threads go
    idle): the seconds of each call and what it returned, per contender.

    A contender that runs in another process times itself: when it has ``last_seconds`` (set by its
    call), that is its time, not the call's wall time (which includes the transfer)."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, list[Any]] = {name: [] for name in names}
    for index, item in enumerate(items):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            call = contenders[name]
            time.sleep(settle)
            start = time.perf_counter()
            result = call(item)
            elapsed = time.perf_counter() - start
            seconds[name].append(getattr(call, "last_seconds", None) or elapsed)
            results[name].append(result)
        if progress is not None:
            progress(index + 1, seconds)
    return seconds, results


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of ``seconds``, in milliseconds."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}
