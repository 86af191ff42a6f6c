"""Reranking requests, whatever the transport: TEI's ``/rerank`` and ``tei.v1.Rerank``, Cohere's
``/v1/rerank`` (what infinity, Jina and Cohere clients speak) and our gRPC ``Rerank`` all become a
:class:`RerankRequest`, are checked here with messages that name the item at fault, and are answered
from a :class:`RerankResult`.

The pairs go through the same machinery as embeddings: tokenized off the event loop, queued as one
job on the model's batching queue (so pairs of many requests share engine calls, and a request of a
thousand documents is split like a large embedding request), then the score head's activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.scores import Scorer
from .errors import BadRequest, InputTooLong, PayloadTooLarge, quote_input
from .inputs import TokenIds, json_type
from .tokenize import MAX_TOKENIZE_CHARS

#: Bytes a rerank answer is charged per document (its index, score and JSON) before any work.
RERANK_BYTES_PER_RESULT = 128


@dataclass(frozen=True)
class RerankRequest:
    """One query against documents. ``None`` options take the model's or the server's default."""

    query: Any
    documents: Any  # strings, or Cohere's {"text": ...} objects
    model: str | None = None
    top_n: Any = None  # the best this many (default all)
    raw_scores: bool = False  # the logits instead of the activation (TEI's raw_scores)
    return_documents: bool = False
    instruction: Any = None  # an LLM reranker's task instruction (our extension)
    # Cut an over-long pair (True), refuse it with 422 (False: TEI's "truncate": false), or follow
    # the server's --no-auto-truncate (None: TEI's default). Cohere's route always cuts.
    truncate: bool | None = True


@dataclass
class RerankResult:
    model: str
    scores: np.ndarray  # float32 (len(documents),), input order
    order: np.ndarray  # indices of the best top_n, best first (ties keep input order)
    documents: list[str]
    tokens: int
    timings: Any = field(default=None)  # service.Timings


def check_rerank(request: RerankRequest, max_inputs: int) -> tuple[str, list[str], int | None, str | None]:
    """The query, the documents as strings, top_n and the instruction, checked.

    Raises:
        BadRequest: a wrong type or an empty list, naming the field and the item.
        PayloadTooLarge: more than ``max_inputs`` documents, or a text longer than the server
            tokenizes (``MAX_TOKENIZE_CHARS``).
    """
    query = request.query
    if not isinstance(query, str):
        raise BadRequest(f"query must be a string, not {json_type(query)}", param="query")
    _check_length(query, "query")
    documents = request.documents
    if not isinstance(documents, (list, tuple)):
        raise BadRequest(
            f"documents must be a list of strings, not {json_type(documents)}", param="documents"
        )
    if not documents:
        raise BadRequest("documents must not be empty", param="documents")
    if len(documents) > max_inputs:
        raise PayloadTooLarge(
            f"{len(documents)} documents in one request; the limit is {max_inputs} (--max-inputs)",
            param="documents",
            code="too_many_inputs",
        )
    texts = []
    for i, item in enumerate(documents):
        if isinstance(item, dict) and "text" in item:  # Cohere's {"text": ...} form
            item = item["text"]
        if not isinstance(item, str):
            raise BadRequest(
                f"documents[{i}] must be a string or an object with a 'text' string, not {json_type(item)}",
                param="documents",
            )
        _check_length(item, f"documents[{i}]")
        texts.append(item)
    top_n = request.top_n
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise BadRequest(f"top_n must be a positive integer, got {quote_input(top_n)}", param="top_n")
    instruction = request.instruction
    if instruction is not None and not isinstance(instruction, str):
        raise BadRequest(f"instruction must be a string, not {json_type(instruction)}", param="instruction")
    return query, texts, top_n, instruction


def _check_length(text: str, name: str) -> None:
    if len(text) > MAX_TOKENIZE_CHARS:
        raise PayloadTooLarge(
            f"{name} has {len(text)} characters; the server tokenizes at most {MAX_TOKENIZE_CHARS} "
            "per text (a reranker keeps only the first few hundred tokens: send less)",
            param=name.split("[")[0],
            code="input_too_long",
        )


def encode_pairs(
    scorer: Scorer, query: str, documents: Sequence[str], instruction: str | None, truncate: bool = True
) -> list[TokenIds]:
    """The work of tokenizing a rerank request, on a tokenizing executor thread: each (query,
    document) pair as the model takes it (cut longest-first), kept as ids only.

    Raises:
        BadRequest: a text is not valid UTF-8 (names the document).
        InputTooLong: not ``truncate`` and a pair is over the model's max length (names the first
            such document, its pair's token count and the limit, as TEI refuses it).
    """
    try:
        encodings = scorer.encode([(query, d) for d in documents], instruction)
    except ValueError as exc:  # a lone surrogate: name the document, not the engine's pair index
        message = str(exc).replace("pairs[", "documents[")
        raise BadRequest(message.replace(" document cannot", " cannot"), param="documents") from None
    if not truncate:
        _refuse_cut_pairs(scorer, query, documents, instruction, encodings)
    return [TokenIds(list(e.ids), list(e.type_ids)) for e in encodings]


def _refuse_cut_pairs(
    scorer: Scorer, query: str, documents: Sequence[str], instruction: str | None, encodings: list[Any]
) -> None:
    """InputTooLong for the first pair the tokenizer cut. A cut pair comes out exactly
    ``max_length`` tokens long, so only those are counted again, whole."""
    limit = scorer.max_length
    for i, encoding in enumerate(encodings):
        if len(encoding) < limit:
            continue
        tokens, exact = scorer.pair_tokens(query, documents[i], instruction)
        if tokens > limit:
            raise InputTooLong(
                f"documents[{i}] and the query make {tokens}{'' if exact else '+'} tokens, more than "
                f"the model's max length of {limit}; shorten it or send truncate=true",
                param="documents",
            )


def ranked(scores: np.ndarray, top_n: int | None) -> np.ndarray:
    """Indices of ``scores`` best first (stable: ties keep input order), the first ``top_n``."""
    return np.argsort(-scores, kind="stable")[:top_n]
