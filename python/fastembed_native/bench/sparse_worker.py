"""One contender of ``bench sparse`` in a process of its own, so that the benchmark's parent holds only
the texts and the sparse outputs, never a contender's ONNX Runtime arena or torch's buffers (at SPLADE's
shape each keeps batch x tokens x 30,522 float logits alive, gigabytes, and six of them in one process
reached 19 GB).

The worker, run with this package's Python::

    python -m fastembed_native.bench.sparse_worker CONTENDER MODEL MODELS_DIR THREADS

builds ``sparse_contenders.FACTORIES[CONTENDER](built_model(MODEL, MODELS_DIR), THREADS)``, says
``{"contender": name, "pid": pid}`` (or why it could not), then answers one JSON request per line
(:mod:`.worker_protocol`), timing its own work so that the transfer is not counted:

- ``{"op": "warm_up", "texts": [...]}``: encodes them, nothing sent back: ``{}``;
- ``{"op": "encode", "texts": [...], "out": path}``: the sparse vectors packed into ``path`` (npz:
  ``indices``, ``values`` of all texts one after the other, ``offsets``): ``{"seconds": s}``;
- ``{"op": "time_queries", "texts": [...]}``: each text encoded alone: ``{"seconds": [...]}``;
- ``{"op": "engine_stats", "reset": bool}``: fastembed_native's engine statistics
  (``Embedder.stats``) and its logits budget: ``{"stats": {...}, "logits_budget_bytes": n}``;
- ``{"op": "peak_rss"}``: ``{"mb": the worker's peak RSS}``; ``{"op": "quit"}``.

:class:`SparseWorker` is the parent's side: a contender called as the in-process ones are (texts in,
``(indices, values)`` per text out), with ``last_seconds`` for :func:`.measure.interleaved`.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .head_models import HeadModel, built_model
from .sparse_contenders import FACTORIES, Sparse
from .worker_protocol import Worker, serve, time_each


def pack(vectors: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sparse vectors as three arrays: ``indices`` and ``values`` one text after the other, and the
    ``offsets`` where each text starts (and the last ends)."""
    offsets = np.cumsum([0] + [len(i) for i, _ in vectors])
    if not vectors:
        return {"indices": np.zeros(0, np.int32), "values": np.zeros(0, np.float32), "offsets": offsets}
    return {
        "indices": np.concatenate([np.asarray(i) for i, _ in vectors]),
        "values": np.concatenate([np.asarray(v) for _, v in vectors]),
        "offsets": offsets,
    }


def unpack(indices: np.ndarray, values: np.ndarray, offsets: np.ndarray) -> list[Sparse]:
    """:func:`pack`'s arrays back to one ``(indices, values)`` pair per text (views)."""
    return [(indices[a:b], values[a:b]) for a, b in itertools.pairwise(offsets)]


def setup() -> tuple[dict[str, Any], dict[str, Any]]:
    name, model_name, models_dir, threads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    if name not in FACTORIES:
        raise ValueError(f"unknown contender {name!r}; choose from {', '.join(FACTORIES)}")
    encode = FACTORIES[name](built_model(model_name, models_dir), threads)
    encoder = getattr(encode, "encoder", None)  # fastembed_native's, for its engine statistics

    def warm_up(request: dict[str, Any]) -> dict[str, Any]:
        encode(request["texts"])  # lazy loads, ORT's arena, torch's first call
        return {}

    def encode_op(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        vectors = encode(request["texts"])
        seconds = time.perf_counter() - start
        np.savez(request["out"], **pack(vectors))
        return {"seconds": seconds}

    def time_queries(request: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": time_each(encode, request["texts"])}

    def engine_stats(request: dict[str, Any]) -> dict[str, Any]:
        if encoder is None:
            raise ValueError(f"{name} has no engine statistics")
        stats = encoder.engine.stats(reset=bool(request.get("reset")))
        return {
            "stats": {key: value if isinstance(value, int) else float(value) for key, value in stats.items()},
            "logits_budget_bytes": int(encoder.logits_budget_bytes),
        }

    handlers = {
        "warm_up": warm_up,
        "encode": encode_op,
        "time_queries": time_queries,
        "engine_stats": engine_stats,
    }
    return {"contender": name, "pid": os.getpid()}, handlers


class SparseWorker:
    """The contender ``name`` on ``model`` in a worker process (see the module's docstring): called
    with texts, it returns their sparse vectors and sets ``last_seconds`` to the worker's own time.

    Raises:
        RuntimeError: the worker could not build the contender (a missing optional library: the
            message says which), or a request failed.
    """

    def __init__(self, name: str, model: HeadModel, models_dir: Path, threads: int) -> None:
        argv = [sys.executable, "-m", __name__, name, model.name, str(models_dir), str(threads)]
        self.name = name
        self.worker = Worker(argv, name)
        self.last_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.worker.pid

    def warm_up(self, texts: list[str]) -> None:
        self.worker.ask({"op": "warm_up", "texts": texts})

    def __call__(self, texts: list[str]) -> list[Sparse]:
        with tempfile.TemporaryDirectory(prefix="bench-sparse-") as folder:
            path = os.path.join(folder, "out.npz")
            reply = self.worker.ask({"op": "encode", "texts": texts, "out": path})
            with np.load(path) as data:
                vectors = unpack(data["indices"], data["values"], data["offsets"])
        self.last_seconds = reply["seconds"]
        return vectors

    def time_queries(self, texts: list[str]) -> list[float]:
        """The seconds of each text encoded alone, one per call, as a search query is encoded."""
        return self.worker.ask({"op": "time_queries", "texts": texts})["seconds"]

    def engine_stats(self, reset: bool = False) -> dict[str, Any]:
        """fastembed_native's engine statistics and logits budget (that contender only)."""
        return self.worker.ask({"op": "engine_stats", "reset": reset})

    def peak_rss_mb(self) -> float:
        return self.worker.peak_rss_mb()

    def close(self) -> None:
        self.worker.close()


if __name__ == "__main__":
    sys.exit(serve(setup))
