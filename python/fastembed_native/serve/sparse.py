"""Sparse (SPLADE) and multi-vector (ColBERT) requests, whatever the transport.

TEI's ``POST /embed_sparse`` and ``tei.v1.Embed/EmbedSparse`` (and our batched ``EmbedSparse``) become
a :class:`SparseRequest`; ``POST /embed_multi_vector`` and our ``EmbedMultiVector`` a
:class:`MultiVectorRequest`. Both go through the same machinery as embeddings: checked here with
messages that name the item at fault, tokenized off the event loop, queued as one job on the model's
batching queue (texts of many requests share engine calls), each head's engine call being
:func:`sparse_call` / :func:`multivector_call`.

What an answer may cost is charged before any work (serve/limits.py): a sparse vector can hold a
value for every word of the vocabulary (SPLADE's max pooling keeps each word any token activates), a
multi-vector answer is up to the side's length (ColBERT's ``query_length`` / ``document_length``)
rows of ``dim`` floats per text.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.multivector import MultiVectorEmbedder
from ..engine.sparse import SparseEmbedder, SparseEmbedding
from ..engine.tokens import FramedTokens, clip_text
from .batcher import EngineCall, TokenSequence
from .errors import BadRequest, PayloadTooLarge, quote_input
from .tokenize import MAX_TOKENIZE_CHARS

#: Bytes a sparse answer is charged per value it may hold: ``{"index":30521,"value":0.12345678},``.
SPARSE_BYTES_PER_VALUE = 40
#: Bytes a multi-vector answer is charged per float: a JSON float and its comma (base64 takes less).
MULTI_VECTOR_BYTES_PER_FLOAT = {"float": 16, "base64": 6}
#: ``input_type`` values of a sparse or multi-vector request, and whether each is a query.
INPUT_TYPES = {"document": False, "query": True}


@dataclass(frozen=True)
class SparseRequest:
    """One sparse embedding request. ``None`` options take the server's or model's default.
    ``input_type`` "query" encodes the inputs as ``SparseTextEmbedding.query_embed`` does: an
    inference-free model's static query weights (no model run), else the model with its "query"
    prompt unless ``prompt_name`` names another; BGE-M3 encodes both sides alike."""

    inputs: Any  # strings, or lists of token ids
    model: str | None = None
    truncate: bool | None = None
    prompt_name: str | None = None
    input_type: Any = "document"


@dataclass
class SparseResult:
    model: str
    vectors: list[SparseEmbedding]  # input order; indices ascending
    prompt_tokens: int
    timings: Any = field(default=None)  # service.Timings


@dataclass(frozen=True)
class MultiVectorRequest:
    """One multi-vector request: documents (skiplist dropped, cut to ``document_length``) or queries
    ([MASK]-expanded to ``query_length``), as the model's ColBERT rules say."""

    inputs: Any  # strings
    model: str | None = None
    input_type: Any = "document"


@dataclass
class MultiVectorResult:
    model: str
    vectors: list[np.ndarray]  # float32 (tokens_i, dim) each, unit rows, input order
    dim: int
    prompt_tokens: int
    timings: Any = field(default=None)  # service.Timings


# -- engine calls (on the queue's engine thread) ---------------------------------------------------------
def sparse_call(head: SparseEmbedder) -> EngineCall:
    """One engine call of a SPLADE model: a :class:`SparseEmbedding` per encoding, the logits of each
    batch pooled as they appear (never a batch's whole logits tensor held past its batch)."""

    def run(encodings: Sequence[TokenSequence], group: Any, asks: frozenset[str]) -> list[SparseEmbedding]:
        out: list[SparseEmbedding | None] = [None] * len(encodings)
        head.embed_encodings(
            encodings, out, head.engine.batch_size, max_active_dims=head.max_active_dims or 0
        )
        return out  # type: ignore[return-value]  # every row is filled

    return run


def multivector_call(head: MultiVectorEmbedder) -> EngineCall:
    """One engine call of a ColBERT model: a float32 ``(tokens, dim)`` array per encoding; the group
    is whether the call's encodings are queries."""

    def run(encodings: Sequence[TokenSequence], is_query: Any, asks: frozenset[str]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(encodings)
        head.embed_encodings(encodings, out, head.engine.batch_size, is_query=bool(is_query))  # type: ignore[arg-type]
        return out  # type: ignore[return-value]  # every row is filled

    return run


# -- checks ----------------------------------------------------------------------------------------------
def sparse_answer_bytes(head: SparseEmbedder, inputs: int) -> int:
    """What a sparse answer of ``inputs`` vectors is charged: each as wide as the vocabulary (or the
    model's ``max_active_dims``), since SPLADE may keep a value for any word."""
    values = min(head.vocab_size, head.max_active_dims or head.vocab_size)
    return inputs * values * SPARSE_BYTES_PER_VALUE


def check_input_type(value: Any) -> bool:
    """``input_type`` as is_query.

    Raises:
        BadRequest: not "query" or "document".
    """
    if not isinstance(value, str) or value not in INPUT_TYPES:
        raise BadRequest(
            f"input_type must be 'query' or 'document', got {quote_input(value)}", param="input_type"
        )
    return INPUT_TYPES[value]


def multivector_answer_bytes(head: MultiVectorEmbedder, inputs: int, is_query: bool, encoding: str) -> int:
    """What a multi-vector answer is charged: each input the side's length in rows of ``dim`` floats."""
    rows = head.colbert.query_length if is_query else head.colbert.document_length
    return inputs * rows * head.dim * MULTI_VECTOR_BYTES_PER_FLOAT.get(encoding, 16)


def encode_multivector(head: MultiVectorEmbedder, texts: list[str], is_query: bool) -> list[FramedTokens]:
    """The work of tokenizing a multi-vector request, on a tokenizing executor thread: each text
    clipped (only what its side's length keeps is tokenized) and framed as ColBERT frames it.

    Raises:
        PayloadTooLarge: a text cannot be clipped within ``MAX_TOKENIZE_CHARS`` characters.
        BadRequest: a text is not valid UTF-8 (names the input).
    """
    length = head.colbert.query_length if is_query else head.colbert.document_length
    probe = head.engine.tokenizer._probe
    clipped = []
    for i, text in enumerate(texts):
        text = clip_text(probe, text, length, MAX_TOKENIZE_CHARS)  # a short text stays as it is
        if len(text) > MAX_TOKENIZE_CHARS:
            raise PayloadTooLarge(
                f"input[{i}] has {len(text)} characters and cannot be cut to the model's {length} tokens "
                f"within its first {MAX_TOKENIZE_CHARS}; shorten it",
                param="input",
                code="input_too_long",
            )
        clipped.append(text)
    try:
        return head.encode(clipped, is_query=is_query)
    except ValueError as exc:  # a lone surrogate: the engine names texts[i]
        raise BadRequest(str(exc).replace("texts[", "input["), param="input") from None


# -- answers ---------------------------------------------------------------------------------------------
def tei_sparse_items(vector: SparseEmbedding) -> list[dict[str, Any]]:
    """One text's TEI sparse answer: ``[{"index", "value"}]``, indices ascending (values stay
    numpy float32 scalars: orjson writes them at float32 precision, as TEI does)."""
    return [{"index": i, "value": v} for i, v in zip(vector.indices.tolist(), vector.values, strict=True)]


def multivector_item(vectors: np.ndarray, index: int, encoding_format: str) -> dict[str, Any]:
    """One text's multi-vector answer item: its index, its ``[rows, dim]`` shape, and its rows as
    nested floats (the array: orjson writes it) or base64 of little-endian float32, row after row."""
    if encoding_format == "base64":
        data: Any = base64.b64encode(vectors.astype("<f4", copy=False).tobytes()).decode("ascii")
    else:
        data = vectors
    return {"object": "multi_vector", "index": index, "shape": list(vectors.shape), "embedding": data}
