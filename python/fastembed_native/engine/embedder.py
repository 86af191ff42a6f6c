"""Embedder: a model directory in, float32 embeddings out.

The data path: texts -> ``tokenizers`` (Rust, mostly outside the GIL) -> padded int64 arrays
-> the compiled core (ONNX Runtime Run + pooling, GIL released) -> rows of one result array.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from .. import _core
from . import runtime
from .config import FUSED_FILE, ModelConfig, read_model_dir
from .providers import ProviderSpec, resolve_providers
from .tokens import ATTENTION_WIDTH, TOKENS_PER_TEXT_BUDGET, TextTokenizer, token_batches

#: Texts are tokenized this many at a time; each window is sorted by length before batching, so a
#: batch holds texts of similar length (little padding) without tokenizing a whole huge input first.
TOKENIZE_WINDOW = 4096


class Embedder:
    """An embedding model: an ONNX file, its tokenizer and its pooling, ready to embed texts.

    Args:
        model_dir: a model directory (sentence-transformers layout, with ``onnx/model.onnx`` or
            ``model.onnx`` and ``tokenizer.json``).
        providers: execution providers in priority order: "cpu", "cuda", "coreml", or
            (name, options) tuples such as ("cuda", {"device_id": 1}) or
            ("coreml", {"compute_units": "ALL", "model_format": "MLProgram"}). Default: CPU.
        fallback: run on the CPU (with a warning) when no listed provider is available, instead of
            raising. Without it a missing provider is still skipped with a warning when an available
            one follows it in the list (``["cuda", "cpu"]``); see engine.providers.
        max_length: tokens per text (special tokens included); longer texts are truncated.
            Default: the model's ``max_seq_length``.
        pooling: "mean", "cls" or "last_token"; default: the model's ``1_Pooling/config.json``.
        normalize: L2-normalise embeddings; default: whether ``modules.json`` has Normalize.
        padding_side: "right" or "left"; default: ``tokenizer_config.json``, else right.
        onnx_file: which ONNX file of the directory to load, e.g. "onnx/model_int8.onnx" (made by
            ``fastembed-native quantize``); default ``onnx/model.onnx``, else ``model.onnx``.
        fused: when the directory has ``onnx/model_fused.onnx`` (written by ``export``; see
            fastembed_native.models.fuse) and no ``onnx_file`` is given, calls with a single batch
            run on it: a query's p50 went from 3.26 to 2.70 ms on 2 cores (benchmarks/README.md),
            same vectors. Calls with several batches use the plain file.
        batch_size: texts per ONNX Runtime call at most, the default for :meth:`embed`.
        max_batch_tokens: tokens per ONNX Runtime call at most (texts x longest text, padding
            included); default ``batch_size * 32``. On the CPU, texts wider than ``attention_width``
            tokens (64) get a budget shrunk in proportion to their width (see
            ``engine.tokens.ATTENTION_WIDTH``). A batch always holds at least one text.
        threads: CPU threads in all (default: every CPU this process may use). A call with a
            single batch (a query) runs on all of them; see ``parallel_runs``.
        parallel_runs: concurrent ORT runs for calls with several batches, each with
            ``threads // parallel_runs`` threads (default ``min(threads, 4)``; 1 disables). They
            use a second session, created on the first such call (one more copy of the weights):
            on 2 cores, two 1-thread runs embed 1.13x faster at batch 32 than one 2-thread run
            (benchmarks/README.md).
            CPU only; with another provider every call uses the one session.
        graph_optimization_level: 0 (none), 1 (basic), 2 (extended) or 99 (all, the default).
        prompts: named prompts ("query", "passage", ...) known from elsewhere (the registry);
            the model's own ``config_sentence_transformers.json`` prompts take precedence.
        include_prompt: False leaves a prompt's tokens out of the pooling (they are still attended
            to), as sentence-transformers does; default: the Pooling config's ``include_prompt``.
        lazy_load: read and check the directory now, but create the ONNX Runtime session on first
            use (fastembed's name; e.g. a model made in a parent process and used in workers).
        task: what the graph computes: "feature-extraction" (token vectors, pooled here),
            "fill-mask" or "multi-vector" (outputs a head reads: fastembed_native.engine.sparse,
            multivector, m3), or
            "sequence-classification" (one row of logits per input, copied as it is: the score
            head, fastembed_native.engine.scores, drives the engine that way).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
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
        prompts: Mapping[str, str] | None = None,
        include_prompt: bool | None = None,
        lazy_load: bool = False,
        task: str = "feature-extraction",
    ) -> None:
        check_positive(batch_size)
        self.config: ModelConfig = read_model_dir(
            model_dir,
            max_length=max_length,
            pooling=pooling,
            normalize=normalize,
            padding_side=padding_side,
            onnx_file=onnx_file,
            include_prompt=include_prompt,
            task=task,
        )
        #: What the graph computes (see ``task`` above).
        self.task = task
        runtime.ensure_loaded()
        ort_providers = resolve_providers(providers, _core.available_providers(), fallback)
        self.threads = _usable_cpus() if threads is None else threads
        check_positive(self.threads, "threads")
        cpu_only = all(name == "CPUExecutionProvider" for name, _ in ort_providers)
        if parallel_runs is None:
            parallel_runs = min(self.threads, 4) if cpu_only else 1
        check_positive(parallel_runs, "parallel_runs")
        self.parallel_runs = parallel_runs if cpu_only else 1
        self._session_args = {
            "graph_optimization_level": graph_optimization_level,
            "providers": ort_providers,
        }
        fused_path = self.config.model_dir / FUSED_FILE
        use_fused = fused and onnx_file is None and fused_path.is_file()
        #: The file single-batch calls run on (the fused copy when there is one).
        self.single_batch_onnx_path = fused_path if use_fused else self.config.onnx_path
        self._tokens = TextTokenizer(self.config)
        self.prompts: dict[str, str] = {k: v for k, v in (prompts or {}).items() if v}
        self.prompts.update(self.config.prompts)
        self.batch_size = batch_size
        if max_batch_tokens is not None:
            check_positive(max_batch_tokens, "max_batch_tokens")
        self.max_batch_tokens = max_batch_tokens
        #: Texts wider than this many tokens get a smaller budget (``tokens.ATTENTION_WIDTH``); None
        #: leaves the token budget alone, as on other providers, where fewer texts per call were
        #: not measured and would cost a GPU throughput. Read on every call.
        self.attention_width: int | None = ATTENTION_WIDTH if cpu_only else None
        # The single-batch session (all threads), made now or, with lazy_load, on first use; and
        # for calls with several batches a session with fewer threads per run, run concurrently by a
        # small pool, made on the first such call (see _bulk).
        self._session_lock = threading.Lock()
        self._single: _core.Session | None = None
        self._bulk_session: _core.Session | None = None
        self._bulk_pool: ThreadPoolExecutor | None = None
        self._bulk_lock = threading.Lock()
        if not lazy_load:
            self._load()

    @property
    def _session(self) -> _core.Session:
        return self._single if self._single is not None else self._load()

    def _load(self) -> _core.Session:
        """Create the single-batch session (once) and learn from it what the model outputs."""
        with self._session_lock:
            if self._single is not None:
                return self._single
            session = _core.Session(
                str(self.single_batch_onnx_path), intra_op_threads=self.threads, **self._session_args
            )
            vocab = self.config.vocab_size
            if self.task == "feature-extraction" and session.output_name == "logits" and session.dim == vocab:
                # A fill-mask graph (SPLADE): mean-pooling its vocabulary logits would be a silent wrong answer.
                raise ValueError(
                    f"{self.config.onnx_path} outputs vocabulary logits (a fill-mask graph, {vocab} per token): "
                    "it is a sparse (SPLADE) model; load it with SparseTextEmbedding"
                )
            dim = session.dim or self.config.hidden_size
            if dim is None:
                raise ValueError(
                    f"cannot tell the embedding width of {self.config.onnx_path}: its output "
                    f"{session.output_name!r} has a symbolic last dimension and config.json has no hidden_size"
                )
            self._dim: int = dim
            self._takes_token_types = "token_type_ids" in session.input_roles
            self._single = session
            return session

    # -- what the model is -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Width of each embedding."""
        self._session  # noqa: B018 - loads a lazy model: the width is the session's
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

    @property
    def tokenizer(self) -> TextTokenizer:
        """The model's tokenizer as the engine uses it (truncating at ``max_length``)."""
        return self._tokens

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.config.model_dir)!r}, dim={self.dim}, "
            f"max_length={self.max_length}, pooling={self.pooling!r}, normalize={self.normalize}, "
            f"providers={self.providers})"
        )

    def stats(self, reset: bool = False) -> dict[str, float]:
        """Where embed() time went since the last reset, over both sessions: ``runs``,
        ``run_seconds`` (inside ONNX Runtime's Run; concurrent runs add up, so this can exceed wall
        time), ``pool_seconds`` (pooling + normalisation), and ``padding_efficiency`` (real tokens /
        tokens computed, padding included)."""
        sessions = [s for s in (self._single, self._bulk_session) if s is not None]
        stats: dict[str, float] = {}
        for session in sessions:
            for key, value in session.stats().items():
                stats[key] = stats.get(key, 0) + value
            if reset:
                session.reset_stats()
        computed = stats.get("computed_tokens", 0)
        stats["padding_efficiency"] = stats.get("real_tokens", 0) / computed if computed else 1.0
        return stats

    def token_budget(self, batch_size: int) -> int:
        """Most tokens (batch x longest text) one Run takes: ``max_batch_tokens``, else
        ``batch_size x TOKENS_PER_TEXT_BUDGET``."""
        return self.max_batch_tokens or batch_size * TOKENS_PER_TEXT_BUDGET

    # -- embedding -----------------------------------------------------------------------------
    def embed_query(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        dimensions: int | None = None,
        parallel: int | None = None,
    ) -> np.ndarray:
        """Embed search queries, with the model's query prompt (e.g. e5's "query: ") prepended.
        Same arguments and result as :meth:`embed`; fastembed's name for it is :meth:`query_embed`."""
        prompt = self.prompts.get("query", "")
        return self.embed(texts, batch_size, prompt=prompt, dimensions=dimensions, parallel=parallel)

    def embed_passage(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        dimensions: int | None = None,
        parallel: int | None = None,
    ) -> np.ndarray:
        """Embed documents, with the model's passage prompt (e.g. e5's "passage: ") prepended.
        Same arguments and result as :meth:`embed`; fastembed's name for it is :meth:`passage_embed`."""
        prompt = self.prompts.get("passage", "")
        return self.embed(texts, batch_size, prompt=prompt, dimensions=dimensions, parallel=parallel)

    # fastembed's names for the same calls (its results are iterables of rows; iterating ours gives them).
    query_embed = embed_query
    passage_embed = embed_passage

    @property
    def embedding_size(self) -> int:
        """fastembed's name for :attr:`dim`."""
        return self.dim

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        prompt: str = "",
        dimensions: int | None = None,
        parallel: int | None = None,
    ) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: a list (or other sequence) of strings, or one string.
            batch_size: texts per ONNX Runtime call; default ``self.batch_size``.
            prompt: text prepended to every input (an instruction or "query: " prefix).
            dimensions: keep only the first ``dimensions`` values of each embedding (Matryoshka
                truncation), re-normalised when the model normalises. Default: all ``dim``.
            parallel: fastembed's data-parallel setting, in this engine's terms: None or 0 (every
                core: ``parallel_runs`` concurrent runs, the default), 1 (one run at a time on all
                threads), or ``parallel_runs`` itself; another count needs a model made with
                ``parallel_runs=`` that count (its runs share one process and one copy of the weights).

        Returns:
            float32 array of shape ``(len(texts), dimensions or dim)`` (one row for one string),
            rows in input order. A text that tokenizes to no token at all embeds as the zero vector.

        Raises:
            TypeError: ``texts`` or one of its items is not a string (the message names the index).
            ValueError: ``batch_size`` is not a positive int, ``dimensions`` is not in 1..dim,
                ``parallel`` is not one this model runs, or a text cannot be encoded as UTF-8.
        """
        check_dimensions(dimensions, self.dim)
        items, size, runs = self.call_arguments(texts, batch_size, parallel, prompt)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        # With fewer dimensions, normalise after truncating, not before.
        normalize = None if dimensions is None else False
        skip = self.prompt_tokens(prompt)
        for start in range(0, len(items), TOKENIZE_WINDOW):
            encodings = self._tokens.encode(items[start : start + TOKENIZE_WINDOW], start)
            self.embed_encodings(
                encodings,
                out[start : start + len(encodings)],
                size,
                normalize=normalize,
                skip_prefix=skip,
                parallel_runs=runs,
            )
        if dimensions is None:
            return out
        return truncate_dimensions(out, dimensions, self.normalize)

    def call_arguments(
        self, texts: Any, batch_size: int | None, parallel: Any, prompt: str = ""
    ) -> tuple[list[str], int, int]:
        """What every head's call checks first: the texts (a string or a sequence of strings, the
        ``prompt`` prepended), the batch size (default :attr:`batch_size`) and the concurrent runs
        for fastembed's ``parallel`` (see :meth:`embed`).

        Raises:
            TypeError: a text (named by its index) or the prompt is not a string.
            ValueError: ``batch_size`` or ``parallel`` is not one this model takes.
        """
        runs = self._runs_for(parallel)
        items = check_texts(texts)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be str, not {type(prompt).__name__}")
        if prompt:
            items = [prompt + text for text in items]
        size = self.batch_size if batch_size is None else batch_size
        check_positive(size)
        return items, size, runs

    def embed_encodings(
        self,
        encodings: Sequence[Encoding],
        out: np.ndarray,
        batch_size: int,
        *,
        normalize: bool | None = None,
        skip_prefix: int = 0,
        parallel_runs: int | None = None,
    ) -> None:
        """Embed already tokenized texts into the rows of ``out`` (float32, ``(len(encodings), dim)``).

        The encodings are sorted longest first and cut into token-budget batches; calls with
        several batches run them ``parallel_runs`` at a time (1: one after another on the
        all-threads session; default the model's ``parallel_runs``). ``normalize`` overrides the model's
        L2 normalisation (the server normalises per request, after ``dimensions``). ``skip_prefix``
        leaves each text's first tokens out of the pooling: :meth:`prompt_tokens` of its prompt.
        """
        normalize = self.config.normalize if normalize is None else normalize

        def pool_into_out(session: _core.Session, rows: np.ndarray) -> None:
            ids, mask, types = self.pad(encodings, rows)
            session.embed(
                ids,
                mask,
                types,
                out,
                rows,
                pooling=self.config.pooling,
                normalize=normalize,
                vocab_size=self.config.vocab_size or 0,
                skip_prefix=skip_prefix,
            )

        self.run_batches(encodings, batch_size, pool_into_out, parallel_runs=parallel_runs)

    def run_batches(
        self,
        encodings: Sequence[Encoding],
        batch_size: int,
        work: Callable[[_core.Session, np.ndarray], None],
        *,
        parallel_runs: int | None = None,
        token_budget: int | None = None,
    ) -> None:
        """The engine's batching, for every head: ``work(session, rows)`` once per batch, where
        ``rows`` indexes ``encodings`` (texts of similar length, longest batch first) and
        ``session`` is the one to run it on (the head pads the rows with :meth:`pad`, runs the
        session and turns its output into the head's answer).

        Batches hold at most ``batch_size`` texts and ``token_budget`` tokens (texts x longest
        text; default :meth:`token_budget`). Calls with several batches run them ``parallel_runs``
        at a time on the bulk session (1: one after another on the all-threads session; default
        the model's ``parallel_runs``); ``work`` must then be safe to call from several threads.
        """
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        # Longest first: similar lengths share a batch, and a batch too big for memory fails early.
        order = np.argsort(-lengths, kind="stable")
        budget = token_budget or self.token_budget(batch_size)
        batches = [order[b] for b in token_batches(lengths[order], batch_size, budget, self.attention_width)]
        runs = self.parallel_runs if parallel_runs is None else parallel_runs
        if len(batches) < 2 or runs < 2:
            for rows in batches:
                work(self._session, rows)
            return
        session, pool = self._bulk()
        futures = [pool.submit(work, session, rows) for rows in batches]
        try:
            for future in futures:
                future.result()
        except BaseException:  # an error, or Ctrl-C: stop what has not started, then re-raise
            for future in futures:
                future.cancel()
            raise

    def pad(
        self, encodings: Sequence[Encoding], rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``input_ids``, ``attention_mask`` and (when the model takes them) ``token_type_ids`` of
        the encodings at ``rows``, padded to the longest: int64 ``(len(rows), longest)``."""
        self._session  # noqa: B018 - a lazy model's session tells whether it takes token types
        picked = [encodings[i] for i in rows]
        lengths = np.fromiter((len(e) for e in picked), dtype=np.int64, count=len(picked))
        return self._tokens.pad(picked, lengths, self._takes_token_types)

    def prompt_tokens(self, prompt: str) -> int:
        """How many leading tokens of ``prompt + text`` to leave out of the pooling: the prompt's
        token count when the model's Pooling says ``include_prompt: false``, else 0."""
        if not prompt or self.config.include_prompt:
            return 0
        return self._tokens.prompt_length(prompt)

    # -- internals -------------------------------------------------------------------------------
    def _runs_for(self, parallel: Any) -> int:
        """Concurrent runs for fastembed's ``parallel`` (see :meth:`embed`)."""
        if parallel is None or parallel == 0:
            return self.parallel_runs
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 0:
            raise ValueError(f"parallel must be None or an int >= 0, got {parallel!r}")
        if parallel in (1, self.parallel_runs):
            return parallel
        raise ValueError(
            f"parallel={parallel}: this model runs {self.parallel_runs} concurrent ONNX Runtime runs "
            f"in one process, sharing one copy of the weights; for {parallel}, make it with "
            f"{type(self).__name__}(..., parallel_runs={parallel}) (parallel=None, 0 and 1 work on any model)"
        )

    def _bulk(self) -> tuple[_core.Session, ThreadPoolExecutor]:
        """The session and thread pool for calls with several batches, made on first use."""
        self._session  # noqa: B018 - a lazy model's single session tells what the model takes
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


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def check_positive(value: Any, name: str = "batch_size") -> None:
    """Raise ValueError unless ``value`` is a positive int (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_dimensions(dimensions: Any, dim: int) -> None:
    """Raise ValueError unless ``dimensions`` is None or an int in 1..dim."""
    if dimensions is None:
        return
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= dim:
        raise ValueError(f"dimensions must be an int from 1 to {dim} (the model's width), got {dimensions!r}")


def truncate_dimensions(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` columns of ``vectors`` (a new C-contiguous float32 array), each row
    L2-normalised again when ``normalize`` (Matryoshka truncation, as sentence-transformers'
    ``truncate_dim`` then ``normalize_embeddings``). A zero row stays zero."""
    out = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of str: one string, or an iterable of strings (items checked by index)."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or a sequence of strings, not {type(texts).__name__}")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"texts[{i}] must be str, not {type(item).__name__}")
    return items
