"""TextCrossEncoder, the public reranker: a model id, a directory or a short name in, scores out.

It resolves the model through the model store, as :class:`~fastembed_native.TextEmbedding` does,
and scores on the engine's score head (:class:`~fastembed_native.engine.scores.Scorer`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .engine.embedder import check_texts
from .engine.scores import Scorer
from .models import SUPPORTED_RERANKERS, resolve_model_argument
from .models.cache import quantized_file


class TextCrossEncoder(Scorer):
    """A reranker exported to ONNX, scoring (query, document) pairs: a cross-encoder
    (``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``BAAI/bge-reranker-base``, ...) or an LLM reranker
    (``Qwen/Qwen3-Reranker-0.6B`` style: P("yes") at the last token of its prompt; see
    fastembed_native.models.llm_reranker).

    Scores equal sentence-transformers' ``CrossEncoder.predict`` on the same model: its activation
    as the model's files say (Sigmoid for one label by default). ``raw_scores=True`` gives the
    logits, which is what fastembed's ``TextCrossEncoder.rerank`` returns.

    Args:
        model: a model directory, a model id, or None for ``model_name``.
        model_name: the same as ``model`` (fastembed's name).
        cache_dir: the model cache to look in (default ``$FASTEMBED_NATIVE_CACHE``).
        quantized: load the model's int8 file (``onnx/model_int8.onnx``, written by
            ``fastembed-native quantize``; its recipe and measured ranking agreement with fp32 are in
            ``onnx/model_int8.json``, which ``inspect`` prints) instead of fp32.
        **options: ``activation`` and the engine's options (providers, max_length, batch_size,
            max_batch_tokens, threads, parallel_runs, onnx_file, lazy_load, ...).

    Raises:
        FileNotFoundError: ``quantized`` and the model has no int8 file (the message says how to
            make it); otherwise as the model resolution and the engine raise.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        model_name: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        quantized: bool = False,
        **options: Any,
    ) -> None:
        model_dir = resolve_model_argument(model, model_name, cache_dir)
        if quantized:
            options["onnx_file"] = quantized_file(model_dir, options.get("onnx_file"))
        super().__init__(model_dir, **options)

    def rerank(
        self,
        query: str,
        documents: str | Sequence[str],
        batch_size: int | None = None,
        *,
        raw_scores: bool = False,
        instruction: str | None = None,
    ) -> np.ndarray:
        """One score per document for ``query``: float32 ``(len(documents),)``, in input order
        (the first label's score for a classifier: see :meth:`predict` for all of them).
        ``instruction``: an LLM reranker's task instruction instead of its default."""
        if not isinstance(query, str):
            raise TypeError(f"query must be str, not {type(query).__name__}")
        docs = check_texts(documents)
        pairs = [(query, d) for d in docs]
        return self.predict(pairs, batch_size, raw_scores=raw_scores, instruction=instruction)[:, 0]

    def rerank_pairs(
        self,
        pairs: Iterable[Sequence[str]],
        batch_size: int | None = None,
        *,
        raw_scores: bool = False,
        instruction: str | None = None,
    ) -> np.ndarray:
        """One score per (query, document) pair: float32 ``(len(pairs),)``, in input order."""
        return self.predict(pairs, batch_size, raw_scores=raw_scores, instruction=instruction)[:, 0]

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        return_documents: bool = False,
        batch_size: int | None = None,
        raw_scores: bool = False,
        instruction: str | None = None,
    ) -> list[dict[str, Any]]:
        """Documents sorted by score, best first: ``[{"corpus_id", "score"(, "text")}]`` (the shape
        of sentence-transformers' ``CrossEncoder.rank``), the ``top_k`` best (default all). Ties
        keep input order."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        docs = check_texts(documents)
        scores = self.rerank(query, docs, batch_size, raw_scores=raw_scores, instruction=instruction)
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranked = []
        for i in order:
            hit: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                hit["text"] = docs[i]
            ranked.append(hit)
        return ranked

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The rerankers this package knows (architecture, max length, kind), as dicts like fastembed's.
        Any other sequence-classification or yes/no LLM reranker checkpoint works too once exported."""
        return [asdict(info) for info in SUPPORTED_RERANKERS]
