"""SparseTextEmbedding, the public SPLADE encoder: a model id, a directory or a short name in, one
sparse vector per text out (fastembed's ``SparseTextEmbedding`` shape).

It resolves the model through the model store, as :class:`~fastembed_native.TextEmbedding` does, and
encodes on the engine's sparse head (:class:`~fastembed_native.engine.sparse.SparseEmbedder`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from .engine.sparse import SparseEmbedder, SparseEmbedding
from .models import SUPPORTED_SPARSE_MODELS, resolve_model_argument
from .models.cache import quantized_file

__all__ = ["SparseEmbedding", "SparseTextEmbedding"]


class SparseTextEmbedding(SparseEmbedder):
    """A SPLADE model exported to ONNX (``naver/splade-v3``, ``prithivida/Splade_PP_en_v1``, ...):
    ``embed`` gives one :class:`SparseEmbedding` (int32 ``indices`` ascending, float32 ``values``)
    per text, equal to sentence-transformers' ``SparseEncoder.encode``.

    Args:
        model: a model directory, a model id, or None for ``model_name``.
        model_name: the same as ``model`` (fastembed's name).
        cache_dir: the model cache to look in (default ``$FASTEMBED_NATIVE_CACHE``).
        quantized: load the model's int8 file (``onnx/model_int8.onnx``, written by
            ``fastembed-native quantize``; its recipe and measured agreement with fp32 are in
            ``onnx/model_int8.json``, which ``inspect`` prints) instead of fp32.
        **options: ``max_active_dims``, ``logits_budget_bytes`` and the engine's options (providers,
            max_length, batch_size, threads, parallel_runs, onnx_file, lazy_load, ...).

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

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The sparse (SPLADE) models this package knows, with their facts, as dicts like fastembed's. Any other
        checkpoint of the same kind works too once exported."""
        return [asdict(info) for info in SUPPORTED_SPARSE_MODELS]
