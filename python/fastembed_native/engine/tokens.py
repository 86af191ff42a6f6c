"""Texts to padded token arrays: the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``),
long-text clipping, and length-sorted token-budget batching.

The engine pads each batch itself, to the batch's own longest text, so any fixed padding or
truncation stored in ``tokenizer.json`` is switched off and replaced by ``max_length``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import chain

import numpy as np
from tokenizers import Encoding, Tokenizer, normalizers

from .config import ModelConfig

#: Default token budget per Run, per text of batch_size: a batch of 32 holds at most 32 x 32 tokens,
#: so texts of 256 tokens go 4 at a time. On the CPU, throughput depends on the tokens per Run far
#: more than on the texts per Run, and padding is pure waste (see benchmarks/).
TOKENS_PER_TEXT_BUDGET = 32

#: A batch that already holds _MIN_BATCH_TOKENS ends where texts get shorter than this fraction of
#: its longest one: the rest would be mostly padding (see the padding study in benchmarks/README.md).
_BATCH_LENGTH_SLACK = 0.9
_MIN_BATCH_TOKENS = 128

# A text longer than max_length * this many characters is first tokenized as a prefix of that
# length, cut at a whitespace; when the prefix alone gives comfortably more tokens than max_length,
# truncating it gives the same tokens as truncating the whole text, and a 10 MB string costs
# microseconds, not seconds. The cut must fall between words: Unigram and BPE tokenize a word as a
# whole, so cutting one (a 3000-character run without spaces, or CJK text) changes its first tokens.
_CHARS_PER_TOKEN_LIMIT = 32
_PREFIX_TOKEN_MARGIN = 16
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")  # the last whitespace character of the searched span


class TextTokenizer:
    """A model's tokenizer set up for embedding: truncation at ``max_length``, no padding.

    Attributes:
        max_length: tokens per text, special tokens included.
        pad_id: the id padding positions get (the tokenizer's pad token, else the model's).
        padding_side: "right" or "left".
        vocab_size: ids the tokenizer can produce, added tokens included.
    """

    def __init__(self, config: ModelConfig) -> None:
        tokenizer = Tokenizer.from_file(str(config.tokenizer_path))
        if config.lowercase and not _lowercases(tokenizer):
            # As sentence-transformers does for do_lower_case: a Lowercase step ahead of the model's own.
            steps = [normalizers.Lowercase()] + ([tokenizer.normalizer] if tokenizer.normalizer else [])
            tokenizer.normalizer = normalizers.Sequence(steps)
        padding = tokenizer.padding  # read before it is switched off: the file's pad token
        pad_id = padding["pad_id"] if padding else config.pad_token_id
        if pad_id is None:
            candidates = map(tokenizer.token_to_id, ("[PAD]", "<pad>", "<|endoftext|>"))
            pad_id = next((i for i in candidates if i is not None), 0)
        special = tokenizer.num_special_tokens_to_add(is_pair=False)
        if config.max_length <= special:
            raise ValueError(
                f"max_length={config.max_length} leaves no room for text: "
                f"the tokenizer adds {special} special tokens"
            )
        # An untruncated copy measures long texts before they are clipped (see _clip).
        self._probe = Tokenizer.from_str(tokenizer.to_str())
        self._probe.no_padding()
        self._probe.no_truncation()
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_length)
        self._tokenizer = tokenizer
        self.max_length = config.max_length
        self.pad_id = int(pad_id)
        self.padding_side = config.padding_side
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._special_ids = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (truncating, not padding)."""
        return self._tokenizer

    def encode(self, texts: list[str], offset: int = 0) -> list[Encoding]:
        """Tokenize ``texts`` (truncated to ``max_length``); ``offset`` numbers them in error messages.

        Raises:
            ValueError: a text cannot be encoded as UTF-8 (a lone surrogate); names its index.
        """
        limit = self.max_length * _CHARS_PER_TOKEN_LIMIT
        if any(len(t) > limit for t in texts):
            texts = [self._clip(t, limit) if len(t) > limit else t for t in texts]
        try:
            # _fast: no character offsets, which nothing here uses (same ids, ~10% less time).
            return self._tokenizer.encode_batch_fast(texts)
        except Exception as exc:  # tokenizers raises a bare TypeError for unencodable strings
            for i, text in enumerate(texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise ValueError(
                        f"texts[{offset + i}] cannot be encoded as UTF-8 ({bad.reason} at position {bad.start})"
                    ) from None
            raise exc

    def count(self, text: str) -> int:
        """Tokens ``text`` has before truncation, special tokens included (for messages that state
        how far over ``max_length`` a text is)."""
        return len(self._probe.encode(text))

    def prompt_length(self, prompt: str) -> int:
        """Tokens of ``prompt`` at the start of ``prompt + text``, counted as sentence-transformers
        counts them for ``include_prompt=False``: the prompt tokenized alone (special tokens
        included, truncated at ``max_length``), less a trailing special token (EOS, [SEP])."""
        ids = self._tokenizer.encode(prompt).ids
        if ids and ids[-1] in self._special_ids:
            return len(ids) - 1
        return len(ids)

    def _clip(self, text: str, limit: int) -> str:
        space = _LAST_SPACE.search(text, 0, limit)
        if space is None or space.start() < limit // 2:
            return text  # no word boundary in reach: tokenize it all rather than risk other tokens
        prefix = text[: space.start()]
        try:
            tokens = len(self._probe.encode(prefix, add_special_tokens=False))
        except Exception:
            return text  # let the full encode report the problem with its index
        return prefix if tokens >= self.max_length + _PREFIX_TOKEN_MARGIN else text

    def pad(
        self, encodings: list[Encoding], lengths: np.ndarray, with_types: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Pack encodings into [batch, longest] int64 arrays: ids, attention mask, token types."""
        width = max(int(lengths.max()), 1)
        positions = np.arange(width)
        if self.padding_side == "right":
            real = positions < lengths[:, None]
        else:
            real = positions >= (width - lengths)[:, None]
        total = int(lengths.sum())
        ids = np.full(real.shape, self.pad_id, dtype=np.int64)
        # Boolean assignment fills row-major, the order chain() yields the tokens in.
        ids[real] = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        types = None
        if with_types:
            types = np.zeros(real.shape, dtype=np.int64)
            types[real] = np.fromiter(
                chain.from_iterable(e.type_ids for e in encodings), dtype=np.int64, count=total
            )
        return ids, real.astype(np.int64), types


def _lowercases(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's normalizer has a Lowercase step (sentence-transformers' own test)."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    return any(step.get("type") == "Lowercase" for step in steps)


def token_batches(sorted_lengths: np.ndarray, size: int, budget: int) -> Iterator[slice]:
    """Split texts sorted longest-first into batches (slices of that order).

    A batch holds at most ``size`` texts and ``budget`` tokens, padding included, so one long text
    does not pad 31 short ones. Once it holds ``_MIN_BATCH_TOKENS`` it also ends where the texts drop
    below ``_BATCH_LENGTH_SLACK`` of its longest, the padding it would add.
    """
    first, total = 0, len(sorted_lengths)
    while first < total:
        width = max(int(sorted_lengths[first]), 1)
        end = min(total, first + min(size, max(1, budget // width)))
        floor = width * _BATCH_LENGTH_SLACK
        cut = first + 1
        while cut < end and (sorted_lengths[cut] >= floor or (cut - first) * width < _MIN_BATCH_TOKENS):
            cut += 1
        yield slice(first, cut)
        first = cut
