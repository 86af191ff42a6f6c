"""TextEmbedding, the public entry point: a model id, a directory or None in, embeddings out.

It resolves the model through the model store (the cache, the default model's first-use build)
and hands the directory to the engine's :class:`~fastembed_native.engine.Embedder`, adding what
only the registry knows (e.g. e5's "query: " / "passage: " prompts).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from .engine import Embedder, check_positive
from .engine.stream import STREAM_WINDOW, Progress, embed_stream
from .models import DEFAULT_MODEL, SUPPORTED_MODELS, model_info, resolve_model


class TextEmbedding(Embedder):
    """An embedding model, ready to embed texts.

    Args:
        model: a model directory (sentence-transformers layout, with ``onnx/model.onnx`` or
            ``model.onnx`` and ``tokenizer.json``), a model id from the cache, or None for the
            default model (sentence-transformers/all-MiniLM-L6-v2, built on first use).
        model_name: the same as ``model``, under the name fastembed users know
            (``TextEmbedding(model_name="BAAI/bge-small-en-v1.5")``); give one of the two, not both.
        **options: the engine's options (providers, max_length, pooling, normalize, padding_side,
            onnx_file, fused, batch_size, max_batch_tokens, threads, parallel_runs,
            graph_optimization_level): see :class:`fastembed_native.engine.Embedder`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        model_name: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        if model is not None and model_name is not None:
            raise TypeError(
                f"give the model as model= or model_name=, not both (got {str(model)!r} and {str(model_name)!r})"
            )
        model = model if model is not None else model_name
        info = model_info(str(model) if model is not None else DEFAULT_MODEL)
        registry_prompts = {"query": info.query_prompt, "passage": info.passage_prompt} if info else {}
        super().__init__(resolve_model(model), prompts=registry_prompts, **options)

    def embed_iter(
        self,
        texts: Iterable[str],
        chunk: int = STREAM_WINDOW,
        batch_size: int | None = None,
        *,
        prompt: str = "",
        dimensions: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[np.ndarray]:
        """Embed an iterable of any length (a generator, a file's lines) without holding it all.

        Texts are read ``chunk`` at a time; each chunk is embedded exactly as :meth:`embed` would
        embed it (same length-sorted batches, same vectors) and yielded before the next is read,
        so memory holds one chunk of texts and vectors, never the whole input.

        Args:
            texts: strings, consumed lazily.
            chunk: texts per yielded array (default 16,384: four of embed()'s sort windows).
            batch_size: texts per ONNX Runtime call; default ``self.batch_size``.
            prompt: text prepended to every input (e.g. ``self.prompts["query"]``).
            dimensions: keep the first ``dimensions`` values (Matryoshka), as in :meth:`embed`.
            progress: called with a count of texts each time a few more batches are done.

        Yields:
            float32 arrays of shape ``(n, dimensions or dim)`` with ``n <= chunk``, in input order;
            concatenated, they equal ``embed(list(texts), ...)``.

        Raises:
            TypeError: an item is not a string (the message gives its index in the whole input).
            ValueError: ``chunk``/``batch_size`` not a positive int, or a text not encodable.
        """
        check_positive(chunk, "chunk")
        return embed_stream(
            self,
            texts,
            window=chunk,
            batch_size=batch_size,
            prompt=prompt,
            dimensions=dimensions,
            progress=progress,
        )

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The models this package knows (dimension, pooling, prompts, ...), as dicts like fastembed's.

        Any other model with a sentence-transformers layout works too, from its own config files.
        """
        return [asdict(info) for info in SUPPORTED_MODELS]
