"""LateInteractionTextEmbedding, the public ColBERT encoder: a model id, a directory or a short name
in, one float32 ``(tokens, dim)`` array of unit vectors per text out, and MaxSim scores (fastembed's
``LateInteractionTextEmbedding`` shape).

It resolves the model through the model store, as :class:`~fastembed_native.TextEmbedding` does, and
encodes on the engine's multi-vector head (:class:`~fastembed_native.engine.multivector.MultiVectorEmbedder`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from .engine.multivector import MultiVectorEmbedder
from .models import SUPPORTED_LATE_INTERACTION_MODELS, resolve_model_argument


class LateInteractionTextEmbedding(MultiVectorEmbedder):
    """A ColBERT model exported to ONNX (``colbert-ir/colbertv2.0``,
    ``answerdotai/answerai-colbert-small-v1``, any pylate checkpoint): ``embed`` gives documents'
    token vectors (skiplist and padding dropped), ``query_embed`` queries' ([MASK]-expanded to the
    query length), ``score`` MaxSim; equal to pylate 1.6.

    Args:
        model: a model directory, a model id, or None for ``model_name``.
        model_name: the same as ``model`` (fastembed's name).
        cache_dir: the model cache to look in (default ``$FASTEMBED_NATIVE_CACHE``).
        **options: the engine's options (providers, batch_size, threads, parallel_runs, onnx_file, ...).
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

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The multi-vector (ColBERT) models this package knows, with their facts, as dicts like fastembed's. Any other
        checkpoint of the same kind works too once exported."""
        return [asdict(info) for info in SUPPORTED_LATE_INTERACTION_MODELS]
