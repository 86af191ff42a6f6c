"""The gRPC services as translations: protobuf messages to
:class:`~fastembed_native.serve.service.EmbedRequest` and back. Validation, batching, limits and
cancellation all live in :class:`~fastembed_native.serve.service.EmbeddingService`, as for HTTP.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ..errors import BadRequest, Overloaded, PayloadTooLarge
from ..limits import charged
from ..rerank import RerankRequest, RerankResult
from ..service import EmbeddingService, EmbedRequest, EmbedResult
from ..sparse import MultiVectorRequest, SparseRequest, SparseResult
from . import fastembed_pb2 as v1
from . import tei_pb2 as tei
from .rpc import Gathering, Streaming, Unary, Window, ordered

Context = grpc.aio.ServicerContext
T = TypeVar("T")

#: How long a stream waits for room in a full queue when the refusal names no retry time (ms).
_DEFAULT_RETRY_MS = 100


def stream_window(service: EmbeddingService) -> Window:
    """What one stream keeps in flight: as many inputs and as many bytes as one maximal ``Embed``
    call may carry (``--max-inputs``, ``--grpc-max-message-bytes``), its bytes charged to the
    server's budget of requests in flight too."""
    return Window(service.config.max_inputs, service.config.grpc_max_message_bytes, budget=service.budget)


def _v1_size(message: v1.EmbedRequest) -> tuple[int, int]:
    return len(message.inputs), message.ByteSize()


def _tei_size(message: tei.EmbedRequest | tei.EmbedSparseRequest | tei.EncodeRequest) -> tuple[int, int]:
    return 1, message.ByteSize()


async def waiting(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` (a service call), again after waiting (as the refusal's retry-after-ms says) while
    the queue is full: a stream is one long job, which a full queue should slow down, not end."""
    while True:
        try:
            return await call()
        except Overloaded as exc:
            await asyncio.sleep(int(exc.headers.get("retry-after-ms", _DEFAULT_RETRY_MS)) / 1000)


async def embed_waiting(service: EmbeddingService, request: EmbedRequest) -> EmbedResult:
    """``service.embed``, waiting while the queue is full (see :func:`waiting`)."""
    return await waiting(lambda: service.embed(request))


def _timings(t: Any) -> v1.Timings:
    return v1.Timings(
        total_ns=_ns(t.total),
        tokenization_ns=_ns(t.tokenize),
        queue_ns=_ns(t.queue),
        inference_ns=_ns(t.inference),
    )


def _input_type(value: int) -> str:
    """An ``InputType`` as the service's ``input_type``.

    Raises:
        BadRequest: not a value of the enum (a newer client's, or a raw number).
    """
    if value not in v1.InputType.values():
        raise BadRequest(f"input_type {value} is not an InputType", param="input_type")
    return "query" if value == v1.INPUT_TYPE_QUERY else "document"


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class EmbedderServicer:
    """``fastembed_native.v1.Embedder``: batched Embed, EmbedStream, ListModels, Info."""

    def __init__(self, service: EmbeddingService) -> None:
        self.service = service

    def behaviors(self) -> dict[str, Unary | Streaming]:
        return {
            "Embed": self.embed,
            "EmbedStream": self.embed_stream,
            "Rerank": self.rerank,
            "EmbedSparse": self.embed_sparse,
            "EmbedMultiVector": self.embed_multi_vector,
            "ListModels": self.list_models,
            "Info": self.info,
        }

    @staticmethod
    def request(message: v1.EmbedRequest) -> EmbedRequest:
        """The service's request; unset optional fields take the model's or server's default."""
        return EmbedRequest(
            inputs=list(message.inputs),
            model=message.model or None,
            truncate=message.truncate if message.HasField("truncate") else None,
            normalize=message.normalize if message.HasField("normalize") else None,
            dimensions=message.dimensions if message.HasField("dimensions") else None,
            prompt_name=message.prompt_name or None,
        )

    @staticmethod
    def response(result: EmbedResult) -> v1.EmbedResponse:
        vectors = result.vectors
        t = result.timings
        return v1.EmbedResponse(
            model=result.model,
            count=vectors.shape[0],
            dimensions=vectors.shape[1],
            vectors=vectors.astype("<f4", copy=False).tobytes(),
            usage=v1.Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            timings=v1.Timings(
                total_ns=_ns(t.total),
                tokenization_ns=_ns(t.tokenize),
                queue_ns=_ns(t.queue),
                inference_ns=_ns(t.inference),
            ),
        )

    async def embed(self, message: v1.EmbedRequest, context: Context) -> v1.EmbedResponse:
        return self.response(await self.service.embed(self.request(message)))

    async def embed_stream(
        self, messages: AsyncIterator[v1.EmbedRequest], context: Context
    ) -> AsyncIterator[v1.EmbedResponse]:
        async def work(message: v1.EmbedRequest) -> v1.EmbedResponse:
            return self.response(await embed_waiting(self.service, self.request(message)))

        async for response in ordered(messages, work, _v1_size, stream_window(self.service)):
            yield response

    async def rerank(self, message: v1.RerankRequest, context: Context) -> v1.RerankResponse:
        request = RerankRequest(
            query=message.query,
            documents=list(message.documents),
            model=message.model or None,
            top_n=message.top_n if message.HasField("top_n") else None,
            raw_scores=message.raw_scores,
            return_documents=message.return_documents,
            instruction=message.instruction if message.HasField("instruction") else None,
        )
        result = await self.service.rerank(request)
        t = result.timings
        return v1.RerankResponse(
            model=result.model,
            results=[
                v1.RankedDocument(
                    index=int(i),
                    score=float(result.scores[i]),
                    document=result.documents[i] if message.return_documents else None,
                )
                for i in result.order
            ],
            usage=v1.Usage(prompt_tokens=result.tokens, total_tokens=result.tokens),
            timings=v1.Timings(
                total_ns=_ns(t.total),
                tokenization_ns=_ns(t.tokenize),
                queue_ns=_ns(t.queue),
                inference_ns=_ns(t.inference),
            ),
        )

    async def embed_sparse(self, message: v1.EmbedSparseRequest, context: Context) -> v1.EmbedSparseResponse:
        request = SparseRequest(
            inputs=list(message.inputs),
            model=message.model or None,
            truncate=message.truncate if message.HasField("truncate") else None,
            prompt_name=message.prompt_name or None,
            input_type=_input_type(message.input_type),
        )
        result = await self.service.embed_sparse(request)
        return v1.EmbedSparseResponse(
            model=result.model,
            dimensions=self.service.models[result.model].sparse_width(),
            embeddings=[
                v1.SparseVector(indices=v.indices.tolist(), values=v.values.tolist()) for v in result.vectors
            ],
            usage=v1.Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            timings=_timings(result.timings),
        )

    async def embed_multi_vector(
        self, message: v1.EmbedMultiVectorRequest, context: Context
    ) -> v1.EmbedMultiVectorResponse:
        request = MultiVectorRequest(
            list(message.inputs), message.model or None, _input_type(message.input_type)
        )
        result = await self.service.embed_multi_vector(
            request, "base64"
        )  # bytes: 4 per float, as base64 is charged
        return v1.EmbedMultiVectorResponse(
            model=result.model,
            dimensions=result.dim,
            embeddings=[
                v1.MultiVector(
                    rows=len(v), dimensions=result.dim, vectors=v.astype("<f4", copy=False).tobytes()
                )
                for v in result.vectors
            ],
            usage=v1.Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            timings=_timings(result.timings),
        )

    def _models(self) -> list[v1.ModelInfo]:
        models = []
        for name, served in self.service.models.items():
            facts = served.describe()
            models.append(
                v1.ModelInfo(
                    id=name,
                    kind=served.kind,
                    dimensions=facts["dim"],
                    max_length=facts["max_length"],
                    pooling=facts["pooling"],
                    normalize=facts["normalize"],
                    prompts=facts["prompts"],
                    query_length=facts.get("query_length", 0),
                    outputs=served.outputs,
                )
            )
        return models

    async def list_models(self, message: v1.ListModelsRequest, context: Context) -> v1.ListModelsResponse:
        return v1.ListModelsResponse(models=self._models())

    async def info(self, message: v1.InfoRequest, context: Context) -> v1.InfoResponse:
        config = self.service.config
        return v1.InfoResponse(
            version=self.service.info()["version"],
            default_model=self.service.default_model,
            models=self._models(),
            max_inputs=config.max_inputs,
            max_call_tokens=config.max_call_tokens,
            max_queued_tokens=config.max_queued_tokens,
            max_message_bytes=config.grpc_max_message_bytes,
            auto_truncate=config.auto_truncate,
        )


class TEIServicers:
    """text-embeddings-inference's ``tei.v1`` Info, Embed and Tokenize services, on the default model."""

    def __init__(self, service: EmbeddingService) -> None:
        self.service = service

    def behaviors(self) -> dict[str, dict[str, Unary | Streaming | Gathering]]:
        """Per service name (as in the proto), its methods."""
        return {
            "Info": {"Info": self.info},
            "Embed": {
                "Embed": self.embed,
                "EmbedStream": self.embed_stream,
                "EmbedSparse": self.embed_sparse,
                "EmbedSparseStream": self.embed_sparse_stream,
            },
            "Rerank": {"Rerank": self.rerank, "RerankStream": self.rerank_stream},
            "Tokenize": {"Tokenize": self.tokenize, "TokenizeStream": self.tokenize_stream},
        }

    async def info(self, message: tei.InfoRequest, context: Context) -> tei.InfoResponse:
        info = self.service.info()
        config = self.service.config
        max_length = max(1, info["max_input_length"])
        return tei.InfoResponse(
            version=info["version"],
            model_id=info["model_id"],
            model_dtype=info["model_dtype"],
            model_type=tei.MODEL_TYPE_EMBEDDING,
            max_concurrent_requests=min(2**32 - 1, config.max_queued_tokens // max_length),
            max_input_length=info["max_input_length"],
            max_batch_tokens=config.max_call_tokens,
            max_client_batch_size=config.max_inputs,
            tokenization_workers=os.cpu_count() or 1,
        )

    @staticmethod
    def request(message: tei.EmbedRequest) -> EmbedRequest:
        if message.truncation_direction != tei.TRUNCATION_DIRECTION_RIGHT:
            raise BadRequest(
                "truncation_direction LEFT is not supported; inputs are truncated on the right",
                param="truncation_direction",
            )
        return EmbedRequest(
            inputs=[message.inputs],
            truncate=True if message.truncate else None,
            normalize=message.normalize,
            prompt_name=message.prompt_name if message.HasField("prompt_name") else None,
        )

    @staticmethod
    def response(message: tei.EmbedRequest, result: EmbedResult) -> tei.EmbedResponse:
        t = result.timings
        return tei.EmbedResponse(
            embeddings=result.vectors[0].tolist(),
            metadata=tei.Metadata(
                compute_chars=len(message.inputs),
                compute_tokens=result.prompt_tokens,
                total_time_ns=_ns(t.total),
                tokenization_time_ns=_ns(t.tokenize),
                queue_time_ns=_ns(t.queue),
                inference_time_ns=_ns(t.inference),
            ),
        )

    async def embed(self, message: tei.EmbedRequest, context: Context) -> tei.EmbedResponse:
        return self.response(message, await self.service.embed(self.request(message)))

    async def embed_stream(
        self, messages: AsyncIterator[tei.EmbedRequest], context: Context
    ) -> AsyncIterator[tei.EmbedResponse]:
        async def work(message: tei.EmbedRequest) -> tei.EmbedResponse:
            return self.response(message, await embed_waiting(self.service, self.request(message)))

        async for response in ordered(messages, work, _tei_size, stream_window(self.service)):
            yield response

    @staticmethod
    def sparse_request(message: tei.EmbedSparseRequest) -> SparseRequest:
        if message.truncation_direction != tei.TRUNCATION_DIRECTION_RIGHT:
            raise BadRequest(
                "truncation_direction LEFT is not supported; inputs are truncated on the right",
                param="truncation_direction",
            )
        return SparseRequest(
            inputs=[message.inputs],
            truncate=True if message.truncate else None,
            prompt_name=message.prompt_name if message.HasField("prompt_name") else None,
        )

    @staticmethod
    def sparse_response(message: tei.EmbedSparseRequest, result: SparseResult) -> tei.EmbedSparseResponse:
        vector = result.vectors[0]
        t = result.timings
        return tei.EmbedSparseResponse(
            sparse_embeddings=[
                tei.SparseValue(index=i, value=v)
                for i, v in zip(vector.indices.tolist(), vector.values.tolist(), strict=True)
            ],
            metadata=tei.Metadata(
                compute_chars=len(message.inputs),
                compute_tokens=result.prompt_tokens,
                total_time_ns=_ns(t.total),
                tokenization_time_ns=_ns(t.tokenize),
                queue_time_ns=_ns(t.queue),
                inference_time_ns=_ns(t.inference),
            ),
        )

    async def embed_sparse(
        self, message: tei.EmbedSparseRequest, context: Context
    ) -> tei.EmbedSparseResponse:
        return self.sparse_response(message, await self.service.embed_sparse(self.sparse_request(message)))

    async def embed_sparse_stream(
        self, messages: AsyncIterator[tei.EmbedSparseRequest], context: Context
    ) -> AsyncIterator[tei.EmbedSparseResponse]:
        async def work(message: tei.EmbedSparseRequest) -> tei.EmbedSparseResponse:
            request = self.sparse_request(message)
            return self.sparse_response(message, await waiting(lambda: self.service.embed_sparse(request)))

        async for response in ordered(messages, work, _tei_size, stream_window(self.service)):
            yield response

    async def rerank(self, message: tei.RerankRequest, context: Context) -> tei.RerankResponse:
        _check_direction(message.truncation_direction)
        request = RerankRequest(
            message.query, list(message.texts), raw_scores=message.raw_scores, truncate=_truncate(message)
        )
        return _ranks(await self.service.rerank(request), message.return_text, len(message.query))

    async def rerank_stream(
        self, messages: AsyncIterator[tei.RerankStreamRequest], context: Context
    ) -> tei.RerankResponse:
        """The texts of the whole stream against the first message's query: at most --max-inputs
        texts and --grpc-max-message-bytes in all (what one Rerank message may carry), charged to
        the server's budget of requests in flight while they are scored."""
        config = self.service.config
        first: tei.RerankStreamRequest | None = None
        texts: list[str] = []
        size = 0
        async for message in messages:
            _check_direction(message.truncation_direction)
            first = first or message
            texts.append(message.text)
            size += message.ByteSize()
            if len(texts) > config.max_inputs or size > config.grpc_max_message_bytes:
                raise PayloadTooLarge(
                    f"the stream carries more than {config.max_inputs} texts or {config.grpc_max_message_bytes} "
                    "bytes (--max-inputs, --grpc-max-message-bytes); send several streams",
                    param="text",
                    code="too_many_inputs",
                )
        if first is None:
            raise BadRequest("the stream sent no message; send one text per message", param="text")
        with charged(self.service.budget, size):
            request = RerankRequest(
                first.query, texts, raw_scores=first.raw_scores, truncate=_truncate(first)
            )
            return _ranks(await self.service.rerank(request), first.return_text, len(first.query))

    async def _encode(self, message: tei.EncodeRequest) -> tei.EncodeResponse:
        prompt = message.prompt_name if message.HasField("prompt_name") else None
        tokens = (await self.service.tokenize([message.inputs], None, message.add_special_tokens, prompt))[0]
        return tei.EncodeResponse(tokens=[_simple_token(token) for token in tokens])

    async def tokenize(self, message: tei.EncodeRequest, context: Context) -> tei.EncodeResponse:
        return await self._encode(message)

    async def tokenize_stream(
        self, messages: AsyncIterator[tei.EncodeRequest], context: Context
    ) -> AsyncIterator[tei.EncodeResponse]:
        async for response in ordered(messages, self._encode, _tei_size, stream_window(self.service)):
            yield response


def _check_direction(direction: int) -> None:
    if direction != tei.TRUNCATION_DIRECTION_RIGHT:
        raise BadRequest(
            "truncation_direction LEFT is not supported; pairs are cut longest-first on the right",
            param="truncation_direction",
        )


def _truncate(message: tei.RerankRequest | tei.RerankStreamRequest) -> bool | None:
    """A TEI rerank message's ``truncate``: true cuts over-long pairs; false, which proto3 cannot
    tell from unset, follows the server's setting (cut unless --no-auto-truncate), as for Embed."""
    return True if message.truncate else None


def _ranks(result: RerankResult, return_text: bool, query_chars: int) -> tei.RerankResponse:
    t = result.timings
    return tei.RerankResponse(
        ranks=[
            tei.Rank(
                index=int(i), score=float(result.scores[i]), text=result.documents[i] if return_text else None
            )
            for i in result.order
        ],
        metadata=tei.Metadata(
            compute_chars=query_chars * len(result.documents) + sum(len(d) for d in result.documents),
            compute_tokens=result.tokens,
            total_time_ns=_ns(t.total),
            tokenization_time_ns=_ns(t.tokenize),
            queue_time_ns=_ns(t.queue),
            inference_time_ns=_ns(t.inference),
        ),
    )


def _simple_token(token: dict[str, Any]) -> tei.SimpleToken:
    out = tei.SimpleToken(id=token["id"], text=token["text"], special=token["special"])
    if token["start"] is not None:
        out.start = token["start"]
        out.stop = token["stop"]
    return out
