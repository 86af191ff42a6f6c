"""Tokenizing requests off the event loop, in two bounded executors.

The event loop never tokenizes and never waits on the tokenizers library's thread pool: a request is
tokenized whole by one executor thread, and the loop awaits the result. Small requests (a few short
texts) go to their own thread and are tokenized text by text on it, so they never queue behind a
large request, nor wait on the tokenizers pool a large batch keeps busy. Large requests go one at a
time to the other executor: at most one request is partly tokenized at any moment, whatever the
number of clients, which bounds the tokens that exist before the queue's own bound applies.

Every text is clipped first (``TextTokenizer.clip``), so a text costs about what its kept tokens
cost, whatever its characters; a text that cannot be clipped within ``MAX_TOKENIZE_CHARS`` characters
(a megabyte of whitespace, or under Unigram one unbroken run) is refused with 413. What is kept of
an encoding is its ids (``TokenIds``), not its token strings, offsets and overflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..engine.tokens import TextTokenizer
from .errors import BadRequest, InputTooLong, PayloadTooLarge
from .inputs import TokenIds

T = TypeVar("T")

#: The most characters tokenized to decide where to clip one text; a text that cannot be clipped
#: within them is refused (about 60 bytes per character while tokenizing: 60 MB).
MAX_TOKENIZE_CHARS = 2**20
#: A request of at most this many texts and characters is small (its own executor, no thread pool).
SMALL_TEXTS = 32
SMALL_CHARS = 16384
#: Texts per tokenizer call within a large request (bounds what one call holds before it is kept
#: as ids: at most this many clipped texts' full encodings).
CHUNK_TEXTS = 32


class Tokenization:
    """The two tokenizing executors of one server."""

    def __init__(self) -> None:
        self._small = ThreadPoolExecutor(1, thread_name_prefix="fastembed-native-tokenize-small")
        self._large = ThreadPoolExecutor(1, thread_name_prefix="fastembed-native-tokenize")

    async def run(self, texts: list[str], work: Callable[[bool], T]) -> T:
        """``work(small)`` on the executor that suits ``texts``; the loop only awaits it."""
        small = len(texts) <= SMALL_TEXTS and sum(len(t) for t in texts) <= SMALL_CHARS
        executor = self._small if small else self._large
        return await asyncio.get_running_loop().run_in_executor(executor, work, small)

    async def for_embedding(
        self, tokenizer: TextTokenizer, texts: list[str], rows: list[int], truncate: bool
    ) -> list[TokenIds]:
        """``texts`` (input ``rows[i]`` of the request) as token ids truncated at ``max_length``.

        Raises:
            BadRequest: a text is not valid UTF-8, or is over ``max_length`` when not ``truncate``.
            PayloadTooLarge: a text cannot be clipped within ``MAX_TOKENIZE_CHARS`` characters.
        """
        return await self.run(texts, lambda small: encode_ids(tokenizer, texts, rows, truncate, small))

    async def for_display(
        self, tokenizer: TextTokenizer, texts: list[str], add_special_tokens: bool
    ) -> list[list[dict[str, Any]]]:
        """TEI's ``/tokenize`` answer for ``texts`` (see ``EmbeddingService.tokenize``)."""
        return await self.run(texts, lambda small: token_lists(tokenizer, texts, add_special_tokens))

    def close(self) -> None:
        self._small.shutdown(wait=False, cancel_futures=True)
        self._large.shutdown(wait=False, cancel_futures=True)


def clipped(tokenizer: TextTokenizer, texts: list[str], rows: list[int], name: str) -> list[str]:
    """``texts`` clipped, or PayloadTooLarge naming the first that cannot be."""
    out = tokenizer.clip(texts, MAX_TOKENIZE_CHARS)
    for i, text in enumerate(out):
        if len(text) > MAX_TOKENIZE_CHARS:
            raise PayloadTooLarge(
                f"{name}[{rows[i]}] has {len(text)} characters and cannot be cut to the model's "
                f"{tokenizer.max_length} tokens within its first {MAX_TOKENIZE_CHARS} (they hold too few "
                "tokens, or one run of characters the tokenizer cannot split); shorten it",
                param=name,
                code="input_too_long",
            )
    return out


def encode_ids(
    tokenizer: TextTokenizer, texts: list[str], rows: list[int], truncate: bool, small: bool
) -> list[TokenIds]:
    """The work of :meth:`Tokenization.for_embedding`, on an executor thread."""
    originals, texts = texts, clipped(tokenizer, texts, rows, "input")
    out: list[TokenIds] = []
    for first in range(0, len(texts), CHUNK_TEXTS):
        part = texts[first : first + CHUNK_TEXTS]
        try:
            encodings = tokenizer.encode(part, first, clipped=True, parallel=not small)
        except ValueError as exc:  # a lone surrogate: the engine names texts[i] of this batch
            message = str(exc)
            for i in range(len(part)):  # texts[i] of the batch is input[rows[i]] of the request
                message = message.replace(f"texts[{first + i}]", f"input[{rows[first + i]}]")
            raise BadRequest(message, param="input") from None
        if not truncate:
            for i, encoding in enumerate(encodings):
                if encoding.overflowing:
                    text = originals[first + i]
                    count = tokenizer.count(text)
                    more = "+" if len(text) > tokenizer.count_chars else ""
                    raise InputTooLong(
                        f"input[{rows[first + i]}] has {count}{more} tokens, more than the model's max length of "
                        f"{tokenizer.max_length}; shorten it or send truncate=true",
                        param="input",
                    )
        out.extend(TokenIds(e.ids, e.type_ids) for e in encodings)
    return out


def token_lists(
    tokenizer: TextTokenizer, texts: list[str], add_special_tokens: bool
) -> list[list[dict[str, Any]]]:
    """The work of :meth:`Tokenization.for_display`, on an executor thread."""
    texts = clipped(tokenizer, texts, list(range(len(texts))), "inputs")
    try:
        encodings = tokenizer.encode_with_offsets(texts, add_special_tokens, clipped=True)
    except Exception:
        raise BadRequest("inputs must be valid UTF-8 strings", param="inputs") from None
    return [
        [
            {
                "id": token_id,
                "text": token,
                "special": bool(special),
                "start": None if special else start,
                "stop": None if special else stop,
            }
            for token_id, token, special, (start, stop) in zip(
                e.ids, e.tokens, e.special_tokens_mask, e.offsets, strict=True
            )
        ]
        for e in encodings
    ]
