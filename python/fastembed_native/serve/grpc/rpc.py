"""The edge of the gRPC transport: method handlers built from the proto descriptors, which parse the
request bytes themselves, turn every :class:`ApiError` into its status code once, count each call in
the metrics, and run bidirectional streams in order with a bounded number of inputs in flight.

Requests are parsed here rather than by grpc's deserializer because grpc answers a message that does
not parse (corrupt bytes, a string field that is not UTF-8) with UNKNOWN; here it is INVALID_ARGUMENT
naming the message type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from ..errors import ApiError, BadRequest, EngineFailure
from ..limits import RequestBudget, acquire_waiting, charged
from ..metrics import Metrics

log = logging.getLogger("fastembed_native.serve")

Req = TypeVar("Req", bound=Message)
Res = TypeVar("Res", bound=Message)
#: A unary behaviour: (request message, context) -> response message.
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]
#: A streaming behaviour: (request messages, context) -> response messages.
Streaming = Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Message]]
#: A client-streaming behaviour: request messages in, one response (TEI's RerankStream).
Gathering = Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Message]]


def parse(message_type: type[Req], data: bytes, where: str = "the request") -> Req:
    """``data`` as ``message_type``, or a BadRequest naming the type and what is wrong."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        name = message_type.DESCRIPTOR.full_name
        raise BadRequest(f"{where} is not a valid {name} message: {exc}") from None


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    """End the call with ``error``'s status code and message; its HTTP headers (retry-after-ms)
    travel as trailing metadata."""
    metadata = tuple((key.lower(), value) for key, value in error.headers.items())
    await context.abort(grpc.StatusCode[error.grpc_code], error.message, trailing_metadata=metadata)


class _Call:
    """One call's status for the metrics (route = the method's path, status = the code's name)."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self.metrics = metrics
        self.method = method
        self.start = time.perf_counter()
        self.code = "OK"

    def failed(self, error: ApiError) -> ApiError:
        self.code = error.grpc_code
        return error

    def unexpected(self, exc: Exception) -> ApiError:
        log.exception("unexpected error in %s", self.method)
        return self.failed(EngineFailure(f"internal error: {type(exc).__name__}"))

    def done(self) -> None:
        self.metrics.requests.labels(self.method, self.code).inc()
        self.metrics.request_seconds.labels(self.method).observe(time.perf_counter() - self.start)


def unary_handler(
    method: str,
    request_type: type[Message],
    behavior: Unary,
    metrics: Metrics,
    budget: RequestBudget | None = None,
) -> Any:
    """A unary-unary handler: bytes in, ``behavior``, bytes out, errors as status codes. With
    ``budget``, the call is charged its message (and its answer) first, or refused RESOURCE_EXHAUSTED."""

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = _Call(metrics, method)
        try:
            try:
                if budget is None:
                    response = await behavior(parse(request_type, data), context)
                else:
                    with charged(budget, len(data)):
                        response = await behavior(parse(request_type, data), context)
                return response.SerializeToString()
            except ApiError as exc:
                error = call.failed(exc)
            except asyncio.CancelledError:  # the client cancelled: service.embed dropped its work
                call.code = "CANCELLED"
                raise
            except Exception as exc:
                error = call.unexpected(exc)
            await abort(context, error)
            raise AssertionError("context.abort returned")  # it raises; this keeps type checkers honest
        finally:
            call.done()

    return grpc.unary_unary_rpc_method_handler(handle)


async def _parsed(requests: AsyncIterator[bytes], request_type: type[Message]) -> AsyncIterator[Message]:
    """A stream's messages parsed; a bad one names its 0-based position."""
    index = 0
    async for data in requests:
        yield parse(request_type, data, f"stream message {index}")
        index += 1


def stream_handler(method: str, request_type: type[Message], behavior: Streaming, metrics: Metrics) -> Any:
    """A stream-stream handler: each request message parsed (a bad one names its 0-based position),
    each response serialized, and the first error ends the stream with its status code."""

    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        call = _Call(metrics, method)

        try:
            try:
                async for response in behavior(_parsed(requests, request_type), context):
                    yield response.SerializeToString()
                return
            except ApiError as exc:
                error = call.failed(exc)
            except asyncio.CancelledError:
                call.code = "CANCELLED"
                raise
            except Exception as exc:
                error = call.unexpected(exc)
            await abort(context, error)
        finally:
            call.done()

    return grpc.stream_stream_rpc_method_handler(handle)


def gather_handler(method: str, request_type: type[Message], behavior: Gathering, metrics: Metrics) -> Any:
    """A stream-unary handler: request messages parsed (a bad one names its position), one
    response, errors as status codes. The behaviour bounds what it gathers."""

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        call = _Call(metrics, method)

        try:
            try:
                return (await behavior(_parsed(requests, request_type), context)).SerializeToString()
            except ApiError as exc:
                error = call.failed(exc)
            except asyncio.CancelledError:
                call.code = "CANCELLED"
                raise
            except Exception as exc:
                error = call.unexpected(exc)
            await abort(context, error)
            raise AssertionError("context.abort returned")
        finally:
            call.done()

    return grpc.stream_unary_rpc_method_handler(handle)


def service_handler(
    service: ServiceDescriptor,
    behaviors: Mapping[str, Unary | Streaming | Gathering],
    metrics: Metrics,
    budget: RequestBudget | None = None,
) -> grpc.GenericRpcHandler:
    """Handlers for every method of ``service`` (unary, bidirectional or client streaming); unary
    calls are charged to ``budget`` (streams charge theirs message by message, see :class:`Window`,
    or as they gather).

    Raises:
        ValueError: a method of the proto has no behaviour, or a behaviour names no method.
    """
    methods: dict[str, MethodDescriptor] = dict(service.methods_by_name)
    if set(methods) != set(behaviors):
        raise ValueError(
            f"{service.full_name}: the proto declares {sorted(methods)}, the servicer implements {sorted(behaviors)}"
        )
    handlers = {}
    for name, descriptor in methods.items():
        path = f"/{service.full_name}/{name}"
        request_type = GetMessageClass(descriptor.input_type)
        if descriptor.client_streaming and descriptor.server_streaming:
            handlers[name] = stream_handler(path, request_type, behaviors[name], metrics)  # type: ignore[arg-type]
        elif not descriptor.client_streaming and not descriptor.server_streaming:
            handlers[name] = unary_handler(path, request_type, behaviors[name], metrics, budget)  # type: ignore[arg-type]
        elif descriptor.client_streaming:
            handlers[name] = gather_handler(path, request_type, behaviors[name], metrics)  # type: ignore[arg-type]
        else:
            raise ValueError(f"{path}: server-streaming methods are not served")
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class Window:
    """What a stream has in flight, in one or more measures (inputs, bytes): ``acquire`` waits while
    any measure would pass its limit (one message is always let through, however big).

    With ``budget``, the last measure (bytes) is also charged to the server's budget of requests in
    flight, waiting while that is full."""

    def __init__(self, *limits: int, budget: RequestBudget | None = None) -> None:
        self.limits = limits
        self.used = [0] * len(limits)
        self.budget = budget
        self._changed = asyncio.Condition()

    def _fits(self, sizes: tuple[int, ...]) -> bool:
        if not any(self.used):
            return True
        return all(used + n <= limit for used, n, limit in zip(self.used, sizes, self.limits, strict=True))

    async def acquire(self, sizes: tuple[int, ...]) -> None:
        if self.budget is not None:
            await acquire_waiting(self.budget, sizes[-1])
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self._fits(sizes))
                self.used = [used + n for used, n in zip(self.used, sizes, strict=True)]
        except BaseException:  # cancelled while waiting: what the budget gave goes back
            if self.budget is not None:
                self.budget.release(sizes[-1])
            raise

    async def release(self, sizes: tuple[int, ...]) -> None:
        if self.budget is not None:
            self.budget.release(sizes[-1])
        async with self._changed:
            self.used = [used - n for used, n in zip(self.used, sizes, strict=True)]
            self._changed.notify_all()

    def release_all(self) -> None:
        """Hand back to the budget what is still held (the stream ended with messages in flight)."""
        if self.budget is not None:
            self.budget.release(self.used[-1])
        self.used = [0] * len(self.used)


async def ordered(
    requests: AsyncIterator[Req],
    work: Callable[[Req], Awaitable[Res]],
    size: Callable[[Req], int | tuple[int, ...]],
    limit: int | Window,
) -> AsyncIterator[Res]:
    """``work`` on each request concurrently, the results in request order.

    At most ``limit`` (a number of inputs, or a :class:`Window` of inputs and bytes) is in flight,
    ``size`` of each request counted until its response is written: past that the stream is not
    read, so HTTP/2 flow control holds the sender back, and a client that reads slowly holds back
    the reading too. Requests keep being read while earlier ones
    run, so a client that waits for each answer before sending the next works as well.
    The first failure (of ``work`` or of reading) ends the stream after the results before it, an
    ApiError's message prefixed with the request's 0-based position; on any exit, work still in
    flight is cancelled (which drops its queued inputs).
    """
    window = limit if isinstance(limit, Window) else Window(limit)
    pending: asyncio.Queue[tuple[asyncio.Future[Res], tuple[int, ...]] | BaseException | None] = (
        asyncio.Queue()
    )
    tasks: set[asyncio.Future[Res]] = set()

    async def read() -> None:
        try:
            async for index, request in _enumerate(requests):
                measured = size(request)
                n = measured if isinstance(measured, tuple) else (max(1, measured),)
                await window.acquire(n)
                task = asyncio.ensure_future(_numbered(work(request), index))
                task.add_done_callback(_retrieve)
                tasks.add(task)
                pending.put_nowait((task, n))
        except Exception as exc:  # a message that does not parse, or the stream broke
            pending.put_nowait(exc)
            return
        pending.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while True:
            item = await pending.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            task, n = item
            result = await task
            tasks.discard(task)
            yield result
            await window.release(n)
    finally:
        reader.cancel()
        for task in tasks:
            task.cancel()
        window.release_all()


async def _enumerate(items: AsyncIterator[Req]) -> AsyncIterator[tuple[int, Req]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


async def _numbered(work: Awaitable[Res], index: int) -> Res:
    """``work``, its ApiError saying which message of a long stream it came from."""
    try:
        return await work
    except ApiError as exc:
        exc.message = f"stream message {index}: {exc.message}"
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a stream task's failure as seen: the stream reports only its first one."""
    if not task.cancelled():
        task.exception()
