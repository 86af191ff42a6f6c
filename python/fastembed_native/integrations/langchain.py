"""LangChain: an ``Embeddings`` for vector stores and retrievers, and a reranking document compressor.

    from langchain_core.vectorstores import InMemoryVectorStore
    from fastembed_native.integrations.langchain import FastembedNativeEmbeddings, FastembedNativeRerank

    store = InMemoryVectorStore(FastembedNativeEmbeddings(model_name="BAAI/bge-small-en-v1.5"))
    store.add_texts(["...", "..."])
    docs = store.as_retriever(search_kwargs={"k": 20}).invoke("question")
    best = FastembedNativeRerank(model_name="path/to/reranker", top_n=3).compress_documents(docs, "question")

- :class:`FastembedNativeEmbeddings` (``langchain_core.embeddings.Embeddings``): ``embed_documents``
  embeds with the model's passage prompt and ``embed_query`` with its query prompt (e5's "passage: " /
  "query: ", BGE's instruction; none for MiniLM), so the vectors are ``TextEmbedding.embed_passage`` /
  ``embed_query``'s, as lists of floats. ``aembed_*`` run the same call in a worker thread (the C++
  core releases the GIL, so the event loop keeps running).
- :class:`FastembedNativeRerank` (``BaseDocumentCompressor``, so it plugs into
  ``ContextualCompressionRetriever``): scores each document against the query with a
  :class:`~fastembed_native.TextCrossEncoder`, keeps the ``top_n`` best, best first, and writes the
  score to ``metadata["relevance_score"]`` as LangChain's other rerankers (Cohere, FlashRank) do.

Both take ``model_name=`` (a model directory, an id or a short name) and the options of
:class:`~fastembed_native.TextEmbedding` / :class:`~fastembed_native.TextCrossEncoder` as keywords
(``cache_dir``, ``threads``, ``batch_size``, ``providers``, ...), or ``model=`` an already loaded one.
Needs ``pip install 'fastembed-native[langchain]'`` (``langchain-core``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.langchain needs langchain-core ({exc}); "
        "install it with: pip install 'fastembed-native[langchain]'"
    ) from exc

from ..cross_encoder import TextCrossEncoder
from ..text_embedding import TextEmbedding
from ._shared import cross_encoder, embedding_model, model_label

__all__ = ["FastembedNativeEmbeddings", "FastembedNativeRerank"]


class FastembedNativeEmbeddings(Embeddings):
    """LangChain embeddings from a :class:`~fastembed_native.TextEmbedding`.

    Args:
        model_name: a model directory, an id ("BAAI/bge-small-en-v1.5") or a short name; None for the
            default model (all-MiniLM-L6-v2).
        model: an already loaded TextEmbedding instead (then no model_name or options).
        **options: TextEmbedding's keywords (cache_dir, threads, batch_size, providers, max_length, ...).
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        model: TextEmbedding | None = None,
        **options: Any,
    ) -> None:
        self.model = embedding_model(model_name, options, model)
        self.model_name = model_label(model_name, model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, with the model's passage prompt."""
        return self.model.embed_passage(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The query's vector, with the model's query prompt."""
        return self.model.embed_query(text)[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r}, dim={self.model.dim})"


class FastembedNativeRerank(BaseDocumentCompressor):
    """A LangChain document compressor that reranks with a :class:`~fastembed_native.TextCrossEncoder`.

    Args:
        model_name: a reranker directory, id or short name.
        top_n: how many documents to keep (the best; all when fewer come in).
        model: an already loaded TextCrossEncoder instead of model_name.
        **options: TextCrossEncoder's keywords (cache_dir, activation, threads, batch_size, max_length, ...).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())  # a model_name field

    model_name: str = Field(description="The reranker (a directory, an id or a short name).")
    top_n: int = Field(default=3, gt=0, description="How many documents to return.")
    options: dict[str, Any] = Field(default_factory=dict, description="TextCrossEncoder's keywords.")
    _model: TextCrossEncoder = PrivateAttr()

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        top_n: int = 3,
        model: TextCrossEncoder | None = None,
        **options: Any,
    ) -> None:
        loaded = cross_encoder(model_name, options, model)
        super().__init__(model_name=model_label(model_name, loaded), top_n=top_n, options=options)
        self._model = loaded

    @property
    def model(self) -> TextCrossEncoder:
        return self._model

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_n`` documents by the reranker's score, best first (ties keep input order),
        each a copy with ``metadata["relevance_score"]`` set."""
        if not documents:
            return []
        ranked = self._model.rank(query, [d.page_content for d in documents], top_k=self.top_n)
        return [
            Document(
                page_content=documents[hit["corpus_id"]].page_content,
                metadata={**documents[hit["corpus_id"]].metadata, "relevance_score": hit["score"]},
                id=documents[hit["corpus_id"]].id,
            )
            for hit in ranked
        ]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
