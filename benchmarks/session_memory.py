"""How much memory the engine's sessions over a model take, with their weights shared or not.

An engine runs a model in two ONNX Runtime sessions (single batches on every thread, concurrent bulk
runs with fewer threads each; see the README's Design). This script measures, each in a fresh
process, the resident memory two such sessions add: over one file, or over two files that share a
data file (a model's fused and plain graphs), with ``share_weights`` on (the default) and off.

    python benchmarks/session_memory.py MODEL_DIR/onnx/model_fused.onnx MODEL_DIR/onnx/model.onnx
    python benchmarks/session_memory.py MODEL_DIR/onnx/model_int8.onnx

Prints one line per setting: MB after the first session, MB after both (above the process with the
runtime loaded and nothing else), and the tensors shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def _measure(files: list[str], share: bool) -> dict[str, float]:
    import numpy as np

    from fastembed_native import _core
    from fastembed_native.engine import runtime

    runtime.ensure_loaded()
    base = _rss_mb()
    first = _core.Session(files[0], intra_op_threads=2, share_weights=share)
    after_first = _rss_mb() - base
    second = _core.Session(files[-1], intra_op_threads=1, share_weights=share)
    after_both = _rss_mb() - base
    ids = np.array([[101, 7592, 2088, 102]], np.int64)
    for session in (first, second):  # both answer, so nothing is left to load lazily
        session.run(ids, np.ones_like(ids), np.zeros_like(ids), [session.output_name])
    return {
        "first_mb": after_first,
        "both_mb": after_both,
        "after_runs_mb": _rss_mb() - base,
        "shared_tensors": first.shared_tensors + second.shared_tensors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", help="one ONNX file (two sessions over it) or two")
    parser.add_argument("--child", choices=["share", "alone"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.files) > 2:
        parser.error("give one file or two")
    if args.child:
        print(json.dumps(_measure(args.files, args.child == "share")))
        return
    for mode in ("share", "alone"):
        out = subprocess.run(
            [sys.executable, __file__, *args.files, "--child", mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"share_weights={mode == 'share'}: first session +{got['first_mb']:.0f} MB, "
            f"both +{got['both_mb']:.0f} MB, after a run each +{got['after_runs_mb']:.0f} MB, "
            f"{got['shared_tensors']} tensors shared"
        )


if __name__ == "__main__":
    main()
