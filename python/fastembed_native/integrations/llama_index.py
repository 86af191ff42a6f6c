"""LlamaIndex: a ``BaseEmbedding`` for indexes and retrievers, and a reranking node postprocessor.

    from llama_index.core import Settings, VectorStoreIndex
    from fastembed_native.integrations.llama_index import FastembedNativeEmbedding, FastembedNativeRerank

    Settings.embed_model = FastembedNativeEmbedding(model_name="BAAI/bge-small-en-v1.5")
    index = VectorStoreIndex.from_documents(documents)
    retriever = index.as_retriever(similarity_top_k=20)
    nodes = FastembedNativeRerank(model_name="path/to/reranker", top_n=3).postprocess_nodes(
        retriever.retrieve("question"), query_str="question")

- :class:`FastembedNativeEmbedding` (``llama_index.core.base.embeddings.base.BaseEmbedding``): queries
  are embedded with the model's query prompt, texts (nodes) with its passage prompt, so the vectors
  are ``TextEmbedding.embed_query`` / ``embed_passage``'s. LlamaIndex cuts a list of texts into
  ``embed_batch_size`` chunks (default here 256, not LlamaIndex's 10: the engine sorts each call by
  length and batches by tokens, so bigger chunks pad less); each chunk is one engine call. The async
  forms run the same call in a worker thread (the C++ core releases the GIL).
- :class:`FastembedNativeRerank` (``BaseNodePostprocessor``, for ``node_postprocessors=[...]`` of a
  query engine): scores each node's content (``MetadataMode.EMBED``, as LlamaIndex's
  ``SentenceTransformerRerank``) against the query with a :class:`~fastembed_native.TextCrossEncoder`,
  sets ``node.score`` to that score and keeps the ``top_n`` best, best first.

Both are pydantic models, serialisable with LlamaIndex's ``to_dict`` / ``from_dict``; they take
``model_name=`` and TextEmbedding's / TextCrossEncoder's keywords (kept in ``options``), or ``model=``
an already loaded model. Needs ``pip install 'fastembed-native[llama-index]'`` (``llama-index-core``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.llama_index needs llama-index-core ({exc}); "
        "install it with: pip install 'fastembed-native[llama-index]'"
    ) from exc

from ..cross_encoder import TextCrossEncoder
from ..text_embedding import TextEmbedding
from ._shared import cross_encoder, embedding_model, model_label

__all__ = ["FastembedNativeEmbedding", "FastembedNativeRerank"]

#: Texts per engine call when LlamaIndex embeds a list (its own default, 10, pads and calls more).
DEFAULT_EMBED_BATCH_SIZE = 256


def _split(cls: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """kwargs -> (the pydantic fields of ``cls``, the model's options)."""
    fields = {k: v for k, v in kwargs.items() if k in cls.model_fields}  # type: ignore[attr-defined]
    return fields, {k: v for k, v in kwargs.items() if k not in fields}


class FastembedNativeEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from a :class:`~fastembed_native.TextEmbedding`.

    Args:
        model_name: a model directory, an id or a short name; None for the default model.
        model: an already loaded TextEmbedding instead (then no model_name or options).
        options: TextEmbedding's keywords as a dict (what ``to_dict`` stores); they may also be
            given as keywords of their own (``threads=2``).
        **kwargs: BaseEmbedding's fields (embed_batch_size, num_workers, callback_manager, ...) and
            TextEmbedding's keywords.
    """

    options: dict[str, Any] = Field(default_factory=dict, description="TextEmbedding's keywords.")
    _model: TextEmbedding = PrivateAttr()

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        model: TextEmbedding | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        fields, extra = _split(type(self), kwargs)
        options = {**(options or {}), **extra}
        loaded = embedding_model(model_name, options, model)
        fields.setdefault("embed_batch_size", DEFAULT_EMBED_BATCH_SIZE)
        super().__init__(model_name=model_label(model_name, model), options=options, **fields)
        self._model = loaded

    @classmethod
    def class_name(cls) -> str:
        return "FastembedNativeEmbedding"

    @property
    def model(self) -> TextEmbedding:
        return self._model

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._model.embed_query(query)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._model.embed_passage(text)[0].tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model.embed_passage(list(texts)).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class FastembedNativeRerank(BaseNodePostprocessor):
    """A LlamaIndex node postprocessor that reranks with a :class:`~fastembed_native.TextCrossEncoder`.

    Args:
        model_name: a reranker directory, id or short name.
        top_n: how many nodes to keep (the best).
        keep_retrieval_score: keep each node's retrieval score in ``metadata["retrieval_score"]`` (of
            a copy of the node: the input nodes are not changed).
        model: an already loaded TextCrossEncoder instead of model_name.
        options / **kwargs: TextCrossEncoder's keywords (activation, threads, batch_size, ...).
    """

    model_config = ConfigDict(protected_namespaces=())  # a model_name field, without pydantic's warning

    model_name: str = Field(description="The reranker (a directory, an id or a short name).")
    top_n: int = Field(default=2, gt=0, description="How many nodes to return, sorted by score.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retrieval score in metadata['retrieval_score']."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="TextCrossEncoder's keywords.")
    _model: TextCrossEncoder = PrivateAttr()

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        model: TextCrossEncoder | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        fields, extra = _split(type(self), kwargs)
        options = {**(options or {}), **extra}
        loaded = cross_encoder(model_name, options, model)
        super().__init__(model_name=model_label(model_name, loaded), options=options, **fields)
        self._model = loaded

    @classmethod
    def class_name(cls) -> str:
        return "FastembedNativeRerank"

    @property
    def model(self) -> TextCrossEncoder:
        return self._model

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("FastembedNativeRerank needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self._model.rank(query_bundle.query_str, texts, top_k=self.top_n)
            kept = []
            for hit in ranked:
                node = nodes[hit["corpus_id"]].node
                if self.keep_retrieval_score:  # on a copy: the input nodes (and their text) stay as they were
                    metadata = {**node.metadata, "retrieval_score": nodes[hit["corpus_id"]].score}
                    node = node.model_copy(update={"metadata": metadata})
                kept.append(NodeWithScore(node=node, score=hit["score"]))
            event.on_end(payload={EventPayload.NODES: kept})
        return kept
