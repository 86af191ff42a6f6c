"""BGE-M3 on the batching core: one model, one queue, three outputs of one forward pass.

A BGE-M3 model (``is_m3_model``) answers the embedding routes (its dense rows), the sparse routes (its
lexical weights, indexed by token id as FlagEmbedding keys them) and the multi-vector routes (its
ColBERT vectors). Every request to it, whatever its route, is one job on the model's one queue, and
says what it :attr:`~.batcher.Job.asks` for (``"embedding"``, ``"sparse"``, ``"multi-vector"``): jobs
asking for different outputs share engine calls, and a call computes only the outputs its jobs ask
for, from one forward pass per batch (:func:`m3_call`, on :meth:`M3Embedder.embed_encodings`). The
call's rows are an :class:`M3Rows`; each job's ``out`` is an :class:`OutputSink` that takes its own
output from them.

All three routes tokenize as the model does (``<s>`` text ``</s>``, cut to its max length), so they
take strings or token ids alike; BGE-M3 encodes queries and documents the same way (FlagEmbedding's
``encode_queries`` and ``encode_corpus`` differ only in their default max length), so a multi-vector
request's ``input_type`` is checked but changes nothing. Dense rows leave the call unnormalised and
are finished per request (``normalize``, ``dimensions``) like any embedding model's; their default is
normalised, as BGE-M3's dense output is.

What an answer may cost is charged before any work (serve/limits.py), as for the other heads: a
sparse vector holds at most one value per token (the model's max length, not its vocabulary), a
multi-vector answer at most every token after ``<s>`` in rows of ``colbert_dim`` floats.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

import numpy as np

from ..engine.m3 import M3Embedder, M3Output
from .batcher import EngineCall, TokenSequence
from .sparse import MULTI_VECTOR_BYTES_PER_FLOAT, SPARSE_BYTES_PER_VALUE

#: What a BGE-M3 model offers, as the routes name their outputs.
M3_OUTPUTS = ("embedding", "sparse", "multi-vector")


class M3Rows:
    """One engine call's rows: the outputs it computed (None for those no job asked for)."""

    __slots__ = ("colbert", "dense", "sparse")

    def __init__(
        self, dense: np.ndarray | None, sparse: list[Any] | None, colbert: list[np.ndarray] | None
    ) -> None:
        self.dense, self.sparse, self.colbert = dense, sparse, colbert

    def __len__(self) -> int:
        return len(next(o for o in (self.dense, self.sparse, self.colbert) if o is not None))

    def __getitem__(self, rows: slice) -> M3Rows:
        return M3Rows(
            None if self.dense is None else self.dense[rows],
            None if self.sparse is None else self.sparse[rows],
            None if self.colbert is None else self.colbert[rows],
        )

    def output(self, name: str) -> Any:
        """The rows of one output (``"embedding"``, ``"sparse"`` or ``"multi-vector"``)."""
        return {"embedding": self.dense, "sparse": self.sparse, "multi-vector": self.colbert}[name]


class OutputSink:
    """A job's ``out`` on a BGE-M3 queue: ``sink[a:b] = rows`` (an :class:`M3Rows`) stores the rows
    of the one output the job asked for in ``target[a:b]`` (a float32 array for dense rows, a list
    for the others)."""

    __slots__ = ("name", "target")

    def __init__(self, target: np.ndarray | MutableSequence[Any], name: str) -> None:
        self.target, self.name = target, name

    def __setitem__(self, rows: slice, values: M3Rows) -> None:
        self.target[rows] = values.output(self.name)

    def __len__(self) -> int:
        return len(self.target)


def m3_call(head: M3Embedder) -> EngineCall:
    """One engine call of a BGE-M3 model: the outputs its jobs ask for (``asks``), one forward pass
    per batch, as :class:`M3Rows` (dense rows unnormalised [CLS] states). The group is always 0:
    nothing a request asks changes the forward pass."""

    def run(encodings: Sequence[TokenSequence], group: Any, asks: frozenset[str]) -> M3Rows:
        n = len(encodings)
        out = M3Output(
            np.empty((n, head.engine.dim), dtype=np.float32) if "embedding" in asks else None,
            [None] * n if "sparse" in asks else None,
            [None] * n if "multi-vector" in asks else None,
        )
        head.embed_encodings(encodings, out, head.engine.batch_size, normalize=False)
        return M3Rows(out.dense, out.sparse, out.colbert)

    return run


def m3_sparse_answer(head: M3Embedder, inputs: int) -> tuple[int, str]:
    """What a BGE-M3 sparse answer of ``inputs`` vectors is charged, and what each is at most:
    one value per token of the model's max length (fewer than the vocabulary's words)."""
    values = min(head.vocab_size, head.max_length)
    return inputs * values * SPARSE_BYTES_PER_VALUE, f"up to {values} values, one per token"


def m3_multivector_answer(head: M3Embedder, inputs: int, encoding: str) -> tuple[int, str]:
    """What a BGE-M3 multi-vector answer is charged, and what each is at most: every token after
    ``<s>`` of the model's max length, in rows of ``colbert_dim`` floats."""
    rows = max(1, head.max_length - 1)
    per_float = MULTI_VECTOR_BYTES_PER_FLOAT.get(encoding, 16)
    return inputs * rows * head.colbert_dim * per_float, f"up to {rows} rows of {head.colbert_dim} floats"
