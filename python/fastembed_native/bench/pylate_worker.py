"""The pylate contender of ``bench late``, run by pylate's own venv's Python (not this package's):

    PYTHON pylate_worker.py CHECKPOINT THREADS

loads ``pylate.models.ColBERT(CHECKPOINT)`` on the CPU with THREADS torch threads, says
``{"pylate": version}``, then answers one JSON request per line of stdin with one JSON line on stdout
(:mod:`.worker_protocol`), timing its own work (so the transfer of texts and arrays between the
processes is not counted):

- ``{"op": "encode", "texts": [...], "is_query": bool, "out": path}``: ``ColBERT.encode`` (batch 32),
  the arrays packed into ``path`` (npz: ``vectors``, ``offsets``), ``{"seconds": s}``;
- ``{"op": "time_queries", "texts": [...]}``: each text encoded alone as a query: ``{"seconds": [...]}``;
- ``{"op": "maxsim", "arrays": path, "repeats": n}``: ``pylate.scores.colbert_scores`` of ``query``
  against the documents of ``path`` zero-padded to one length (as ``pylate.rank.rerank`` pads them),
  n times; the scores added to ``path``; ``{"seconds": [...]}``;
- ``{"op": "peak_rss"}``: ``{"mb": this process's peak RSS}``; ``{"op": "quit"}``.

It imports only the standard library, numpy, torch, pylate and :mod:`.worker_protocol` (the file
beside it: this package is not installed in pylate's venv).
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

try:
    from .worker_protocol import serve, time_each
except ImportError:  # run as a script: the file beside this one is on sys.path
    from worker_protocol import serve, time_each  # type: ignore[no-redef]


def setup() -> tuple[dict[str, Any], dict[str, Any]]:
    checkpoint, threads = sys.argv[1], int(sys.argv[2])
    import numpy as np
    import pylate
    import torch
    from pylate import models, scores

    torch.set_num_threads(threads)
    model = models.ColBERT(checkpoint, device="cpu")

    def encode(texts: list[str], is_query: bool) -> list[np.ndarray]:
        return model.encode(texts, is_query=is_query, batch_size=32, show_progress_bar=False)

    def encode_op(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        arrays = encode(request["texts"], request["is_query"])
        reply = {"seconds": time.perf_counter() - start}
        offsets = np.cumsum([0] + [len(a) for a in arrays])
        vectors = np.concatenate(arrays) if arrays else np.zeros((0, 1), np.float32)
        np.savez(request["out"], vectors=vectors, offsets=offsets)
        return reply

    def time_queries(request: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": time_each(lambda texts: encode(texts, True), request["texts"])}

    def maxsim(request: dict[str, Any]) -> dict[str, Any]:
        with np.load(request["arrays"]) as data:
            query, vectors, offsets = data["query"], data["vectors"], data["offsets"]
        documents = torch.nn.utils.rnn.pad_sequence(
            [torch.from_numpy(vectors[a:b]) for a, b in itertools.pairwise(offsets)], batch_first=True
        )
        queries = torch.from_numpy(query)[None]
        spent = []
        for _ in range(request["repeats"]):
            start = time.perf_counter()
            result = scores.colbert_scores(queries, documents)
            spent.append(time.perf_counter() - start)
        np.savez(request["arrays"], query=query, vectors=vectors, offsets=offsets, scores=result[0].numpy())
        return {"seconds": spent}

    handlers = {"encode": encode_op, "time_queries": time_queries, "maxsim": maxsim}
    return {"pylate": pylate.__version__}, handlers


if __name__ == "__main__":
    sys.exit(serve(setup))
