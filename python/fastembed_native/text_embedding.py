"""TextEmbedding: texts in, float32 embeddings out.

The data path: texts -> ``tokenizers`` (Rust, mostly outside the GIL) -> padded int64 arrays
-> the compiled core (ONNX Runtime Run + pooling, GIL released) -> rows of one result array.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from . import _core, _runtime
from .fuse import FUSED_FILE
from .model_config import ModelConfig, read_model_dir
from .models import DEFAULT_MODEL, SUPPORTED_MODELS, model_info, resolve_model
from .providers import ProviderSpec, resolve_providers

#: Texts are tokenized this many at a time; each window is sorted by length before batching, so a
#: batch holds texts of similar length (little padding) without tokenizing a whole huge input first.
TOKENIZE_WINDOW = 4096

#: Default token budget per Run, per text of batch_size: a batch of 32 holds at most 32 x 32 tokens,
#: so texts of 256 tokens go 4 at a time. On the CPU, throughput depends on the tokens per Run far
#: more than on the texts per Run, and padding is pure waste (see benchmarks/).
TOKENS_PER_TEXT_BUDGET = 32

#: A batch that already holds _MIN_BATCH_TOKENS ends where texts get shorter than this fraction of
#: its longest one: the rest would be mostly padding (see the padding study in benchmarks/README.md).
_BATCH_LENGTH_SLACK = 0.9
_MIN_BATCH_TOKENS = 128

# A text longer than max_length * this many characters is first tokenized as a prefix of that
# length; when the prefix alone gives comfortably more tokens than max_length, truncating it gives
# the same tokens as truncating the whole text, and a 10 MB string costs microseconds, not seconds.
_CHARS_PER_TOKEN_LIMIT = 32
_PREFIX_TOKEN_MARGIN = 16


class TextEmbedding:
    """An embedding model: an ONNX file, its tokenizer and its pooling, ready to embed texts.

    Args:
        model: a model directory (sentence-transformers layout, with ``onnx/model.onnx`` or
            ``model.onnx`` and ``tokenizer.json``), a model id from the cache, or None for the
            default model (sentence-transformers/all-MiniLM-L6-v2, built on first use).
        providers: execution providers in priority order: "cpu", "cuda", "coreml", or
            (name, options) tuples such as ("cuda", {"device_id": 1}) or
            ("coreml", {"compute_units": "ALL", "model_format": "MLProgram"}). Default: CPU.
        fallback: skip (with a warning) providers this ONNX Runtime lacks instead of raising.
        max_length: tokens per text (special tokens included); longer texts are truncated.
            Default: the model's ``max_seq_length``.
        pooling: "mean", "cls" or "last_token"; default: the model's ``1_Pooling/config.json``.
        normalize: L2-normalise embeddings; default: whether ``modules.json`` has Normalize.
        padding_side: "right" or "left"; default: ``tokenizer_config.json``, else right.
        onnx_file: which ONNX file of the directory to load, e.g. "onnx/model_int8.onnx" (made by
            ``fastembed-native quantize``); default ``onnx/model.onnx``, else ``model.onnx``.
        fused: when the directory has ``onnx/model_fused.onnx`` (written by ``export``; see
            fastembed_native.fuse) and no ``onnx_file`` is given, calls with a single batch run on
            it: a query's p50 went from 3.26 to 2.70 ms on 2 cores (benchmarks/README.md), same
            vectors. Calls with several batches use the plain file.
        batch_size: texts per ONNX Runtime call at most, the default for :meth:`embed`.
        max_batch_tokens: tokens per ONNX Runtime call at most (texts x longest text, padding
            included); default ``batch_size * 32``. A batch always holds at least one text.
        threads: CPU threads in all (default: every CPU this process may use). A call with a
            single batch (a query) runs on all of them; see ``parallel_runs``.
        parallel_runs: concurrent ORT runs for calls with several batches, each with
            ``threads // parallel_runs`` threads (default ``min(threads, 4)``; 1 disables). They
            use a second session, created on the first such call (one more copy of the weights):
            on 2 cores, two 1-thread runs embed 1.13x faster at batch 32 than one 2-thread run
            (benchmarks/README.md).
            CPU only; with another provider every call uses the one session.
        graph_optimization_level: 0 (none), 1 (basic), 2 (extended) or 99 (all, the default).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        providers: ProviderSpec | Iterable[ProviderSpec] | None = None,
        fallback: bool = False,
        max_length: int | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        padding_side: str | None = None,
        onnx_file: str | None = None,
        fused: bool = True,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        threads: int | None = None,
        parallel_runs: int | None = None,
        graph_optimization_level: int = 99,
    ) -> None:
        _check_batch_size(batch_size)
        info = model_info(str(model)) if model is not None else model_info(DEFAULT_MODEL)
        self.config: ModelConfig = read_model_dir(
            resolve_model(model),
            max_length=max_length,
            pooling=pooling,
            normalize=normalize,
            padding_side=padding_side,
            onnx_file=onnx_file,
        )
        _runtime.ensure_loaded()
        ort_providers = resolve_providers(providers, _core.available_providers(), fallback)
        self.threads = _usable_cpus() if threads is None else threads
        _check_batch_size(self.threads, "threads")
        cpu_only = all(name == "CPUExecutionProvider" for name, _ in ort_providers)
        if parallel_runs is None:
            parallel_runs = min(self.threads, 4) if cpu_only else 1
        _check_batch_size(parallel_runs, "parallel_runs")
        self.parallel_runs = parallel_runs if cpu_only else 1
        self._session_args = {
            "graph_optimization_level": graph_optimization_level,
            "providers": ort_providers,
        }
        fused_path = self.config.model_dir / FUSED_FILE
        use_fused = fused and onnx_file is None and fused_path.is_file()
        #: The file single-batch calls run on (the fused copy when there is one).
        self.single_batch_onnx_path = fused_path if use_fused else self.config.onnx_path
        self._session = _core.Session(
            str(self.single_batch_onnx_path), intra_op_threads=self.threads, **self._session_args
        )
        # For calls with several batches: a session with fewer threads per run, run concurrently
        # by a small pool. Both are made on first use (see _bulk).
        self._bulk_session: _core.Session | None = None
        self._bulk_pool: ThreadPoolExecutor | None = None
        self._bulk_lock = threading.Lock()
        self._tokenizer, self._probe, self._pad_id = _load_tokenizer(self.config)
        # Named prompts: the model's own config_sentence_transformers.json, else the registry's.
        self.prompts: dict[str, str] = {}
        if info is not None:
            self.prompts = {"query": info.query_prompt, "passage": info.passage_prompt}
        self.prompts.update(self.config.prompts)
        self._takes_token_types = "token_type_ids" in self._session.input_roles
        self.batch_size = batch_size
        if max_batch_tokens is not None:
            _check_batch_size(max_batch_tokens, "max_batch_tokens")
        self.max_batch_tokens = max_batch_tokens
        dim = self._session.dim or self.config.hidden_size
        if dim is None:
            raise ValueError(
                f"cannot tell the embedding width of {self.config.onnx_path}: its output "
                f"{self._session.output_name!r} has a symbolic last dimension and config.json has no hidden_size"
            )
        self._dim: int = dim

    # -- what the model is -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Width of each embedding."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
        return self.config.max_length

    @property
    def pooling(self) -> str:
        """ "mean", "cls" or "last_token" (ignored when the model outputs pooled embeddings)."""
        return "pooled" if self._session.output_is_pooled else self.config.pooling

    @property
    def normalize(self) -> bool:
        """Whether embeddings are L2-normalised."""
        return self.config.normalize

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime providers active for this model, in priority order (CPU last)."""
        return list(self._session.providers)

    @property
    def model_dir(self) -> Path:
        return self.config.model_dir

    def __repr__(self) -> str:
        return (
            f"TextEmbedding({str(self.config.model_dir)!r}, dim={self.dim}, max_length={self.max_length}, "
            f"pooling={self.pooling!r}, normalize={self.normalize}, providers={self.providers})"
        )

    def stats(self, reset: bool = False) -> dict[str, float]:
        """Where embed() time went since the last reset, over both sessions: ``runs``,
        ``run_seconds`` (inside ONNX Runtime's Run; concurrent runs add up, so this can exceed wall
        time), ``pool_seconds`` (pooling + normalisation), and ``padding_efficiency`` (real tokens /
        tokens computed, padding included)."""
        sessions = [s for s in (self._session, self._bulk_session) if s is not None]
        stats: dict[str, float] = {}
        for session in sessions:
            for key, value in session.stats().items():
                stats[key] = stats.get(key, 0) + value
            if reset:
                session.reset_stats()
        computed = stats["computed_tokens"]
        stats["padding_efficiency"] = stats["real_tokens"] / computed if computed else 1.0
        return stats

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The models this package knows (dimension, pooling, prompts, ...), as dicts like fastembed's.

        Any other model with a sentence-transformers layout works too, from its own config files.
        """
        return [asdict(info) for info in SUPPORTED_MODELS]

    # -- embedding -----------------------------------------------------------------------------
    def embed_query(self, texts: str | Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed search queries, with the model's query prompt (e.g. e5's "query: ") prepended."""
        return self.embed(texts, batch_size, prompt=self.prompts.get("query", ""))

    def embed_passage(self, texts: str | Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed documents, with the model's passage prompt (e.g. e5's "passage: ") prepended."""
        return self.embed(texts, batch_size, prompt=self.prompts.get("passage", ""))

    def embed(
        self, texts: str | Sequence[str], batch_size: int | None = None, *, prompt: str = ""
    ) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: a list (or other sequence) of strings, or one string.
            batch_size: texts per ONNX Runtime call; default ``self.batch_size``.
            prompt: text prepended to every input (an instruction or "query: " prefix).

        Returns:
            float32 array of shape ``(len(texts), dim)`` (``(1, dim)`` for one string), rows in
            input order. A text that tokenizes to no token at all embeds as the zero vector.

        Raises:
            TypeError: ``texts`` or one of its items is not a string (the message names the index).
            ValueError: ``batch_size`` is not a positive int, or a text cannot be encoded as UTF-8.
        """
        items = _check_texts(texts)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be str, not {type(prompt).__name__}")
        if prompt:
            items = [prompt + text for text in items]
        size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(size)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), TOKENIZE_WINDOW):
            encodings = self._encode(items[start : start + TOKENIZE_WINDOW], start)
            lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
            # Longest first: similar lengths share a batch, and a batch too big for memory fails early.
            order = np.argsort(-lengths, kind="stable")
            batches = [order[b] for b in self._batches(lengths[order], size)]

            if len(batches) < 2 or self.parallel_runs < 2:
                for rows in batches:
                    self._run(self._session, encodings, lengths, rows, start, out)
                continue
            session, pool = self._bulk()
            futures = [
                pool.submit(self._run, session, encodings, lengths, rows, start, out) for rows in batches
            ]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # an error, or Ctrl-C: stop what has not started, then re-raise
                for future in futures:
                    future.cancel()
                raise
        return out

    # -- internals -------------------------------------------------------------------------------
    def _run(
        self,
        session: _core.Session,
        encodings: list[Encoding],
        lengths: np.ndarray,
        rows: np.ndarray,
        offset: int,
        out: np.ndarray,
    ) -> None:
        """Embed the encodings at ``rows`` (indices into this window) into ``out[offset + rows]``."""
        ids, mask, types = self._pad([encodings[i] for i in rows], lengths[rows])
        session.embed(
            ids,
            mask,
            types,
            out,
            rows + offset,
            pooling=self.config.pooling,
            normalize=self.config.normalize,
            vocab_size=self.config.vocab_size or 0,
        )

    def _bulk(self) -> tuple[_core.Session, ThreadPoolExecutor]:
        """The session and thread pool for calls with several batches, made on first use."""
        with self._bulk_lock:
            if self._bulk_session is None:
                self._bulk_session = _core.Session(
                    str(self.config.onnx_path),
                    intra_op_threads=max(1, self.threads // self.parallel_runs),
                    **self._session_args,
                )
                self._bulk_pool = ThreadPoolExecutor(
                    self.parallel_runs, thread_name_prefix="fastembed_native"
                )
            assert self._bulk_pool is not None
            return self._bulk_session, self._bulk_pool

    def _batches(self, sorted_lengths: np.ndarray, size: int) -> Iterator[slice]:
        """Split texts sorted longest-first into batches (slices of that order).

        A batch holds at most ``size`` texts and ``token_budget(size)`` tokens, padding included, so
        one long text does not pad 31 short ones. Once it holds ``_MIN_BATCH_TOKENS`` it also ends
        where the texts drop below ``_BATCH_LENGTH_SLACK`` of its longest, the padding it would add.
        """
        first, total = 0, len(sorted_lengths)
        budget = self.token_budget(size)
        while first < total:
            width = max(int(sorted_lengths[first]), 1)
            end = min(total, first + min(size, max(1, budget // width)))
            floor = width * _BATCH_LENGTH_SLACK
            cut = first + 1
            while cut < end and (sorted_lengths[cut] >= floor or (cut - first) * width < _MIN_BATCH_TOKENS):
                cut += 1
            yield slice(first, cut)
            first = cut

    def token_budget(self, batch_size: int) -> int:
        """Most tokens (batch x longest text) one Run takes: ``max_batch_tokens``, else
        ``batch_size x TOKENS_PER_TEXT_BUDGET``."""
        return self.max_batch_tokens or batch_size * TOKENS_PER_TEXT_BUDGET

    def _encode(self, texts: list[str], offset: int) -> list[Encoding]:
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

    def _clip(self, text: str, limit: int) -> str:
        prefix = text[:limit]
        try:
            tokens = len(self._probe.encode(prefix, add_special_tokens=False))
        except Exception:
            return text  # let the full encode report the problem with its index
        return prefix if tokens >= self.max_length + _PREFIX_TOKEN_MARGIN else text

    def _pad(
        self, encodings: list[Encoding], lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Pack encodings into [batch, longest] int64 arrays: ids, attention mask, token types."""
        width = max(int(lengths.max()), 1)
        positions = np.arange(width)
        if self.config.padding_side == "right":
            real = positions < lengths[:, None]
        else:
            real = positions >= (width - lengths)[:, None]
        total = int(lengths.sum())
        ids = np.full(real.shape, self._pad_id, dtype=np.int64)
        # Boolean assignment fills row-major, the order chain() yields the tokens in.
        ids[real] = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        types = None
        if self._takes_token_types:
            types = np.zeros(real.shape, dtype=np.int64)
            types[real] = np.fromiter(
                chain.from_iterable(e.type_ids for e in encodings), dtype=np.int64, count=total
            )
        return ids, real.astype(np.int64), types


def _load_tokenizer(config: ModelConfig) -> tuple[Tokenizer, Tokenizer, int]:
    """The truncating tokenizer, an untruncated copy for probing long texts, and the pad id."""
    tokenizer = Tokenizer.from_file(str(config.tokenizer_path))
    padding = tokenizer.padding  # read before it is switched off: the file's pad token
    pad_id = padding["pad_id"] if padding else config.pad_token_id
    if pad_id is None:
        pad_id = next(
            (i for i in map(tokenizer.token_to_id, ("[PAD]", "<pad>", "<|endoftext|>")) if i is not None), 0
        )
    special = tokenizer.num_special_tokens_to_add(is_pair=False)
    if config.max_length <= special:
        raise ValueError(
            f"max_length={config.max_length} leaves no room for text: the tokenizer adds {special} special tokens"
        )
    probe = Tokenizer.from_str(tokenizer.to_str())
    probe.no_padding()
    probe.no_truncation()
    # We pad each batch ourselves, to its own longest text; a fixed padding or truncation stored in
    # tokenizer.json would otherwise change the result.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=config.max_length)
    return tokenizer, probe, int(pad_id)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _check_batch_size(value: Any, name: str = "batch_size") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or a sequence of strings, not {type(texts).__name__}")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"texts[{i}] must be str, not {type(item).__name__}")
    return items
