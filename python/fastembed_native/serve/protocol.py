"""The HTTP wire schema in one place: OpenAI's embeddings contract, text-embeddings-inference's
(TEI) ``/embed``, ``/embed_sparse``, ``/tokenize`` and ``/rerank``, Cohere's ``/v1/rerank``, and our
``/embed_multi_vector``, as typed request models, and the response builders.

Inputs are typed ``Any`` here on purpose: the service checks them (one string, strings, token ids)
with messages that name the item at fault, the same for HTTP and gRPC.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .rerank import RerankRequest, RerankResult
from .service import EmbedRequest, EmbedResult
from .sparse import (
    MultiVectorRequest,
    MultiVectorResult,
    SparseRequest,
    SparseResult,
    multivector_item,
    tei_sparse_items,
)


class _Request(BaseModel):
    # Clients send fields we do not use (OpenAI's "user"); ignoring them is what OpenAI does.
    model_config = ConfigDict(extra="ignore")


class OpenAIEmbeddingRequest(_Request):
    """``POST /v1/embeddings``. ``truncate`` and ``prompt_name`` are extensions (send them with the
    openai client's ``extra_body``)."""

    input: Any = Field(
        description="a string, a list of strings, a list of token ids, or a list of lists of ids"
    )
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None
    truncate: StrictBool | None = None
    prompt_name: StrictStr | None = None

    def to_service(self) -> EmbedRequest:
        return EmbedRequest(
            inputs=self.input,
            model=self.model,
            truncate=self.truncate,
            dimensions=self.dimensions,
            prompt_name=self.prompt_name,
        )


class TEIEmbedRequest(_Request):
    """``POST /embed`` as text-embeddings-inference defines it (``model`` is our extension)."""

    inputs: Any
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "right"] = "Right"
    normalize: StrictBool = True
    prompt_name: StrictStr | None = None
    dimensions: StrictInt | None = None
    model: StrictStr | None = None

    def to_service(self) -> EmbedRequest:
        return EmbedRequest(
            inputs=self.inputs,
            model=self.model,
            truncate=self.truncate,
            normalize=self.normalize,
            dimensions=self.dimensions,
            prompt_name=self.prompt_name,
        )


class TEIEmbedSparseRequest(_Request):
    """``POST /embed_sparse`` as TEI defines it. Our extensions: ``model`` (unset, the server's first
    model with sparse output, SPLADE or BGE-M3) and ``input_type`` ("document", the default and what
    TEI computes, or "query": an inference-free model's static query side, see :class:`SparseRequest`)."""

    inputs: Any
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "right"] = "Right"
    prompt_name: StrictStr | None = None
    model: StrictStr | None = None
    input_type: Any = "document"

    def to_service(self) -> SparseRequest:
        return SparseRequest(self.inputs, self.model, self.truncate, self.prompt_name, self.input_type)


class MultiVectorEmbedRequest(_Request):
    """``POST /embed_multi_vector``: a ColBERT or BGE-M3 model's token vectors (unset ``model``: the
    server's first model with multi-vector output; BGE-M3 encodes both input types alike). ``input_type`` "document" (default: skiplist dropped, cut to the
    model's ``document_length``) or "query" ([MASK]-expanded to ``query_length`` rows);
    ``encoding_format`` "float" (nested arrays) or "base64" (little-endian float32, row after row)."""

    inputs: Any = Field(description="a string or a list of strings")
    model: StrictStr | None = None
    input_type: Any = "document"
    encoding_format: Literal["float", "base64"] = "float"

    def to_service(self) -> MultiVectorRequest:
        return MultiVectorRequest(self.inputs, self.model, self.input_type)


class TEITokenizeRequest(_Request):
    """``POST /tokenize`` as TEI defines it."""

    inputs: Any
    add_special_tokens: StrictBool = True
    prompt_name: StrictStr | None = None
    model: StrictStr | None = None


class TEIRerankRequest(_Request):
    """``POST /rerank`` as TEI defines it (``model`` and ``instruction`` are our extensions). Pairs
    over the model's max length are cut longest-first; with ``"truncate": false`` they are refused
    with 422, as TEI refuses them (unset: the server's ``--no-auto-truncate``, cut by default)."""

    query: Any
    texts: Any
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "right"] = "Right"
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    model: StrictStr | None = None
    instruction: Any = None

    def to_service(self) -> RerankRequest:
        return RerankRequest(
            self.query,
            self.texts,
            self.model,
            raw_scores=self.raw_scores,
            instruction=self.instruction,
            truncate=self.truncate,
        )


class CohereRerankRequest(_Request):
    """``POST /v1/rerank`` (and ``/v2/rerank``) as Cohere defines it; ``documents`` may be strings
    or ``{"text": ...}`` objects. Scores are the activation's (``relevance_score`` in 0..1 for a
    one-label reranker), as Cohere's and infinity's are."""

    query: Any
    documents: Any
    model: StrictStr | None = None
    top_n: Any = None
    return_documents: StrictBool = False
    instruction: Any = None

    def to_service(self) -> RerankRequest:
        return RerankRequest(
            self.query,
            self.documents,
            self.model,
            top_n=self.top_n,
            return_documents=self.return_documents,
            instruction=self.instruction,
        )


def openai_response(result: EmbedResult, encoding_format: str) -> dict[str, Any]:
    """OpenAI's embeddings response; float vectors stay numpy rows (orjson writes them directly)."""
    vectors = result.vectors
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        items: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        items = list(vectors)
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": item, "index": i} for i, item in enumerate(items)],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def tei_response(result: EmbedResult) -> np.ndarray:
    """TEI's ``/embed`` response: one list of floats per input (the array; orjson writes it)."""
    return result.vectors


def tei_sparse_response(result: SparseResult) -> bytes:
    """TEI's ``/embed_sparse`` answer, ``[[{"index", "value"}, ...], ...]``, written text by text:
    at most one text's items exist as Python objects at a time (a SPLADE vector may hold a value
    for every word of the vocabulary)."""
    parts = [orjson.dumps(tei_sparse_items(v), option=orjson.OPT_SERIALIZE_NUMPY) for v in result.vectors]
    return b"[" + b",".join(parts) + b"]"


def multivector_response(result: MultiVectorResult, encoding_format: str) -> dict[str, Any]:
    """``/embed_multi_vector``'s answer: ``{"object": "list", "model", "data": [{"object":
    "multi_vector", "index", "shape": [rows, dim], "embedding"}], "usage"}``; float rows stay numpy
    arrays (orjson writes them directly)."""
    return {
        "object": "list",
        "model": result.model,
        "data": [multivector_item(v, i, encoding_format) for i, v in enumerate(result.vectors)],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def models_response(models: dict[str, Sequence[str]], created: int) -> dict[str, Any]:
    """``GET /v1/models``: each served model by name, with what it offers (``outputs``, our
    extension: ``["embedding"]``, ``["sparse"]``, ...; a BGE-M3 model's three)."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "fastembed-native",
                "outputs": list(outputs),
            }
            for name, outputs in models.items()
        ],
    }


def tei_rerank_response(result: RerankResult, return_text: bool) -> list[dict[str, Any]]:
    """TEI's ``/rerank`` answer: a bare array ``[{"index", "score", "text"?}]``, best first."""
    out = []
    for i in result.order:
        item: dict[str, Any] = {"index": int(i), "score": float(result.scores[i])}
        if return_text:
            item["text"] = result.documents[i]
        out.append(item)
    return out


def cohere_rerank_response(result: RerankResult, return_documents: bool) -> dict[str, Any]:
    """Cohere's ``/v1/rerank`` answer: ``{"results": [{"index", "relevance_score", "document"?}],
    "model", "usage"}``, best first (the v2 shape, which the v1 clients also read)."""
    results = []
    for i in result.order:
        item: dict[str, Any] = {"index": int(i), "relevance_score": float(result.scores[i])}
        if return_documents:
            item["document"] = {"text": result.documents[i]}
        results.append(item)
    return {
        "id": f"rerank-{id(result):x}",
        "results": results,
        "model": result.model,
        "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": result.tokens}},
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }
