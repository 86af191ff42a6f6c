"""BGEM3, the public BGE-M3 encoder: dense, sparse and multi-vector output from one forward pass,
equal to FlagEmbedding's ``BGEM3FlagModel.encode`` (see fastembed_native.engine.m3).
"""

from __future__ import annotations

import os
from typing import Any

from .engine.m3 import M3Embedder, M3Output
from .models import resolve_model_argument

__all__ = ["BGEM3", "M3Output"]


class BGEM3(M3Embedder):
    """BGE-M3 exported to ONNX with its three heads (``fastembed-native export`` of ``BAAI/bge-m3``):
    ``embed(texts, dense=True, sparse=True, colbert=True)`` gives an :class:`M3Output`.

    Args:
        model: a model directory, a model id, or None for ``model_name``.
        model_name: the same as ``model``.
        cache_dir: the model cache to look in (default ``$FASTEMBED_NATIVE_CACHE``).
        **options: the engine's options (providers, max_length, batch_size, threads, parallel_runs, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        model_name: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(resolve_model_argument(model, model_name, cache_dir), **options)
