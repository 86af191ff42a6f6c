"""The HTTP wire schema in one place: OpenAI's embeddings contract and text-embeddings-inference's
(TEI) ``/embed`` and ``/tokenize``, as typed request models, and the response builders.

Inputs are typed ``Any`` here on purpose: the service checks them (one string, strings, token ids)
with messages that name the item at fault, the same for HTTP and gRPC.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .service import EmbedRequest, EmbedResult


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


class TEITokenizeRequest(_Request):
    """``POST /tokenize`` as TEI defines it."""

    inputs: Any
    add_special_tokens: StrictBool = True
    prompt_name: StrictStr | None = None
    model: StrictStr | None = None


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


def models_response(names: list[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "fastembed-native"}
            for name in names
        ],
    }
