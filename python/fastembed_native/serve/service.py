"""The embedding service every transport calls: validation, tokenization, the cache, the batching
queue and the per-request finishing (``dimensions``, ``normalize``). HTTP and gRPC only translate
their wire formats to :class:`EmbedRequest` (and the rerank, sparse and multi-vector requests) and
back, so both protocols behave (and batch) as one.

Each served model has a kind, read from its files when it is loaded: ``embedding`` (dense vectors),
``reranker`` (scores pairs), ``sparse`` (SPLADE), ``multi-vector`` (ColBERT) or ``bge-m3`` (BGE-M3:
dense, sparse and multi-vector from one forward pass, serve/m3.py). A kind offers outputs
(:data:`KINDS`), and a route asks whether the model it is sent offers its output
(:meth:`ServedModel.offers`), so one BGE-M3 model answers the embedding, sparse and multi-vector
routes. Every kind runs on the same batching core (serve/batcher.py) with its own engine call; a
request that names a model that does not offer its route's output gets 400 ``wrong_model_kind``
saying what the model is and where to send it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .. import __version__
from ..bge_m3 import BGEM3
from ..cross_encoder import TextCrossEncoder
from ..engine import Embedder, truncate_dimensions
from ..engine.m3 import M3Embedder, is_m3_model
from ..engine.multivector import MultiVectorEmbedder, is_colbert
from ..engine.scores import Scorer, activate, is_score_model
from ..engine.sparse import SparseEmbedder, SparseEmbedding, is_sparse_model
from ..late_interaction import LateInteractionTextEmbedding
from ..models import resolve_model
from ..sparse_text_embedding import SparseTextEmbedding
from ..text_embedding import TextEmbedding
from .batcher import BatchQueue, EngineCall, Job, dense_call, stuck_queues
from .cache import EmbeddingCache
from .config import ServeConfig
from .errors import BadRequest, Draining, ModelNotFound, PayloadTooLarge, quote_input
from .inputs import TokenIds, check_inputs, token_ids
from .limits import ANSWER_BYTES_PER_DIMENSION, TOKENIZE_BYTES_PER_TOKEN, RequestBudget, charge_answer
from .m3 import M3_OUTPUTS, OutputSink, m3_call, m3_multivector_answer, m3_sparse_answer
from .metrics import Metrics
from .rerank import RERANK_BYTES_PER_RESULT, RerankRequest, RerankResult, check_rerank, encode_pairs, ranked
from .sparse import (
    MultiVectorRequest,
    MultiVectorResult,
    SparseRequest,
    SparseResult,
    check_input_type,
    encode_multivector,
    multivector_answer_bytes,
    multivector_call,
    sparse_answer_bytes,
    sparse_call,
)
from .tokenize import Tokenization

T = TypeVar("T")


@dataclass(frozen=True)
class EmbedRequest:
    """One embedding request, whatever the transport.

    ``inputs`` holds either strings or lists of token ids (the model's own ids, taken as the complete
    model input: ``/tokenize`` returns them with special tokens, so its ids embed like the text).
    ``None`` options take the server's or model's default.
    """

    inputs: Sequence[str] | Sequence[Sequence[int]]
    model: str | None = None
    truncate: bool | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    prompt_name: str | None = None


@dataclass
class Timings:
    tokenize: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    total: float = 0.0


@dataclass
class EmbedResult:
    model: str
    vectors: np.ndarray  # float32 (len(inputs), dimensions or dim)
    prompt_tokens: int
    timings: Timings = field(default_factory=Timings)


#: Each output a route serves: what a model of that one output is called in messages, and where
#: requests for it go.
OUTPUTS = {
    "embedding": ("an embedding model", "/v1/embeddings (OpenAI), /embed (TEI) or the Embed gRPC calls"),
    "reranker": ("a reranker", "/rerank (TEI), /v1/rerank (Cohere) or the Rerank gRPC calls"),
    "sparse": ("a sparse (SPLADE) model", "/embed_sparse (TEI) or the EmbedSparse gRPC calls"),
    "multi-vector": (
        "a multi-vector (ColBERT) model",
        "/embed_multi_vector or the EmbedMultiVector gRPC call",
    ),
}

#: Each kind of model: what it is called in messages, and the outputs it offers.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{output: (what, (output,)) for output, (what, _) in OUTPUTS.items()},
    "bge-m3": ("a BGE-M3 model (dense, sparse and multi-vector)", M3_OUTPUTS),
}

#: A head other than dense pooling: what a sparse, multi-vector or BGE-M3 model is served by.
Head = SparseEmbedder | MultiVectorEmbedder | M3Embedder


@dataclass
class ServedModel:
    name: str
    embedder: Embedder  # the engine (every head runs on one)
    queue: BatchQueue
    scorer: Scorer | None = None  # set for a reranker: what turns its logits into scores
    head: Head | None = None  # set for a sparse, multi-vector or BGE-M3 model

    @property
    def kind(self) -> str:
        if self.scorer is not None:
            return "reranker"
        if isinstance(self.head, SparseEmbedder):
            return "sparse"
        if isinstance(self.head, MultiVectorEmbedder):
            return "multi-vector"
        if isinstance(self.head, M3Embedder):
            return "bge-m3"
        return "embedding"

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the model offers: the outputs of :data:`OUTPUTS` its kind produces."""
        return KINDS[self.kind][1]

    def offers(self, output: str) -> bool:
        """Whether the model produces ``output`` (a key of :data:`OUTPUTS`)."""
        return output in self.outputs

    @property
    def normalize(self) -> bool:
        """The default of a dense request's ``normalize``: the model's own (BGE-M3's dense is)."""
        return True if isinstance(self.head, M3Embedder) else self.embedder.normalize

    def sparse_width(self) -> int:
        """Width of the model's sparse vectors: its vocabulary."""
        return self.head.vocab_size if isinstance(self.head, (SparseEmbedder, M3Embedder)) else 0

    def describe(self) -> dict[str, Any]:
        """What /info and ListModels say of the model: its width (a sparse model's is its
        vocabulary), max length (a ColBERT model's is its document length), pooling and prompts."""
        engine = self.embedder
        facts = {
            "dim": engine.dim,
            "max_length": engine.max_length,
            "pooling": engine.pooling,
            "normalize": engine.normalize,
            "prompts": engine.prompts,
        }
        if isinstance(self.head, SparseEmbedder):
            facts.update(pooling=f"splade-{self.head.splade.pooling}", normalize=False)
        elif isinstance(self.head, MultiVectorEmbedder):
            colbert = self.head.colbert
            facts.update(max_length=colbert.document_length, pooling="none", normalize=True)
            facts["query_length"] = colbert.query_length
        elif isinstance(self.head, M3Embedder):  # dim: the dense width; the other two widths beside it
            facts.update(pooling="cls", normalize=True)
            facts.update(sparse_dim=self.head.vocab_size, multi_vector_dim=self.head.colbert_dim)
        return facts

    def refuse(self, wanted: str) -> BadRequest:
        """400 ``wrong_model_kind``: this model does not offer the ``wanted`` output; says what it
        is and where to send it (every route of what it offers)."""
        what, outputs = KINDS[self.kind]
        routes = "; ".join(OUTPUTS[output][1] for output in outputs)
        return BadRequest(
            f"model {self.name!r} is {what}, not {OUTPUTS[wanted][0]}: send it to {routes}",
            param="model",
            code="wrong_model_kind",
        )


class EmbeddingService:
    """The models of one server, their queues, the cache and the metrics."""

    def __init__(
        self,
        embedders: dict[str, Embedder],
        config: ServeConfig,
        metrics: Metrics | None = None,
        scorers: dict[str, Scorer] | None = None,
        heads: dict[str, Head] | None = None,
    ) -> None:
        """``embedders``: each served model's engine by name; ``scorers``: the rerankers among them
        (their score heads, whose engines ``embedders`` holds); ``heads``: the sparse, multi-vector
        and BGE-M3 models among them (their heads, whose engines ``embedders`` holds)."""
        scorers = scorers or {}
        heads = heads or {}
        if not embedders:
            raise ValueError("a server needs at least one model")
        self.config = config
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        for name, embedder in embedders.items():
            head = heads.get(name)
            call: EngineCall
            if isinstance(head, SparseEmbedder):
                call = sparse_call(head)
            elif isinstance(head, MultiVectorEmbedder):
                call = multivector_call(head)
            elif isinstance(head, M3Embedder):  # every output of every route on one queue
                call = m3_call(head)
            else:  # embeddings, and a reranker's logits: the engine's pooled rows
                call = dense_call(embedder)
            queue = BatchQueue(
                name,
                call,
                max_call_tokens=config.max_call_tokens,
                max_queued_tokens=config.max_queued_tokens,
                metrics=self.metrics,
            )
            self.models[name] = ServedModel(name, embedder, queue, scorers.get(name), head)
        self.default_model = next(iter(self.models))
        self.cache = EmbeddingCache(config.cache_bytes) if config.cache_bytes > 0 else None
        self.draining = False
        self.tokenization = Tokenization()  # tokenizing off the event loop (serve/tokenize.py)
        self.budget = RequestBudget(config.max_inflight_bytes)  # requests in flight (serve/limits.py)
        #: ``embed`` calls admitted and not answered yet (what a drain waits for).
        self.in_flight = 0
        self.started = time.time()

    @classmethod
    def load(cls, config: ServeConfig) -> EmbeddingService:
        """Load every model of ``config`` (each resolved like ``TextEmbedding(source)``), as its
        files say it is: BGE-M3 (``is_m3_model``) as a ``BGEM3``, a reranker (``is_score_model``) as
        a ``TextCrossEncoder``, a SPLADE model (``is_sparse_model``) as a ``SparseTextEmbedding``, a
        ColBERT model (``is_colbert``) as a ``LateInteractionTextEmbedding``, anything else as a
        ``TextEmbedding``. ``config.quantized`` loads the int8 file of every model but ColBERT and
        BGE-M3 ones (``quantize`` makes none for them)."""
        embedders: dict[str, Embedder] = {}
        scorers: dict[str, Scorer] = {}
        heads: dict[str, Head] = {}
        for spec in config.models:
            if spec.name in embedders:
                raise ValueError(f"two models are served as {spec.name!r}; name them with NAME=SOURCE")
            model_dir = resolve_model(spec.source)
            if is_m3_model(model_dir):
                m3 = BGEM3(spec.source, threads=config.threads)
                heads[spec.name], embedders[spec.name] = m3, m3.engine
            elif is_score_model(model_dir):
                scorer = TextCrossEncoder(spec.source, threads=config.threads, quantized=config.quantized)
                scorers[spec.name], embedders[spec.name] = scorer, scorer.engine
            elif is_sparse_model(model_dir):
                sparse = SparseTextEmbedding(spec.source, threads=config.threads, quantized=config.quantized)
                heads[spec.name], embedders[spec.name] = sparse, sparse.engine
            elif is_colbert(model_dir):
                colbert = LateInteractionTextEmbedding(spec.source, threads=config.threads)
                heads[spec.name], embedders[spec.name] = colbert, colbert.engine
            else:  # by its source, not its directory: the registry adds what only it knows (prompts)
                embedders[spec.name] = TextEmbedding(
                    spec.source, threads=config.threads, quantized=config.quantized
                )
        return cls(embedders, config, scorers=scorers, heads=heads)

    # -- models ------------------------------------------------------------------------------------
    def resolve(self, name: str | None) -> ServedModel:
        """The served model called ``name`` (the first model when None or empty).

        Raises:
            ModelNotFound: no model of that name is served (the message lists the served ones).
        """
        if not name:
            return self.models[self.default_model]
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(
                f"model {quote_input(name)} is not served here; served: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return served

    # -- embedding -------------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """Embed ``request``'s inputs, batched with every other request to the same model.

        Cancelling the awaiting task (a client that went away) drops the request's queued work.

        Raises:
            ApiError: bad input (BadRequest / PayloadTooLarge, naming the input), an unknown model,
                a full queue (Overloaded) or a draining server (Draining, also for work that the
                drain's deadline cut off).
        """
        return await self._admitted(lambda: self._embed(request))

    async def _embed(self, request: EmbedRequest) -> EmbedResult:
        start = time.perf_counter()
        served = self.resolve(request.model)
        if not served.offers("embedding"):
            raise served.refuse("embedding")
        embedder = served.embedder
        inputs = check_inputs(request.inputs, self.config.max_inputs)
        dimensions = request.dimensions
        if dimensions is not None and (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= embedder.dim
        ):
            raise BadRequest(
                f"dimensions must be an integer from 1 to {embedder.dim} for model {served.name!r}, got {quote_input(dimensions)}",
                param="dimensions",
            )
        charge_answer(len(inputs) * embedder.dim * ANSWER_BYTES_PER_DIMENSION)  # or 429 (serve/limits.py)
        truncate = self.config.auto_truncate if request.truncate is None else bool(request.truncate)
        normalize = served.normalize if request.normalize is None else bool(request.normalize)
        timings = Timings()

        raw = np.empty((len(inputs), embedder.dim), dtype=np.float32)
        tokens = np.zeros(len(inputs), dtype=np.int64)
        skip = 0
        if inputs and isinstance(inputs[0], str):
            texts, skip = self._prompted(served, inputs, request.prompt_name)  # type: ignore[arg-type]
            if isinstance(served.head, M3Embedder):
                skip = 0  # its [CLS] row: nothing of a prompt is pooled, and its jobs share one group
            keys, missing = self._cache_lookup(served.name, texts, truncate, skip, raw, tokens)
            tokenize_start = time.perf_counter()
            encodings = await self._tokenize(embedder, [texts[i] for i in missing], missing, truncate)
            timings.tokenize = time.perf_counter() - tokenize_start
        else:
            if request.prompt_name:
                raise BadRequest("prompt_name applies to text inputs, not to token ids", param="prompt_name")
            keys, missing = None, list(range(len(inputs)))
            encodings = token_ids(embedder, inputs, truncate)  # type: ignore[arg-type]

        if encodings:
            job_out = np.empty((len(encodings), embedder.dim), dtype=np.float32)
            job = await self._run_job(served, encodings, job_out, group=skip, output="embedding")
            if len(missing) == len(inputs):
                raw = job_out  # nothing came from the cache: the engine's rows are the whole answer
            else:
                raw[missing] = job_out
            tokens[missing] = [len(e) for e in encodings]
            timings.queue = (job.started or job.enqueued) - job.enqueued
            timings.inference = job.inference_seconds
            if self.cache is not None and keys is not None:
                for row in missing:
                    self.cache.put(keys[row], (raw[row], int(tokens[row])))

        vectors = truncate_dimensions(raw, dimensions or embedder.dim, normalize)
        timings.total = time.perf_counter() - start
        self._count(served.name, len(inputs), int(tokens.sum()), timings)
        return EmbedResult(served.name, vectors, int(tokens.sum()), timings)

    async def _run_job(
        self, served: ServedModel, encodings: Any, out: Any, group: Any = 0, output: str = ""
    ) -> Job:
        """Queue ``encodings`` on ``served``'s batching queue and wait until ``out`` holds their
        results (of ``output``, for a model of several: its rows of that output alone, computed in
        the calls it shares with the model's other requests); cancelling the awaiting task drops
        what has not run yet."""
        future = asyncio.get_running_loop().create_future()
        asks: frozenset[str] = frozenset()
        if isinstance(served.head, M3Embedder):
            out, asks = OutputSink(out, output), frozenset((output,))
        job = Job(encodings, out, future, sum(len(e) for e in encodings), group=group, asks=asks)
        served.queue.submit(job)
        try:
            await job.future
        except asyncio.CancelledError:
            served.queue.cancel(job)
            raise
        return job

    # -- reranking -----------------------------------------------------------------------------
    def default_of(self, output: str) -> str:
        """The first model served that offers ``output`` (TEI's Rerank and EmbedSparse calls name no
        model).

        Raises:
            BadRequest: no model served offers it.
        """
        name = next((n for n, s in self.models.items() if s.offers(output)), None)
        if name is None:
            what = OUTPUTS[output][0].split(" ", 1)[1]
            raise BadRequest(
                f"no {what} is served here (models: {', '.join(self.models)}); start the server with "
                f"--model NAME=<{OUTPUTS[output][0]}>",
                code="wrong_model_kind",
            )
        return name

    def default_reranker(self) -> str:
        """The first reranker served (TEI's Rerank calls name no model).

        Raises:
            BadRequest: no reranker is served.
        """
        return self.default_of("reranker")

    async def rerank(self, request: RerankRequest) -> RerankResult:
        """Score ``request``'s documents against its query, batched with every other request to the
        same model (pairs of many requests share engine calls; a long list is split like a large
        embedding request). Cancelling the awaiting task drops the request's queued work.

        Raises:
            ApiError: as :meth:`embed` does; BadRequest for an embedding model.
        """
        return await self._admitted(lambda: self._rerank(request))

    async def _admitted(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` counted in :attr:`in_flight` (what a drain waits for); refused while draining."""
        if self.draining:
            raise Draining("the server is shutting down and takes no new requests")
        self.in_flight += 1
        try:
            return await work()
        finally:
            self.in_flight -= 1

    async def _rerank(self, request: RerankRequest) -> RerankResult:
        start = time.perf_counter()
        served = self.resolve(request.model or self.default_reranker())
        scorer = served.scorer
        if scorer is None:
            raise served.refuse("reranker")
        query, documents, top_n, instruction = check_rerank(request, self.config.max_inputs)
        if instruction is not None and scorer.prompt is None:
            raise BadRequest(
                f"instruction is for LLM rerankers; model {served.name!r} is a cross-encoder",
                param="instruction",
            )
        charge_answer(len(documents) * RERANK_BYTES_PER_RESULT)  # or 429 (serve/limits.py)
        timings = Timings()
        texts = [query, *documents]
        tokenize_start = time.perf_counter()
        truncate = self.config.auto_truncate if request.truncate is None else bool(request.truncate)
        encodings = await self.tokenization.run(
            texts, lambda small: encode_pairs(scorer, query, documents, instruction, truncate)
        )
        timings.tokenize = time.perf_counter() - tokenize_start
        logits = np.empty((len(encodings), served.embedder.dim), dtype=np.float32)
        job = await self._run_job(served, encodings, logits)
        tokens = job.tokens
        timings.queue = (job.started or job.enqueued) - job.enqueued
        timings.inference = job.inference_seconds
        scores = logits[:, 0] if request.raw_scores else activate(logits, scorer.activation)[:, 0]
        timings.total = time.perf_counter() - start
        self._count(served.name, len(documents), tokens, timings)
        return RerankResult(served.name, scores, ranked(scores, top_n), documents, tokens, timings)

    # -- sparse and multi-vector ----------------------------------------------------------------
    async def embed_sparse(self, request: SparseRequest) -> SparseResult:
        """One sparse vector per input from a SPLADE or BGE-M3 model (the first served when the
        request names none), batched with every other request to the same model.

        Raises:
            ApiError: as :meth:`embed` does; BadRequest ``wrong_model_kind`` for a model of another kind.
        """
        return await self._admitted(lambda: self._embed_sparse(request))

    async def _embed_sparse(self, request: SparseRequest) -> SparseResult:
        start = time.perf_counter()
        served = self.resolve(request.model or self.default_of("sparse"))
        head = served.head
        if not served.offers("sparse"):
            raise served.refuse("sparse")
        is_query = check_input_type(request.input_type)
        inputs = check_inputs(request.inputs, self.config.max_inputs)
        if isinstance(head, M3Embedder):
            charge, each = m3_sparse_answer(head, len(inputs))
            self._charge_answer(charge, len(inputs), each)
        else:
            assert isinstance(head, SparseEmbedder)
            self._charge_answer(
                sparse_answer_bytes(head, len(inputs)), len(inputs), "a vocabulary-wide sparse vector"
            )
        truncate = self.config.auto_truncate if request.truncate is None else bool(request.truncate)
        timings = Timings()
        prompt_name = request.prompt_name
        if is_query and isinstance(head, SparseEmbedder):
            if head.static_query is not None:
                return await self._static_sparse_queries(served, head, inputs, prompt_name, start)
            if prompt_name is None and "query" in served.embedder.prompts:
                prompt_name = "query"  # as SparseTextEmbedding.query_embed
        if isinstance(inputs[0], str):
            texts, _ = self._prompted(served, inputs, prompt_name)
            tokenize_start = time.perf_counter()
            encodings = await self._tokenize(served.embedder, texts, list(range(len(texts))), truncate)
            timings.tokenize = time.perf_counter() - tokenize_start
        else:
            if prompt_name:
                raise BadRequest("prompt_name applies to text inputs, not to token ids", param="prompt_name")
            encodings = token_ids(served.embedder, inputs, truncate)
        vectors: list[SparseEmbedding] = [None] * len(encodings)  # type: ignore[list-item]
        job = await self._run_job(served, encodings, vectors, output="sparse")
        timings.queue = (job.started or job.enqueued) - job.enqueued
        timings.inference = job.inference_seconds
        timings.total = time.perf_counter() - start
        self._count(served.name, len(inputs), job.tokens, timings)
        return SparseResult(served.name, vectors, job.tokens, timings)

    async def _static_sparse_queries(
        self,
        served: ServedModel,
        head: SparseEmbedder,
        inputs: list[Any],
        prompt_name: str | None,
        start: float,
    ) -> SparseResult:
        """Queries of an inference-free model: its static weights looked up off the event loop, no
        model run and no engine queue (``SparseTextEmbedding.query_embed``)."""
        assert head.static_query is not None
        if not isinstance(inputs[0], str):
            raise BadRequest(
                "an inference-free model's queries are text, not token ids: its query side reads them "
                "with its own tokenizer",
                param="inputs",
            )
        texts, _ = self._prompted(
            served, inputs, prompt_name or ("query" if "query" in head.prompts else None)
        )
        timings = Timings()  # (a text is valid UTF-8: JSON and protobuf refuse lone surrogates)
        active = head.max_active_dims or 0
        vectors = await self.tokenization.run(texts, lambda small: head.static_query.embed(texts, active))
        timings.tokenize = timings.total = time.perf_counter() - start
        self._count(served.name, len(texts), 0, timings)
        return SparseResult(served.name, vectors, 0, timings)

    async def embed_multi_vector(
        self, request: MultiVectorRequest, encoding_format: str = "float"
    ) -> MultiVectorResult:
        """One float32 ``(tokens, dim)`` array per input from a ColBERT or BGE-M3 model (the first
        served when the request names none), batched with every other request of the same model and
        input type (a BGE-M3 model's, of any type and route: it encodes both sides alike).
        ``encoding_format`` only sizes the answer's charge.

        Raises:
            ApiError: as :meth:`embed` does; BadRequest ``wrong_model_kind`` for a model of another kind.
        """
        return await self._admitted(lambda: self._embed_multi_vector(request, encoding_format))

    async def _embed_multi_vector(
        self, request: MultiVectorRequest, encoding_format: str
    ) -> MultiVectorResult:
        start = time.perf_counter()
        served = self.resolve(request.model or self.default_of("multi-vector"))
        head = served.head
        if not served.offers("multi-vector"):
            raise served.refuse("multi-vector")
        is_query = check_input_type(request.input_type)
        inputs = check_inputs(request.inputs, self.config.max_inputs)
        if isinstance(head, M3Embedder):
            return await self._m3_multi_vector(served, head, inputs, encoding_format, start)
        assert isinstance(head, MultiVectorEmbedder)
        if not isinstance(inputs[0], str):
            raise BadRequest(
                "a multi-vector model takes text inputs, not token ids (ColBERT adds its own markers)",
                param="input",
            )
        rows = head.colbert.query_length if is_query else head.colbert.document_length
        self._charge_answer(
            multivector_answer_bytes(head, len(inputs), is_query, encoding_format),
            len(inputs),
            f"up to {rows} rows of {head.dim} floats",
        )
        timings = Timings()
        tokenize_start = time.perf_counter()
        encodings = await self.tokenization.run(
            inputs, lambda small: encode_multivector(head, inputs, is_query)
        )
        timings.tokenize = time.perf_counter() - tokenize_start
        vectors: list[np.ndarray] = [None] * len(encodings)  # type: ignore[list-item]
        job = await self._run_job(served, encodings, vectors, group=is_query)
        timings.queue = (job.started or job.enqueued) - job.enqueued
        timings.inference = job.inference_seconds
        timings.total = time.perf_counter() - start
        self._count(served.name, len(inputs), job.tokens, timings)
        return MultiVectorResult(served.name, vectors, head.dim, job.tokens, timings)

    async def _m3_multi_vector(
        self, served: ServedModel, head: M3Embedder, inputs: list[Any], encoding_format: str, start: float
    ) -> MultiVectorResult:
        """A BGE-M3 model's ColBERT vectors: its inputs tokenized as for its other outputs (strings
        or token ids, cut to its max length unless the server says not to), one job asking for them
        on the model's one queue."""
        charge, each = m3_multivector_answer(head, len(inputs), encoding_format)
        self._charge_answer(charge, len(inputs), each)
        truncate = self.config.auto_truncate
        timings = Timings()
        if isinstance(inputs[0], str):
            tokenize_start = time.perf_counter()
            encodings = await self._tokenize(served.embedder, inputs, list(range(len(inputs))), truncate)
            timings.tokenize = time.perf_counter() - tokenize_start
        else:
            encodings = token_ids(served.embedder, inputs, truncate)
        vectors: list[np.ndarray] = [None] * len(encodings)  # type: ignore[list-item]
        job = await self._run_job(served, encodings, vectors, output="multi-vector")
        timings.queue = (job.started or job.enqueued) - job.enqueued
        timings.inference = job.inference_seconds
        timings.total = time.perf_counter() - start
        self._count(served.name, len(inputs), job.tokens, timings)
        return MultiVectorResult(served.name, vectors, head.colbert_dim, job.tokens, timings)

    def _charge_answer(self, n: int, inputs: int, each: str) -> None:
        """Charge the request's answer of ``n`` bytes (``inputs`` inputs, ``each`` one of them at
        most) to the budget of requests in flight: 429 when it has no room now, 413 when it would
        have none even alone (retrying cannot help; the message says how many inputs fit)."""
        per_input = max(1, n // max(1, inputs))
        limit = self.budget.limit
        too_large = PayloadTooLarge(
            f"the answer to {inputs} inputs may take {n} bytes (each {each}), more than the server holds "
            f"for all requests in flight ({limit} bytes, --max-inflight-bytes); send at most "
            f"{max(1, limit // per_input - 1)} inputs per request",
            param="input",
            code="answer_too_large",
        )
        charge_answer(n, too_large)  # or 429 (serve/limits.py)

    def _prompted(
        self, served: ServedModel, texts: list[str], prompt_name: str | None
    ) -> tuple[list[str], int]:
        """The texts with the named prompt in front, and the prompt tokens the pooling leaves out
        (non-zero only for ``include_prompt: false`` models)."""
        if not prompt_name:
            return texts, 0
        prompt = served.embedder.prompts.get(prompt_name)
        if prompt is None:
            known = ", ".join(sorted(served.embedder.prompts)) or "none"
            raise BadRequest(
                f"model {served.name!r} has no prompt named {quote_input(prompt_name)}; its prompts: {known}",
                param="prompt_name",
            )
        return [prompt + text for text in texts], served.embedder.prompt_tokens(prompt)

    def _cache_lookup(
        self, model: str, texts: list[str], truncate: bool, skip: int, raw: np.ndarray, tokens: np.ndarray
    ) -> tuple[list[tuple[str, str, bool, int]] | None, list[int]]:
        """Fill ``raw`` / ``tokens`` from the cache; return the keys and the rows still missing.

        The key is everything that changes a raw vector: the model, the text the model sees, whether
        it may be truncated, and how many prompt tokens the pooling skips."""
        if self.cache is None:
            return None, list(range(len(texts)))
        keys = [(model, text, truncate, skip) for text in texts]
        missing = []
        hits = 0
        for row, key in enumerate(keys):
            found = self.cache.get(key)
            if found is None:
                missing.append(row)
            else:
                raw[row], tokens[row] = found
                hits += 1
        cache = self.cache
        self.metrics.cache_lookup(hits, len(missing), cache.bytes, cache.hits, cache.hits + cache.misses)
        return keys, missing

    async def _tokenize(
        self, embedder: Embedder, texts: list[str], rows: list[int], truncate: bool
    ) -> list[TokenIds]:
        if not texts:
            return []
        return await self.tokenization.for_embedding(embedder.tokenizer, texts, rows, truncate)

    def _count(self, model: str, inputs: int, tokens: int, timings: Timings) -> None:
        m = self.metrics
        m.inputs.labels(model).inc(inputs)
        m.tokens.labels(model).inc(tokens)
        m.queue_seconds.labels(model).observe(timings.queue)
        m.tokenize_seconds.labels(model).observe(timings.tokenize)

    # -- tokenize, info, health --------------------------------------------------------------------
    async def tokenize(
        self,
        inputs: Any,
        model: str | None = None,
        add_special_tokens: bool = True,
        prompt_name: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """TEI's ``/tokenize``: each input's tokens as ``{id, text, special, start, stop}``
        (``start``/``stop`` are character offsets into the input; None for special tokens), at most
        ``max_length`` of them (the tokens an embedding sees), tokenized off the event loop."""
        served = self.resolve(model)
        texts = check_inputs(inputs, self.config.max_inputs)
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest("inputs must be strings", param="inputs")
        texts, _ = self._prompted(served, texts, prompt_name)
        charge_answer(len(texts) * served.embedder.max_length * TOKENIZE_BYTES_PER_TOKEN)
        return await self.tokenization.for_display(served.embedder.tokenizer, texts, add_special_tokens)

    def info(self) -> dict[str, Any]:
        """Models, their widths and max lengths, the limits and the version (``GET /info``)."""
        first = self.models[self.default_model].embedder
        return {
            "version": __version__,
            "model_id": self.default_model,
            "model_dtype": "float32",
            "max_input_length": first.max_length,
            "max_client_batch_size": self.config.max_inputs,
            "max_batch_tokens": self.config.max_call_tokens,
            "max_queued_tokens": self.config.max_queued_tokens,
            "max_body_bytes": self.config.max_body_bytes,
            "auto_truncate": self.config.auto_truncate,
            "cache_bytes": self.config.cache_bytes,
            "models": [
                {
                    "id": name,
                    "kind": served.kind,
                    "outputs": list(served.outputs),
                    "path": str(served.embedder.model_dir),
                    **served.describe(),
                    "providers": served.embedder.providers,
                }
                for name, served in self.models.items()
            ],
        }

    def health(self) -> str | None:
        """None when healthy; else why not (draining, or an engine stuck or dead)."""
        if self.draining:
            return "draining: the server is shutting down"
        stuck = stuck_queues([s.queue for s in self.models.values()], self.config.stuck_after)
        if stuck:
            return f"engine stuck or stopped for model(s): {', '.join(stuck)}"
        return None

    # -- shutdown --------------------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Refuse new requests from now on; queued work still runs."""
        self.draining = True

    def abandon(self, reason: str) -> int:
        """Fail the work of every request still in flight with 503 ``Draining(reason)`` (the drain's
        deadline); returns how many requests' work was cut off."""
        return sum(s.queue.abandon(Draining(reason, code="drain_deadline")) for s in self.models.values())

    def close(self, timeout: float) -> bool:
        """Stop the engine threads once their queues are empty; True if all stopped within ``timeout``."""
        self.tokenization.close()
        for served in self.models.values():
            served.queue.close()
        deadline = time.monotonic() + timeout
        return all(s.queue.join(max(0.0, deadline - time.monotonic())) for s in self.models.values())
