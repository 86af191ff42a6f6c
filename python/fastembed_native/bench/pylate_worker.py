"""The pylate contender of ``bench late``, run by pylate's own venv's Python (not this package's):

    PYTHON pylate_worker.py CHECKPOINT THREADS

loads ``pylate.models.ColBERT(CHECKPOINT)`` on the CPU with THREADS torch threads, then answers one JSON
request per line of stdin with one JSON line on stdout, timing its own work (so the transfer of texts
and arrays between the processes is not counted):

- ``{"op": "hello"}``: ``{"pylate": version}``;
- ``{"op": "encode", "texts": [...], "is_query": bool, "out": path}``: ``ColBERT.encode`` (batch 32),
  the arrays packed into ``path`` (npz: ``vectors``, ``offsets``), ``{"seconds": s}``;
- ``{"op": "time_queries", "texts": [...]}``: each text encoded alone as a query: ``{"seconds": [...]}``;
- ``{"op": "maxsim", "arrays": path, "repeats": n}``: ``pylate.scores.colbert_scores`` of ``query``
  against the documents of ``path`` zero-padded to one length (as ``pylate.rank.rerank`` pads them),
  n times; the scores added to ``path``; ``{"seconds": [...]}``;
- ``{"op": "peak_rss"}``: ``{"mb": this process's peak RSS}``; ``{"op": "quit"}``.

It imports only the standard library, numpy, torch and pylate.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    checkpoint, threads = sys.argv[1], int(sys.argv[2])
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # whatever the libraries print must not mix with the replies
    import numpy as np
    import pylate
    import torch
    from pylate import models, scores

    torch.set_num_threads(threads)
    model = models.ColBERT(checkpoint, device="cpu")

    def encode(texts: list[str], is_query: bool) -> list[np.ndarray]:
        return model.encode(texts, is_query=is_query, batch_size=32, show_progress_bar=False)

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "hello":
                reply: dict = {"pylate": pylate.__version__}
            elif op == "encode":
                start = time.perf_counter()
                arrays = encode(request["texts"], request["is_query"])
                reply = {"seconds": time.perf_counter() - start}
                offsets = np.cumsum([0] + [len(a) for a in arrays])
                vectors = np.concatenate(arrays) if arrays else np.zeros((0, 1), np.float32)
                np.savez(request["out"], vectors=vectors, offsets=offsets)
            elif op == "time_queries":
                spent = []
                for text in request["texts"]:
                    start = time.perf_counter()
                    encode([text], True)
                    spent.append(time.perf_counter() - start)
                reply = {"seconds": spent}
            elif op == "maxsim":
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
                np.savez(
                    request["arrays"], query=query, vectors=vectors, offsets=offsets, scores=result[0].numpy()
                )
                reply = {"seconds": spent}
            elif op == "peak_rss":
                status = Path("/proc/self/status").read_text().splitlines()
                reply = {"mb": next(int(s.split()[1]) / 1024 for s in status if s.startswith("VmHWM:"))}
            elif op == "quit":
                replies.write("{}\n")
                replies.flush()
                return 0
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # answered, so the parent names it instead of waiting forever
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
