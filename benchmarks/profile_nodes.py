"""Where a model's time goes, node type by node type, as ONNX Runtime's profiler sees it.

Runs ``--runs`` padded batches of ``--batch`` texts x ``--tokens`` tokens through one fastembed_native
session (the kernels it registers included, such as the int8 graphs' RowQuantize) and prints the
kernel time per node type, its share, and the node count per run.

    python benchmarks/profile_nodes.py MODEL_DIR/onnx/model_int8.onnx --batch 32 --tokens 40
    python benchmarks/profile_nodes.py MODEL_DIR/onnx/model_int8.onnx --batch 1 --tokens 12

The profiler adds a fixed cost to every node: compare node types within a run, and runs at the same
shape, not these times with a benchmark's.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("onnx_file")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()

    from fastembed_native import _core
    from fastembed_native.engine import runtime

    runtime.ensure_loaded()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (args.batch, args.tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP] in BERT's vocabulary; any ids do
    mask = np.ones_like(ids)
    with tempfile.TemporaryDirectory() as folder:
        prefix = str(Path(folder) / "profile")
        session = _core.Session(args.onnx_file, intra_op_threads=args.threads, profile_prefix=prefix)
        for _ in range(args.runs):
            session.run(ids, mask, np.zeros_like(ids), [session.output_name])
        del session  # ORT writes the profile when the session ends
        gc.collect()
        (written,) = Path(folder).glob("profile*.json")
        events = json.loads(written.read_text())
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"]
            count[event["args"]["op_name"]] += 1
    overall = sum(total.values())
    print(
        f"{args.onnx_file}: {args.batch} x {args.tokens} tokens, {args.threads} threads: "
        f"{overall / args.runs / 1000:.1f} ms of kernels per run, {sum(count.values()) / args.runs:.0f} nodes"
    )
    for op, micros in total.most_common(args.top):
        share = 100 * micros / overall
        print(f"  {op:28s} {micros / args.runs / 1000:8.2f} ms  {share:5.1f}%  x{count[op] / args.runs:.0f}")


if __name__ == "__main__":
    main()
