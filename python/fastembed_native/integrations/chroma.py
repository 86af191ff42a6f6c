"""Chroma: an ``EmbeddingFunction`` that collections store by name and rebuild from their config.

    import chromadb
    from fastembed_native.integrations.chroma import FastembedNativeEmbeddingFunction

    client = chromadb.PersistentClient("chroma/")
    docs = client.get_or_create_collection(
        "docs", embedding_function=FastembedNativeEmbeddingFunction(model_name="BAAI/bge-small-en-v1.5"))
    docs.add(ids=["a", "b"], documents=["...", "..."])
    docs.query(query_texts=["question"], n_results=5)

:class:`FastembedNativeEmbeddingFunction` follows Chroma 1.x's embedding-function contract:
``__call__`` embeds documents with the model's passage prompt and ``embed_query`` (what
``collection.query(query_texts=...)`` calls) with its query prompt, so the vectors are
``TextEmbedding.embed_passage`` / ``embed_query``'s. It is registered under the name
``fastembed_native`` with ``get_config`` / ``build_from_config``, so a collection keeps it: once this
module is imported, ``client.get_collection("docs")`` embeds with the same model and options again,
without passing the function. Its default space is cosine (the vectors of models that normalise
are unit length; Chroma's own default would be L2).

It takes ``model_name=`` and TextEmbedding's keywords (``threads``, ``batch_size``, ``cache_dir``,
``providers``, ...); they must be JSON values, since Chroma stores them.

:class:`FastembedNativeSparseEmbeddingFunction` (where the installed chromadb has Chroma's
``SparseEmbeddingFunction`` protocol: 1.5, not 1.0) does the same for a SPLADE
:class:`~fastembed_native.SparseTextEmbedding`: ``__call__`` gives each document's
``SparseVector`` (``embed_passage``), ``embed_query`` each query's (``embed_query``: the query prompt,
or the static-weight lookup of an inference-free model), registered as ``fastembed_native_sparse`` so a
collection schema that stores it builds it again. A schema names it in a ``SparseVectorIndexConfig``;
Chroma's own sparse index and ``collection.search`` run on its distributed server and Chroma Cloud
(local ``EphemeralClient`` / ``PersistentClient`` refuse a sparse index: "Sparse vector indexing is
not enabled in local"). Needs ``pip install 'fastembed-native[chroma]'``.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.chroma needs chromadb ({exc}); "
        "install it with: pip install 'fastembed-native[chroma]'"
    ) from exc

try:  # Chroma's sparse protocol (chromadb 1.5 has it; 1.0 does not)
    from chromadb.api.types import SparseEmbeddingFunction, SparseVector, SparseVectors
    from chromadb.utils.embedding_functions import register_sparse_embedding_function
except ImportError:  # pragma: no cover - only on an older chromadb
    SparseEmbeddingFunction = None  # type: ignore[assignment,misc]

from ..sparse_text_embedding import SparseTextEmbedding
from ..text_embedding import TextEmbedding
from ._shared import embedding_model, sparse_model

__all__ = ["NAME", "SPARSE_NAME", "FastembedNativeEmbeddingFunction"]

#: The name Chroma stores with a collection, and finds this class by.
NAME = "fastembed_native"
#: The name a collection schema stores the sparse function under.
SPARSE_NAME = "fastembed_native_sparse"


@register_embedding_function
class FastembedNativeEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embeddings from a :class:`~fastembed_native.TextEmbedding`.

    Args:
        model_name: a model directory, an id or a short name; None for the default model.
        **options: TextEmbedding's keywords (JSON values: Chroma stores them with the collection).
    """

    def __init__(self, model_name: str | os.PathLike[str] | None = None, **options: Any) -> None:
        self.model_name = os.fspath(model_name) if model_name is not None else None
        self.options = options
        self.model: TextEmbedding = embedding_model(self.model_name, options)

    def __call__(self, input: Documents) -> Embeddings:
        """Documents' vectors, with the model's passage prompt."""
        return list(self.model.embed_passage(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        """Queries' vectors, with the model's query prompt."""
        return list(self.model.embed_query(list(input)))

    @staticmethod
    def name() -> str:
        return NAME

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, **self.options}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> FastembedNativeEmbeddingFunction:
        return FastembedNativeEmbeddingFunction(**config)

    def default_space(self) -> Space:
        return "cosine" if self.model.normalize else "l2"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"] if self.model.normalize else ["cosine", "l2"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """A collection's vectors come from one model: changing it would mix two vector spaces."""
        if "model_name" in new_config and new_config["model_name"] != old_config.get("model_name"):
            raise ValueError(
                "a collection's model cannot change (its stored vectors come from the old one); "
                "make a new collection and add the documents again"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r}, options={self.options!r})"


if SparseEmbeddingFunction is not None:
    __all__ += ["FastembedNativeSparseEmbeddingFunction"]

    @register_sparse_embedding_function
    class FastembedNativeSparseEmbeddingFunction(SparseEmbeddingFunction[Documents]):
        """Chroma sparse vectors from a SPLADE :class:`~fastembed_native.SparseTextEmbedding`.

        Args:
            model_name: a SPLADE model directory, id or short name (there is no default sparse model).
            **options: SparseTextEmbedding's keywords (``max_active_dims``, ``threads``, ``cache_dir``,
                ...; JSON values: Chroma stores them with the collection's schema).
        """

        def __init__(self, model_name: str | os.PathLike[str], **options: Any) -> None:
            self.model_name = os.fspath(model_name)
            self.options = options
            self.model: SparseTextEmbedding = sparse_model(self.model_name, options)

        def __call__(self, input: Documents) -> SparseVectors:
            """Documents' sparse vectors (``embed_passage``: the document prompt, if the model has one)."""
            return _chroma_vectors(self.model.embed_passage(list(input)))

        def embed_query(self, input: Documents) -> SparseVectors:
            """Queries' sparse vectors (``embed_query``: the query prompt, or an inference-free model's
            static-weight lookup, which runs no model)."""
            return _chroma_vectors(self.model.embed_query(list(input)))

        @staticmethod
        def name() -> str:
            return SPARSE_NAME

        def get_config(self) -> dict[str, Any]:
            return {"model_name": self.model_name, **self.options}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> FastembedNativeSparseEmbeddingFunction:
            return FastembedNativeSparseEmbeddingFunction(**config)

        def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
            """An index's sparse vectors come from one model: changing it would mix two vocabularies."""
            if "model_name" in new_config and new_config["model_name"] != old_config.get("model_name"):
                raise ValueError(
                    "a sparse index's model cannot change (its stored vectors come from the old one); "
                    "make a new collection and add the documents again"
                )

        def __repr__(self) -> str:
            return f"{type(self).__name__}(model_name={self.model_name!r}, options={self.options!r})"

    def _chroma_vectors(encoded: list[Any]) -> SparseVectors:
        return [SparseVector(indices=e.indices.tolist(), values=e.values.tolist()) for e in encoded]
