"""What the framework adapters share: the model they wrap, made once per configuration.

Frameworks make adapters more often than users do: Chroma rebuilds an embedding function from its
stored config (and again to check it is not a legacy one), LanceDB from a table's schema, Haystack
from a pipeline file. Each of those would load the ONNX model again; here every adapter asks for its
model by (model, options) and gets the one already loaded while any adapter still holds it (a weak
cache: the model is freed with the last adapter that uses it).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, TypeVar

from ..cross_encoder import TextCrossEncoder
from ..sparse_text_embedding import SparseTextEmbedding
from ..text_embedding import TextEmbedding

Model = TypeVar("Model", TextEmbedding, TextCrossEncoder, SparseTextEmbedding)

_LOADED: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def _key(kind: type, model_name: Any, options: Mapping[str, Any]) -> tuple[str, str]:
    source = os.fspath(model_name) if model_name is not None else None
    return kind.__name__, json.dumps([source, dict(options)], sort_keys=True, default=repr)


def _shared(kind: type[Model], model_name: Any, options: Mapping[str, Any]) -> Model:
    key = _key(kind, model_name, options)
    with _LOCK:  # one load per configuration, even when two threads ask at once
        model = _LOADED.get(key)
        if model is None:
            model = kind(model_name=model_name, **options)
            _LOADED[key] = model
        return model


def embedding_model(
    model_name: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
    model: TextEmbedding | None = None,
) -> TextEmbedding:
    """``model`` itself when given (no options then), else the shared TextEmbedding for
    ``model_name`` (None: the default model) with ``options`` (cache_dir and the engine's)."""
    if model is not None:
        if not isinstance(model, TextEmbedding):
            raise TypeError(f"model must be a fastembed_native.TextEmbedding, not {type(model).__name__}")
        if model_name is not None or options:
            raise TypeError("give a loaded model= or model_name= with its options, not both")
        return model
    return _shared(TextEmbedding, model_name, options)


def cross_encoder(
    model_name: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
    model: TextCrossEncoder | None = None,
) -> TextCrossEncoder:
    """``model`` itself when given, else the shared TextCrossEncoder for ``model_name`` (required:
    there is no default reranker) with ``options``."""
    if model is not None:
        if not isinstance(model, TextCrossEncoder):
            raise TypeError(f"model must be a fastembed_native.TextCrossEncoder, not {type(model).__name__}")
        if model_name is not None or options:
            raise TypeError("give a loaded model= or model_name= with its options, not both")
        return model
    if model_name is None:
        raise TypeError("a reranker needs model_name= (a reranker directory, id or short name) or model=")
    return _shared(TextCrossEncoder, model_name, options)


def sparse_model(
    model_name: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
    model: SparseTextEmbedding | None = None,
) -> SparseTextEmbedding:
    """``model`` itself when given, else the shared SparseTextEmbedding for ``model_name`` (required:
    there is no default sparse model) with ``options``."""
    if model is not None:
        if not isinstance(model, SparseTextEmbedding):
            raise TypeError(
                f"model must be a fastembed_native.SparseTextEmbedding, not {type(model).__name__}"
            )
        if model_name is not None or options:
            raise TypeError("give a loaded model= or model_name= with its options, not both")
        return model
    if model_name is None:
        raise TypeError("a sparse model needs model_name= (a SPLADE directory, id or short name) or model=")
    return _shared(SparseTextEmbedding, model_name, options)


def model_label(model_name: str | os.PathLike[str] | None, model: Any = None) -> str:
    """What a framework shows as the model's name: the given name, else the loaded model's folder."""
    if model_name is not None:
        return os.fspath(model_name)
    if model is not None:
        return str(getattr(model, "model_dir", None) or model.engine.model_dir)
    from ..models import DEFAULT_MODEL

    return DEFAULT_MODEL
