"""TextEmbedding, the public entry point: a model id, a directory or None in, embeddings out.

It resolves the model through the model store (the cache, the default model's first-use build)
and hands the directory to the engine's :class:`~fastembed_native.engine.Embedder`, adding what
only the registry knows (e.g. e5's "query: " / "passage: " prompts).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from .engine import Embedder
from .models import DEFAULT_MODEL, SUPPORTED_MODELS, model_info, resolve_model


class TextEmbedding(Embedder):
    """An embedding model, ready to embed texts.

    Args:
        model: a model directory (sentence-transformers layout, with ``onnx/model.onnx`` or
            ``model.onnx`` and ``tokenizer.json``), a model id from the cache, or None for the
            default model (sentence-transformers/all-MiniLM-L6-v2, built on first use).
        **options: the engine's options (providers, max_length, pooling, normalize, padding_side,
            onnx_file, fused, batch_size, max_batch_tokens, threads, parallel_runs,
            graph_optimization_level): see :class:`fastembed_native.engine.Embedder`.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, **options: Any) -> None:
        info = model_info(str(model) if model is not None else DEFAULT_MODEL)
        registry_prompts = {"query": info.query_prompt, "passage": info.passage_prompt} if info else {}
        super().__init__(resolve_model(model), prompts=registry_prompts, **options)

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The models this package knows (dimension, pooling, prompts, ...), as dicts like fastembed's.

        Any other model with a sentence-transformers layout works too, from its own config files.
        """
        return [asdict(info) for info in SUPPORTED_MODELS]
