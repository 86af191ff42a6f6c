"""The gRPC server: our services and TEI's, health and reflection on a ``grpc.aio`` server that runs
on the HTTP server's event loop, an API-key check, a helpful UNIMPLEMENTED for methods not served,
and the drain on SIGTERM (health NOT_SERVING, no new calls, in-flight calls finish)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..config import CLOSE_GRACE_SECONDS
from ..errors import ApiError, Unauthorized, quote_input
from ..service import EmbeddingService
from . import fastembed_pb2, tei_pb2
from .rpc import abort, service_handler
from .servicers import EmbedderServicer, TEIServicers

#: Methods answered without the API key, for load balancers (as HTTP's /health).
_OPEN_PREFIX = "/grpc.health.v1.Health/"


def served_services() -> list[str]:
    """Full names of the services this transport serves (health and reflection included)."""
    ours = [fastembed_pb2.DESCRIPTOR.services_by_name["Embedder"]]
    ours += list(tei_pb2.DESCRIPTOR.services_by_name.values())
    return [s.full_name for s in ours] + [health.SERVICE_NAME, reflection.SERVICE_NAME]


def served_methods() -> frozenset[str]:
    """Paths (``/package.Service/Method``) of every method this transport serves."""
    services = [fastembed_pb2.DESCRIPTOR.services_by_name["Embedder"]]
    services += list(tei_pb2.DESCRIPTOR.services_by_name.values())
    services += [health_pb2.DESCRIPTOR.services_by_name["Health"]]
    paths = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    return frozenset(paths | {f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"})


_SERVED_METHODS = served_methods()
#: The tei.v1 methods served, as ``Service/Method``.
_TEI_METHODS = [f"{s.name}/{m.name}" for s in tei_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods]


def metric_label(method: str) -> str:
    """``method`` as a metrics label: itself when served, else "unknown" (a client choosing method
    names must not make one series each)."""
    return method if method in _SERVED_METHODS else "unknown"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health needs ``authorization: Bearer <key>`` metadata, the same key as HTTP."""

    def __init__(self, key: str, service: EmbeddingService) -> None:
        self._key = key.encode()
        self._service = service

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_PREFIX) or self._allowed(details):
            return handler
        return _refusing(
            handler,
            metric_label(details.method),
            Unauthorized(
                "missing or wrong API key: send the metadata 'authorization: Bearer <key>'",
                code="invalid_api_key",
            ),
            self._service,
        )

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key):
                    return True
        return False


def _refusing(handler: Any, method: str, error: ApiError, service: EmbeddingService) -> Any:
    """A handler of the same kind as ``handler`` that answers ``error`` without reading the request."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        service.metrics.requests.labels(method, error.grpc_code).inc()
        await abort(context, error)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _NotServed(grpc.GenericRpcHandler):
    """The last handler asked: any method nobody serves gets UNIMPLEMENTED with what is served
    (grpc's own answer is a bare 'Method not found!')."""

    def __init__(self, services: Sequence[str]) -> None:
        self._services = services

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = quote_input(details.method)  # the client's choice: quoted at a bounded length
        package = details.method.lstrip("/").split(".", 1)[0]
        if package == "tei":
            served = ", ".join(_TEI_METHODS)
            message = f"{method} is not served by fastembed-native; of tei.v1 it serves {served}"
        else:
            message = f"no method {method} here; services: {', '.join(self._services)}"

        async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        # A bidirectional handler that reads nothing answers every kind of call alike.
        return grpc.stream_stream_rpc_method_handler(refuse)


class ServiceHealth(health.aio.HealthServicer):
    """The standard health service, which also reports NOT_SERVING while an engine is stuck or the
    server drains (what HTTP's /health checks), not only what was set at start."""

    def __init__(self, service: EmbeddingService) -> None:
        super().__init__()
        self._service = service

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        response = await super().Check(request, context)
        if response.status == health_pb2.HealthCheckResponse.SERVING and self._service.health() is not None:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response


class GrpcTransport:
    """The gRPC server of one :class:`EmbeddingService`. Create and use it on the running event loop."""

    def __init__(self, service: EmbeddingService, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        metrics = service.metrics
        config = service.config
        interceptors = [ApiKeyInterceptor(config.api_key, service)] if config.api_key else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_connections,  # more calls get RESOURCE_EXHAUSTED at once
            options=[
                ("grpc.max_receive_message_length", config.grpc_max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # Without this, grpc binds with SO_REUSEPORT and a second server on a busy port
                # starts silently and shares its traffic.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = ServiceHealth(service)
        embedder = EmbedderServicer(service)
        handlers = [
            service_handler(
                fastembed_pb2.DESCRIPTOR.services_by_name["Embedder"],
                embedder.behaviors(),
                metrics,
                service.budget,
            )
        ]
        for name, behaviors in TEIServicers(service).behaviors().items():
            handler = service_handler(
                tei_pb2.DESCRIPTOR.services_by_name[name], behaviors, metrics, service.budget
            )
            handlers.append(handler)
        self.server.add_generic_rpc_handlers(handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.services = served_services()
        reflection.enable_server_reflection(self.services, self.server)
        self.server.add_generic_rpc_handlers([_NotServed(self.services)])
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen and serve; returns the port (the one chosen when asked for port 0).

        Raises:
            OSError: the address cannot be bound (in use, or not this machine's).
        """
        address = f"{self.host}:{self.requested_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen for gRPC on {address}")
        await self.server.start()
        for name in ("", *self.services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def begin_drain(self) -> None:
        """From now on: health NOT_SERVING, no new calls; in-flight calls get ``drain_seconds`` to
        finish. Safe to call more than once; call on the event loop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        self.service.start_draining()
        await self.health.enter_graceful_shutdown()
        # Longer than the drain: at its deadline the HTTP server's drain cuts unfinished work off
        # with UNAVAILABLE (serve/server.py), which must reach the clients before grpc cancels.
        await self.server.stop(self.service.config.drain_seconds + CLOSE_GRACE_SECONDS)

    async def stop(self) -> None:
        """Drain (if not begun) and wait until the server has stopped."""
        self.begin_drain()
        assert self._stopping is not None
        await self._stopping
