"""Checking what clients send as inputs: strings or token ids, each item named by its index in
messages, the same for every transport."""

from __future__ import annotations

from typing import Any

from ..engine import Embedder
from .errors import BadRequest, InputTooLong, PayloadTooLarge


class TokenIds:
    """Token ids shaped like a ``tokenizers.Encoding`` for the engine: the client's own, or what the
    server kept of an encoding (its ids, not its token strings, offsets and overflow)."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: list[int], type_ids: list[int] | None = None) -> None:
        self.ids = ids
        self.type_ids = [0] * len(ids) if type_ids is None else type_ids

    def __len__(self) -> int:
        return len(self.ids)


def check_inputs(inputs: Any, max_inputs: int) -> list[Any]:
    """``inputs`` as a list of strings or a list of token-id lists, each item checked by index.

    Raises:
        BadRequest: a wrong type, named with its index (``input[3]``, ``input[0][7]``).
        PayloadTooLarge: more than ``max_inputs`` inputs.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise BadRequest(
            f"input must be a string, a list of strings or a list of token-id lists, not {type(inputs).__name__}",
            param="input",
        )
    if not inputs:
        raise BadRequest("input must not be empty", param="input")
    if len(inputs) > max_inputs:
        raise PayloadTooLarge(
            f"{len(inputs)} inputs in one request; the limit is {max_inputs} (--max-inputs)",
            param="input",
            code="too_many_inputs",
        )
    if isinstance(inputs[0], str):
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise BadRequest(
                    f"input[{i}] must be a string like input[0], not {json_type(item)}", param="input"
                )
        return list(inputs)
    if is_token_id(inputs[0]):  # one list of token ids
        for i, item in enumerate(inputs):
            if not is_token_id(item):
                raise BadRequest(
                    f"input[{i}] must be a token id (an integer), not {json_type(item)}", param="input"
                )
        return [list(inputs)]
    for i, item in enumerate(inputs):
        if not isinstance(item, (list, tuple)):
            first = "a string" if i == 0 else "a list of token ids like input[0]"
            raise BadRequest(f"input[{i}] must be {first}, not {json_type(item)}", param="input")
        bad = next((j for j, t in enumerate(item) if not is_token_id(t)), None)
        if bad is not None:
            raise BadRequest(
                f"input[{i}][{bad}] must be a token id (an integer), not {json_type(item[bad])}",
                param="input",
            )
    return [list(item) for item in inputs]


def token_ids(embedder: Embedder, inputs: list[list[int]], truncate: bool) -> list[TokenIds]:
    """Client token ids checked against the model's vocabulary and max length (cut there when
    ``truncate``, else refused with the count)."""
    vocab = embedder.tokenizer.vocab_size
    if embedder.config.vocab_size:
        vocab = min(vocab, embedder.config.vocab_size)
    limit = embedder.max_length
    out = []
    for i, ids in enumerate(inputs):
        if not ids:
            raise BadRequest(f"input[{i}] is an empty list of token ids", param="input")
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise BadRequest(
                f"input[{i}] has token id {bad}, outside this model's vocabulary (0..{vocab - 1})",
                param="input",
                code="token_id_out_of_range",
            )
        if len(ids) > limit:
            if not truncate:
                raise InputTooLong(
                    f"input[{i}] has {len(ids)} tokens, more than the model's max length of {limit}; "
                    "shorten it or send truncate=true",
                    param="input",
                )
            ids = ids[:limit]
        out.append(TokenIds(ids))
    return out


def is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)
