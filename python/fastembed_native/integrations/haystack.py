"""Haystack (2.x component API, ``haystack-ai``): text and document embedders and a ranker.

    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from fastembed_native.integrations.haystack import (
        FastembedNativeDocumentEmbedder, FastembedNativeRanker, FastembedNativeTextEmbedder)

    store = InMemoryDocumentStore()
    store.write_documents(FastembedNativeDocumentEmbedder(model_name="...").run(documents)["documents"])
    query = Pipeline()
    query.add_component("embedder", FastembedNativeTextEmbedder(model_name="..."))
    query.add_component("retriever", InMemoryEmbeddingRetriever(store, top_k=20))
    query.add_component("ranker", FastembedNativeRanker(model_name="path/to/reranker", top_k=3))
    query.connect("embedder.embedding", "retriever.query_embedding")
    query.connect("retriever.documents", "ranker.documents")
    query.run({"embedder": {"text": "question"}, "ranker": {"query": "question"}})

Each is a ``@component`` with Haystack's contract: ``warm_up()`` loads the model (a pipeline calls it
before the first run; ``run`` does too when called alone), ``run`` / ``run_async`` take and return
Haystack's sockets, and ``to_dict`` / ``from_dict`` round-trip the init parameters, so a pipeline
saved with ``Pipeline.dumps`` loads again (``Pipeline.loads(..., allowed_modules=["fastembed_native.*"])``:
Haystack 3 imports only allow-listed modules when it loads a pipeline).

- :class:`FastembedNativeTextEmbedder`: ``run(text) -> {"embedding": list[float]}``, with the model's
  query prompt (it embeds the query of a search).
- :class:`FastembedNativeDocumentEmbedder`: ``run(documents) -> {"documents": [...]}``: copies of the
  documents with ``embedding`` set (the inputs are not changed), with the model's passage prompt; the
  text is ``meta_fields_to_embed`` values and the content joined by ``embedding_separator``, as
  Haystack's own document embedders build it.
- :class:`FastembedNativeRanker`: ``run(query, documents, top_k=None) -> {"documents": [...]}``: the
  ``top_k`` best by a :class:`~fastembed_native.TextCrossEncoder`'s score, best first, as copies
  with ``score`` set (optionally only those at or above ``score_threshold``).

All take ``model_name=`` and the TextEmbedding / TextCrossEncoder keywords (``threads``, ``batch_size``,
``cache_dir``, ``providers``, ...), which ``to_dict`` stores. ``prefix`` / ``suffix`` add text of your
own around each input, after the model's prompt is chosen (the prompt still comes first).
Needs ``pip install 'fastembed-native[haystack]'`` (``haystack-ai``).
"""

# No `from __future__ import annotations`: Haystack 2.x reads run()'s annotations as they are, and
# would see strings ("list[Document]") that do not match other components' sockets.
import asyncio
import os
from dataclasses import replace
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.haystack needs haystack-ai ({exc}); "
        "install it with: pip install 'fastembed-native[haystack]'"
    ) from exc

from ..cross_encoder import TextCrossEncoder
from ..text_embedding import TextEmbedding
from ._shared import cross_encoder, embedding_model

__all__ = ["FastembedNativeDocumentEmbedder", "FastembedNativeRanker", "FastembedNativeTextEmbedder"]


def _name(model_name: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(model_name) if model_name is not None else None


def _text_of(document: Document, meta_fields: list[str], separator: str) -> str:
    """The meta fields' values and the content, joined as Haystack's document embedders do."""
    meta = [str(document.meta[k]) for k in meta_fields if document.meta.get(k) is not None]
    return separator.join([*meta, document.content or ""])


@component
class FastembedNativeTextEmbedder:
    """Embeds one string (a query) with the model's query prompt.

    Args:
        model_name: a model directory, an id or a short name; None for the default model.
        prefix, suffix: text added around the input (after the model's own prompt).
        **options: TextEmbedding's keywords (threads, batch_size, cache_dir, providers, ...).
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        prefix: str = "",
        suffix: str = "",
        **options: Any,
    ) -> None:
        self.model_name = _name(model_name)
        self.prefix = prefix
        self.suffix = suffix
        self.options = options
        self._model: TextEmbedding | None = None

    def warm_up(self) -> None:
        """Load the model (once; components with the same model and options share it)."""
        if self._model is None:
            self._model = embedding_model(self.model_name, self.options)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self, model_name=self.model_name, prefix=self.prefix, suffix=self.suffix, **self.options
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FastembedNativeTextEmbedder":
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """``{"embedding": list[float]}`` for ``text``."""
        if not isinstance(text, str):
            raise TypeError(
                f"{type(self).__name__} embeds one string, not {type(text).__name__}; "
                "use FastembedNativeDocumentEmbedder for documents"
            )
        self.warm_up()
        assert self._model is not None
        return {"embedding": self._model.embed_query(self.prefix + text + self.suffix)[0].tolist()}

    @component.output_types(embedding=list[float])
    async def run_async(self, text: str) -> dict[str, Any]:
        """:meth:`run` in a worker thread (the C++ core releases the GIL)."""
        return await asyncio.to_thread(self.run, text)


@component
class FastembedNativeDocumentEmbedder:
    """Embeds documents (copies with ``embedding`` set) with the model's passage prompt.

    Args:
        model_name: a model directory, an id or a short name; None for the default model.
        meta_fields_to_embed: meta fields whose values are embedded before the content.
        embedding_separator: what joins them to the content.
        prefix, suffix: text added around each document's text (after the model's own prompt).
        **options: TextEmbedding's keywords (threads, batch_size, cache_dir, providers, ...).
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        prefix: str = "",
        suffix: str = "",
        **options: Any,
    ) -> None:
        self.model_name = _name(model_name)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.prefix = prefix
        self.suffix = suffix
        self.options = options
        self._model: TextEmbedding | None = None

    def warm_up(self) -> None:
        """Load the model (once; components with the same model and options share it)."""
        if self._model is None:
            self._model = embedding_model(self.model_name, self.options)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            model_name=self.model_name,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            prefix=self.prefix,
            suffix=self.suffix,
            **self.options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FastembedNativeDocumentEmbedder":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """``{"documents": [...]}``: the documents in order, each a copy with its embedding."""
        if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
            raise TypeError(
                f"{type(self).__name__} embeds a list of Documents; use FastembedNativeTextEmbedder for a string"
            )
        if not documents:
            return {"documents": []}
        self.warm_up()
        assert self._model is not None
        texts = [
            self.prefix + _text_of(d, self.meta_fields_to_embed, self.embedding_separator) + self.suffix
            for d in documents
        ]
        vectors = self._model.embed_passage(texts).tolist()
        return {"documents": [replace(d, embedding=v) for d, v in zip(documents, vectors, strict=True)]}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """:meth:`run` in a worker thread (the C++ core releases the GIL)."""
        return await asyncio.to_thread(self.run, documents)


@component
class FastembedNativeRanker:
    """Ranks documents against a query with a :class:`~fastembed_native.TextCrossEncoder`.

    Args:
        model_name: a reranker directory, id or short name.
        top_k: how many documents to return (the best), unless ``run`` says otherwise.
        score_threshold: drop documents scoring below it.
        meta_fields_to_embed: meta fields whose values are scored before the content.
        meta_data_separator: what joins them to the content.
        **options: TextCrossEncoder's keywords (activation, threads, batch_size, max_length, ...).
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str],
        *,
        top_k: int = 10,
        score_threshold: float | None = None,
        meta_fields_to_embed: list[str] | None = None,
        meta_data_separator: str = "\n",
        **options: Any,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        self.model_name = _name(model_name)
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.meta_data_separator = meta_data_separator
        self.options = options
        self._model: TextCrossEncoder | None = None

    def warm_up(self) -> None:
        """Load the model (once; components with the same model and options share it)."""
        if self._model is None:
            self._model = cross_encoder(self.model_name, self.options)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            model_name=self.model_name,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            meta_fields_to_embed=self.meta_fields_to_embed,
            meta_data_separator=self.meta_data_separator,
            **self.options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FastembedNativeRanker":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """``{"documents": [...]}``: up to ``top_k`` copies with ``score`` set, best first."""
        top_k = self.top_k if top_k is None else top_k
        if top_k < 1:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        if not documents:
            return {"documents": []}
        self.warm_up()
        assert self._model is not None
        texts = [_text_of(d, self.meta_fields_to_embed, self.meta_data_separator) for d in documents]
        ranked = self._model.rank(query, texts, top_k=top_k)
        kept = [replace(documents[h["corpus_id"]], score=h["score"]) for h in ranked]
        if self.score_threshold is not None:
            kept = [d for d in kept if d.score is not None and d.score >= self.score_threshold]
        return {"documents": kept}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, Any]:
        """:meth:`run` in a worker thread (the C++ core releases the GIL)."""
        return await asyncio.to_thread(self.run, query, documents, top_k)
