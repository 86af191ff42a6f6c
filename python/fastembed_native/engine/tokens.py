"""Texts to padded token arrays: the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``),
long-text clipping, and length-sorted token-budget batching.

The engine pads each batch itself, to the batch's own longest text, so any fixed padding or
truncation stored in ``tokenizer.json`` is switched off and replaced by ``max_length``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import chain

import numpy as np
from tokenizers import Encoding, Tokenizer, models, normalizers

from .config import ModelConfig

#: Default token budget per Run, per text of batch_size: a batch of 32 holds at most 32 x 32 tokens,
#: so texts of 256 tokens go 4 at a time. On the CPU, throughput depends on the tokens per Run far
#: more than on the texts per Run, and padding is pure waste (see benchmarks/).
TOKENS_PER_TEXT_BUDGET = 32

#: On the CPU, texts wider than this many tokens share a Run's budget in proportion to their width
#: (the engine's ``attention_width``): a batch's attention scores are texts x heads x width^2 floats,
#: which for long texts outgrow the rest of its activations (at all-MiniLM-L6-v2's 256 tokens, 4
#: texts' scores take 12.6 MB per tensor, and a Run holds several while two Runs go at once). So a
#: batch's attention cells (texts x width^2, per head) are held to budget x ATTENTION_WIDTH, which
#: texts of up to this width never reach. Measured in benchmarks/README.md: the same speed, a lower
#: peak RSS.
ATTENTION_WIDTH = 64

#: A batch that already holds _MIN_BATCH_TOKENS ends where texts get shorter than this fraction of
#: its longest one: the rest would be mostly padding (see the padding study in benchmarks/README.md).
_BATCH_LENGTH_SLACK = 0.9
_MIN_BATCH_TOKENS = 128

# A text longer than max_length * _CLIP_WINDOW_CHARS_PER_TOKEN characters is clipped before it is
# tokenized (see clip_text), so no text, whatever its characters, costs more than about that many
# tokens: a 2 MB string of commas costs one window, not two million tokens and their offsets.
_CLIP_WINDOW_CHARS_PER_TOKEN = 8
# The cut goes this many pre-tokenizer pieces after the piece of the first dropped token: cutting a
# text can only change the piece the cut lands in and the one before it (a trailing space joins it,
# a lookahead sees the end), so every piece that holds a kept token comes out the same.
_PIECE_SLACK = 3
# A single piece (a run without spaces or punctuation under BPE, one word under WordPiece) that
# runs past the window is cut inside itself only this many characters after the last kept token.
# WordPiece gives such a word one [UNK] whole (max_input_chars_per_word is 100), cut or not; BPE's
# merges settle within a few characters of the cut (tests/test_serve_limits.py checks runs of one and
# two characters). Unigram's best segmentation of a run of one character can change with the run's
# length, so under Unigram a piece is never cut inside.
_PIECE_MARGIN_CHARS = 1024


def clip_text(probe: Tokenizer, text: str, max_length: int, max_chars: int | None = None) -> str:
    """The shortest prefix of ``text`` found, cut where the first ``max_length`` tokens stay exactly
    those of the whole text: at the start of a pre-tokenizer piece well past them.

    ``probe`` is the model's tokenizer without truncation or padding. A text of at most
    ``max_length * 8`` characters is returned as it is; a longer one is tokenized as a prefix of that
    many characters (then four times as many while that is too few tokens to decide, as whitespace
    runs give none) and cut at the start of the third piece after the one that holds token
    ``max_length``. Piece boundaries come from the tokenizer's own pre-tokenizer, so a comma (its own
    piece under BERT) is a boundary and a long run without one is not. A single piece that runs on
    past the kept tokens is cut inside itself, 1,024 characters on, except under Unigram, whose best
    segmentation of a run can depend on the run's length: there the whole piece is kept.

    With ``max_chars``, no prefix longer than that is tokenized to decide: a text that cannot be cut
    within it comes back whole (the server refuses it; see ``serve/service.py``).
    """
    window = max_length * _CLIP_WINDOW_CHARS_PER_TOKEN
    inside = not isinstance(probe.model, models.Unigram)
    end = window
    while end < len(text) and (max_chars is None or end <= max_chars):
        try:
            encoding = probe.encode(text[:end], add_special_tokens=False)
        except Exception:
            return text  # a lone surrogate: the real encode reports it with the text's index
        cut = _cut_point(encoding, max_length, end, inside)
        if cut is not None:
            return text[:cut]
        end *= 4
    return text


def _cut_point(encoding: Encoding, max_length: int, end: int, inside: bool) -> int | None:
    """Where to cut a text whose first ``end`` characters gave ``encoding``, or None to look further.
    ``inside``: a piece may be cut inside itself (not under Unigram)."""
    if len(encoding) <= max_length:
        return None  # fewer tokens than are kept: nothing can be cut yet
    words, offsets = encoding.word_ids, encoding.offsets
    first_dropped = next((w for w in reversed(words[: max_length + 1]) if w is not None), -1)
    last = next((w for w in reversed(words) if w is not None), -1)
    for i in range(max_length + 1, len(words)):
        word = words[i]
        # Not in the window's last piece, which the window's own end may have cut short.
        if word is not None and first_dropped + _PIECE_SLACK <= word < last:
            return offsets[i][0]
    if not inside or last != first_dropped:
        return None
    piece_start = next(offsets[i][0] for i, w in enumerate(words) if w == last)
    kept_end = offsets[max_length - 1][1]
    if end - max(kept_end, piece_start) >= _PIECE_MARGIN_CHARS:
        return end  # one piece runs from the dropped tokens past the window: cut inside it
    return None


class FramedTokens:
    """Token ids built outside the tokenizer (an LLM reranker's framed prompt), shaped like an
    ``Encoding`` for padding: ``ids``, ``type_ids`` (zeros) and ``len``."""

    __slots__ = ("ids",)

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    @property
    def type_ids(self) -> list[int]:
        return [0] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


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

    def encode(
        self, texts: list[str], offset: int = 0, *, clipped: bool = False, parallel: bool = True
    ) -> list[Encoding]:
        """Tokenize ``texts`` (truncated to ``max_length``); ``offset`` numbers them in error messages.

        ``clipped``: the texts went through :meth:`clip` already. ``parallel=False`` tokenizes them
        one by one on the calling thread, never waiting on the tokenizers library's shared thread
        pool (which large batches may keep busy): for small requests that must not queue behind them.

        Raises:
            ValueError: a text cannot be encoded as UTF-8 (a lone surrogate); names its index.
        """
        if not clipped:
            texts = self.clip(texts)
        try:
            if not parallel:
                return [self._tokenizer.encode(text) for text in texts]
            # _fast: no character offsets, which nothing here uses (same ids, ~10% less time).
            return self._tokenizer.encode_batch_fast(texts)
        except Exception:  # tokenizers raises a bare TypeError for unencodable strings
            check_utf8(texts, offset)
            raise

    def encode_pairs(self, pairs: list[tuple[str, str]], offset: int = 0) -> list[Encoding]:
        """Tokenize (query, document) pairs as the model's tokenizer tokenizes pairs (BERT's token
        type ids, XLM-R's double separator), truncated longest-first to ``max_length``: a long
        document is cut, never an error. ``offset`` numbers the pairs in error messages.

        Long sides are clipped first (:meth:`clip`) without changing the result. Longest-first
        truncation depends on a side's tokens only up to ``max_length``, and on which side is the
        longer: so a clipped side is kept longer than the other side, and when both sides are too
        long to clip safely (each over ``max_length * 8`` characters) both are tokenized whole.

        Raises:
            ValueError: a text cannot be encoded as UTF-8 (a lone surrogate); names its pair and side.
        """
        try:
            texts = [self._clip_pair(query, document) for query, document in pairs]
            return self._tokenizer.encode_batch_fast(texts)
        except Exception as exc:  # tokenizers raises a bare TypeError for unencodable strings
            for i, pair in enumerate(pairs):
                for side, text in zip(("query", "document"), pair, strict=True):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as bad:
                        raise ValueError(
                            f"pairs[{offset + i}] {side} cannot be encoded as UTF-8 "
                            f"({bad.reason} at position {bad.start})"
                        ) from None
            raise exc

    def encode_framed(
        self, texts: list[str], prefix: list[int], suffix: list[int], *, offset: int = 0
    ) -> list[FramedTokens]:
        """Each text tokenized without special tokens, cut to what ``prefix`` and ``suffix`` leave of
        ``max_length``, and framed by their token ids (an LLM reranker's prompt, as its model card
        builds it: the pair's text truncated, the chat template's tokens kept whole).

        Raises:
            ValueError: the frame leaves no room, or a text cannot be encoded as UTF-8 (names it).
        """
        budget = self.max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room inside the prompt's {len(prefix) + len(suffix)} frame tokens"
            )
        try:
            encodings = self._probe.encode_batch_fast(self.clip(texts), add_special_tokens=False)
        except Exception as exc:
            for i, text in enumerate(texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise ValueError(
                        f"pairs[{offset + i}] cannot be encoded as UTF-8 ({bad.reason} at position {bad.start})"
                    ) from None
            raise exc
        return [FramedTokens(prefix + e.ids[:budget] + suffix) for e in encodings]

    def _clip_pair(self, query: str, document: str) -> tuple[str, str]:
        clipped_query, clipped_document = self.clip([query, document])
        cut_query, cut_document = len(clipped_query) < len(query), len(clipped_document) < len(document)
        if cut_query and cut_document:
            return query, document  # which full side is longer decides the cut: only their full lengths tell
        if not (cut_query or cut_document):
            return query, document
        # One side cut: keep it longer than the other side, as the whole text is.
        cut, other = (query, document) if cut_query else (document, query)
        clipped = clipped_query if cut_query else clipped_document
        other_tokens = len(self._probe.encode(other, add_special_tokens=False))
        if len(self._probe.encode(clipped, add_special_tokens=False)) <= other_tokens:
            clipped = clip_text(self._probe, cut, max(self.max_length, other_tokens + 1))
        return (clipped, document) if cut_query else (query, clipped)

    def count(self, text: str, *, special: bool = True) -> int:
        """Tokens ``text`` has before truncation, special tokens included unless ``special=False``
        (for messages that state how far over ``max_length`` a text is). Only the first
        :attr:`count_chars` characters are counted, so a 10 MB text costs no more than that: for a
        longer text this is a lower bound."""
        return len(self._probe.encode(text[: self.count_chars], add_special_tokens=special))

    def count_pair(self, first: str, second: str) -> int:
        """Tokens the pair has before truncation, special tokens included, as :meth:`count` counts
        (each side's first :attr:`count_chars` characters: a lower bound past them)."""
        return len(self._probe.encode(first[: self.count_chars], second[: self.count_chars]))

    @property
    def count_chars(self) -> int:
        """Characters :meth:`count` looks at."""
        return self.max_length * _CLIP_WINDOW_CHARS_PER_TOKEN * 8

    def prompt_length(self, prompt: str) -> int:
        """Tokens of ``prompt`` at the start of ``prompt + text``, counted as sentence-transformers
        counts them for ``include_prompt=False``: the prompt tokenized alone (special tokens
        included, truncated at ``max_length``), less a trailing special token (EOS, [SEP])."""
        ids = self._tokenizer.encode(prompt).ids
        if ids and ids[-1] in self._special_ids:
            return len(ids) - 1
        return len(ids)

    def clip(self, texts: list[str], max_chars: int | None = None) -> list[str]:
        """``texts`` each cut (see :func:`clip_text`) where truncating it at ``max_length`` keeps
        exactly the tokens truncating the whole text keeps; short texts stay as they are.
        ``max_chars``: the longest prefix tokenized to decide (None: no limit)."""
        limit = self.max_length * _CLIP_WINDOW_CHARS_PER_TOKEN
        if all(len(t) <= limit for t in texts):
            return texts
        return [clip_text(self._probe, t, self.max_length, max_chars) if len(t) > limit else t for t in texts]

    def encode_with_offsets(
        self, texts: list[str], add_special_tokens: bool = True, *, clipped: bool = False
    ) -> list[Encoding]:
        """Tokenize ``texts`` as :meth:`encode` does (clipped, truncated at ``max_length``), with
        character offsets and token strings, with or without the special tokens (TEI's
        ``/tokenize``). ``clipped``: the texts went through :meth:`clip` already."""
        if not clipped:
            texts = self.clip(texts)
        return self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

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


def check_utf8(texts: list[str], offset: int = 0) -> None:
    """Raise ValueError naming the first text (numbered from ``offset``) that UTF-8 cannot encode (a
    lone surrogate): what the tokenizers library only reports as a bare TypeError."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as bad:
            raise ValueError(
                f"texts[{offset + i}] cannot be encoded as UTF-8 ({bad.reason} at position {bad.start})"
            ) from None


def _lowercases(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's normalizer has a Lowercase step (sentence-transformers' own test)."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    return any(step.get("type") == "Lowercase" for step in steps)


def token_batches(
    sorted_lengths: np.ndarray, size: int, budget: int, attention_width: int | None = None
) -> Iterator[slice]:
    """Split texts sorted longest-first into batches (slices of that order).

    A batch holds at most ``size`` texts and ``budget`` tokens, padding included, so one long text
    does not pad 31 short ones; with ``attention_width`` (see :data:`ATTENTION_WIDTH`), texts wider
    than that fewer still, in proportion to their width (their attention scores grow with its
    square). Once it holds
    ``_MIN_BATCH_TOKENS`` it also ends where the texts drop below ``_BATCH_LENGTH_SLACK`` of its
    longest, the padding it would add.
    """
    first, total = 0, len(sorted_lengths)
    while first < total:
        width = max(int(sorted_lengths[first]), 1)
        wide = attention_width is not None and width > attention_width
        tokens = budget * attention_width // width if wide else budget
        end = min(total, first + min(size, max(1, tokens // width)))
        floor = width * _BATCH_LENGTH_SLACK
        cut = first + 1
        while cut < end and (sorted_lengths[cut] >= floor or (cut - first) * width < _MIN_BATCH_TOKENS):
            cut += 1
        yield slice(first, cut)
        first = cut
