"""The multi-vector head: ColBERT's per-token vectors (late interaction), as pylate computes them.

The engine is the embeddings' own (tokenizer, length-sorted token-budget batches, parallel
sessions, the C++ Run with the GIL released); the graph's output is one projected vector per token
(``export`` folds pylate's Dense projection into the graph). What this head adds are ColBERT's rules,
read from the model's ``config_sentence_transformers.json`` as pylate 1.6 writes it:

- a marker token (``query_prefix`` "[Q] " / ``document_prefix`` "[D] ") right after [CLS]; the text
  is cut so that the whole sequence, marker included, fits ``query_length`` / ``document_length``;
- queries padded with [MASK] up to ``query_length`` (``do_query_expansion``), those expansion tokens
  attended to only when ``attend_to_expansion_tokens``, and every position kept;
- documents keep their real tokens except those of ``skiplist_words`` (punctuation);
- every kept vector L2-normalised.

The C++ core packs each batch's kept vectors into one contiguous array with offsets
(``_core.pack_tokens``); the per-text results are views into it. MaxSim is ``_core.maxsim``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .. import _core
from .config import _optional_json
from .embedder import TOKENIZE_WINDOW, Embedder
from .tokens import FramedTokens, check_utf8


@dataclass(frozen=True)
class ColbertConfig:
    """ColBERT's rules as the model's files state them (pylate's keys and defaults)."""

    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    attend_to_expansion_tokens: bool
    do_query_expansion: bool
    skiplist_words: tuple[str, ...]


def is_colbert(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` holds a ColBERT model (pylate's ``model_type`` or its Dense module)."""
    model_dir = Path(model_dir)
    if _optional_json(model_dir / "config_sentence_transformers.json").get("model_type") == "ColBERT":
        return True
    modules = model_dir / "modules.json"
    if modules.is_file():
        import json

        entries = json.loads(modules.read_text(encoding="utf-8"))
        return any(str(e.get("type", "")).startswith("pylate.") for e in entries)
    return False


def read_colbert_config(model_dir: str | os.PathLike[str]) -> ColbertConfig:
    """The ColBERT rules in ``model_dir``'s ``config_sentence_transformers.json``, with pylate 1.6's
    defaults for what it does not say."""
    import string

    config = _optional_json(Path(model_dir) / "config_sentence_transformers.json")
    lengths = {}
    for key, default in (("query_length", 32), ("document_length", 180)):
        value = config.get(key) or default
        if isinstance(value, bool) or not isinstance(value, int) or value < 3:
            raise ValueError(f"{model_dir}: {key} must be an int >= 3 ([CLS], marker, [SEP]), got {value!r}")
        lengths[key] = value
    return ColbertConfig(
        query_prefix=str(config.get("query_prefix", "[Q] ")),
        document_prefix=str(config.get("document_prefix", "[D] ")),
        query_length=lengths["query_length"],
        document_length=lengths["document_length"],
        attend_to_expansion_tokens=bool(config.get("attend_to_expansion_tokens", False)),
        do_query_expansion=bool(config.get("do_query_expansion", True)),
        skiplist_words=tuple(config.get("skiplist_words", list(string.punctuation))),
    )


class MultiVectorEmbedder:
    """A ColBERT model on the shared engine: texts in, one float32 ``(tokens, dim)`` array per text.

    Args:
        model_dir: a model directory whose ONNX graph outputs one (projected) vector per token,
            with ColBERT's config; exported from a pylate checkpoint by ``fastembed-native export``.
        **options: the engine's options (providers, batch_size, max_batch_tokens, threads,
            parallel_runs, onnx_file, lazy_load, ...): see :class:`Embedder`.
    """

    def __init__(self, model_dir: str | os.PathLike[str], **options: Any):
        for name in ("pooling", "normalize", "include_prompt", "task", "max_length", "prompts"):
            if name in options:
                raise TypeError(
                    f"{type(self).__name__}() has no {name!r} option: ColBERT's rules come from the model's "
                    "config (query_length, document_length, ...)"
                )
        self.colbert = read_colbert_config(model_dir)
        self.engine = Embedder(model_dir, normalize=False, task="multi-vector", **options)
        tokenizer = self.engine.tokenizer.tokenizer
        self.query_prefix_id = _token_id(tokenizer, self.colbert.query_prefix, "query_prefix")
        self.document_prefix_id = _token_id(tokenizer, self.colbert.document_prefix, "document_prefix")
        mask_token = _optional_json(Path(model_dir) / "special_tokens_map.json").get("mask_token", "[MASK]")
        if isinstance(mask_token, dict):
            mask_token = mask_token.get("content", "[MASK]")
        self.mask_id = _token_id(tokenizer, str(mask_token), "the mask token")
        # pylate's skiplist: each word looked up in the vocabulary, a word that is not in it as [UNK]
        # (so then [UNK] tokens are dropped from documents too, as pylate drops them).
        unk = _unknown_id(tokenizer)
        found = {tokenizer.token_to_id(w) for w in self.colbert.skiplist_words}
        if None in found and unk is not None:
            found.add(unk)
        self.skiplist_ids = np.array(sorted(i for i in found if i is not None), dtype=np.int64)
        # One tokenizer per side, each cutting the text one token short of its length (the marker).
        self._sides = {
            True: _truncating(tokenizer, self.colbert.query_length - 1),
            False: _truncating(tokenizer, self.colbert.document_length - 1),
        }

    @property
    def dim(self) -> int:
        """Width of each token vector."""
        return self.engine.dim

    def __repr__(self) -> str:
        c = self.colbert
        return (
            f"{type(self).__name__}({str(self.engine.model_dir)!r}, dim={self.dim}, query_length={c.query_length}, "
            f"document_length={c.document_length}, providers={self.engine.providers})"
        )

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        is_query: bool = False,
        parallel: int | None = None,
    ) -> list[np.ndarray]:
        """One float32 ``(tokens, dim)`` array of unit rows per text, in input order: documents by
        default, queries (``query_length`` rows each, [MASK]-expanded) with ``is_query``.

        Raises:
            TypeError: ``texts`` or an item is not a string (the message names the index).
            ValueError: a bad ``batch_size`` or ``parallel``, or a text not encodable as UTF-8.
        """
        items, size, runs = self.engine.call_arguments(texts, batch_size, parallel)
        out: list[np.ndarray | None] = [None] * len(items)
        for start in range(0, len(items), TOKENIZE_WINDOW):
            encodings = self.encode(items[start : start + TOKENIZE_WINDOW], is_query=is_query, offset=start)
            self._embed_encodings(encodings, out, size, start, is_query, runs)
        return out  # type: ignore[return-value]  # every row is filled

    def query_embed(self, queries: str | Sequence[str], batch_size: int | None = None, **kwargs: Any):
        """:meth:`embed` of queries (``is_query=True``); fastembed's name."""
        return self.embed(queries, batch_size, is_query=True, **kwargs)

    def passage_embed(self, texts: str | Sequence[str], batch_size: int | None = None, **kwargs: Any):
        """:meth:`embed` of documents; fastembed's name."""
        return self.embed(texts, batch_size, is_query=False, **kwargs)

    embed_query = query_embed
    embed_passage = passage_embed

    def score(
        self, query: np.ndarray, documents: Sequence[np.ndarray] | tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """MaxSim of one query's vectors against each document's: float32 ``(len(documents),)``,
        computed in C++ (a document with no vector scores 0). ``documents``: a list of
        ``(tokens, dim)`` arrays, or what :meth:`pack` made of one (to score many queries against the
        same documents without packing them again each time)."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"query must be a (tokens, {self.dim}) array, got shape {query.shape}")
        if isinstance(documents, tuple) and len(documents) == 2 and isinstance(documents[1], np.ndarray):
            vectors, offsets = documents
        else:
            vectors, offsets = self.pack(documents)
        return _core.maxsim(query, vectors, offsets)

    def pack(self, documents: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``documents`` (``(tokens, dim)`` arrays) as one contiguous float32 ``(rows, dim)`` array and
        int64 offsets (``len(documents) + 1``): document i is rows ``offsets[i]:offsets[i + 1]``."""
        offsets = np.zeros(len(documents) + 1, dtype=np.int64)
        for i, doc in enumerate(documents):
            if not isinstance(doc, np.ndarray) or doc.ndim != 2 or doc.shape[1] != self.dim:
                shape = getattr(doc, "shape", type(doc).__name__)
                raise ValueError(f"documents[{i}] must be a (tokens, {self.dim}) array, got {shape}")
            offsets[i + 1] = offsets[i] + len(doc)
        if not len(documents):
            return np.zeros((0, self.dim), np.float32), offsets
        return np.ascontiguousarray(np.concatenate(documents), dtype=np.float32), offsets

    def encode(self, texts: list[str], *, is_query: bool, offset: int = 0) -> list[FramedTokens]:
        """The token ids the model runs for ``texts``: [CLS], the side's marker, the text cut to fit
        the side's length, [SEP] (queries are expanded when their batch is padded).

        Raises:
            ValueError: a text cannot be encoded as UTF-8; names its index.
        """
        tokenizer = self._sides[is_query]
        prefix = self.query_prefix_id if is_query else self.document_prefix_id
        try:
            # Stripped first, as sentence-transformers 5.3 (pylate's) strips every text.
            encodings = tokenizer.encode_batch_fast([text.strip() for text in texts])
        except Exception:  # tokenizers raises a bare TypeError for unencodable strings
            check_utf8(texts, offset)
            raise
        return [FramedTokens([e.ids[0], prefix, *e.ids[1:]]) for e in encodings]

    def embed_encodings(
        self,
        encodings: list[FramedTokens],
        out: list[np.ndarray | None],
        batch_size: int,
        *,
        start: int = 0,
        is_query: bool = False,
        parallel_runs: int | None = None,
    ) -> None:
        """Embed texts already framed by :meth:`encode` (the same ``is_query``) into
        ``out[start + i]``, one batch at a time, in batches of at most :meth:`token_budget` tokens."""
        self._embed_encodings(encodings, out, batch_size, start, is_query, parallel_runs)

    def token_budget(self, batch_size: int) -> int:
        """Most tokens one Run takes (the engine's budget)."""
        return self.engine.token_budget(batch_size)

    def _embed_encodings(
        self,
        encodings: list[FramedTokens],
        out: list[np.ndarray | None],
        batch_size: int,
        start: int,
        is_query: bool,
        parallel_runs: int | None,
    ) -> None:
        engine = self.engine
        name = engine._session.output_name
        expand = is_query and self.colbert.do_query_expansion
        width = self.colbert.query_length

        def run_batch(session: _core.Session, rows: np.ndarray) -> None:
            if expand:  # [MASK] up to query_length, attended to only if the model says so; all kept
                ids = np.full((len(rows), width), self.mask_id, dtype=np.int64)
                mask = np.full(ids.shape, 1 if self.colbert.attend_to_expansion_tokens else 0, dtype=np.int64)
                for r, row in enumerate(rows):
                    tokens = encodings[row].ids
                    ids[r, : len(tokens)] = tokens
                    mask[r, : len(tokens)] = 1
                types = np.zeros_like(ids) if engine._takes_token_types else None
                keep = np.ones(ids.shape, dtype=bool)
            else:
                ids, mask, types = engine.pad(encodings, rows)
                keep = mask.astype(bool)
                if not is_query and len(self.skiplist_ids):
                    keep &= ~np.isin(ids, self.skiplist_ids)
            (states,) = session.run(ids, mask, types, [name], engine.config.vocab_size or 0)
            vectors, offsets = _core.pack_tokens(states, keep, True)
            for r, row in enumerate(rows):
                out[start + int(row)] = vectors[offsets[r] : offsets[r + 1]]

        engine.run_batches(encodings, batch_size, run_batch, parallel_runs=parallel_runs)


def _token_id(tokenizer: Tokenizer, token: str, what: str) -> int:
    """The id of ``token`` as one token of the vocabulary (an added token such as "[Q] " or a word)."""
    found = tokenizer.token_to_id(token)
    if found is None:
        ids = tokenizer.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ValueError(f"{what} {token!r} is not one token of this tokenizer (it encodes to {ids})")
        found = ids[0]
    return found


def _unknown_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer model's unknown token, if it has one."""
    import json

    unk = json.loads(tokenizer.to_str()).get("model", {}).get("unk_token")
    return tokenizer.token_to_id(unk) if isinstance(unk, str) else None


def _truncating(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A copy of ``tokenizer`` that cuts every text to ``max_length`` tokens, specials included."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length)
    return copy
