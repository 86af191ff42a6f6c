"""Measurements shared by the benchmarks: parity against a reference and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..models import cosine_rows


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
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    preamble = f"import json\npayload = json.load(open({handle.name!r}))\n"
    epilogue = "from fastembed_native.bench import measure as _m\nprint(_m.own_peak_rss_mb())\n"
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
    return float(result.stdout.strip().splitlines()[-1])


def own_peak_rss_mb() -> float:
    """This process's peak RSS. On Linux from VmHWM, which belongs to the address space made at
    exec; ru_maxrss would carry over the peak of the parent that forked us."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def find_onnx(model_dir: Path) -> Path:
    from ..engine import find_onnx as find

    return find(model_dir)
