"""Running the server: uvicorn (and, with a gRPC port, the gRPC server) on one event loop, the engines
on their own threads, and a drain on SIGTERM: new requests get 503 while in-flight requests finish
(for at most ``drain_seconds``), work still unfinished then gets 503 too, and the process exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from .config import CLOSE_GRACE_SECONDS, ServeConfig
from .http import create_asgi
from .limits import http_protocol, raise_open_files_limit
from .service import EmbeddingService

if TYPE_CHECKING:
    from .grpc.transport import GrpcTransport

log = logging.getLogger("fastembed_native.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which marks the service draining the moment a stop signal arrives, so
    requests get 503 and /health turns unhealthy, and keeps listening while in-flight work finishes
    (a load balancer sees 503s, not refused connections). At ``drain_seconds`` the work still
    unfinished is cut off with 503; then uvicorn closes the socket and the connections.

    With ``grpc_port``, the gRPC server runs on the same loop, starts before HTTP and drains with it."""

    def __init__(
        self, config: uvicorn.Config, service: EmbeddingService, grpc_port: int | None = None
    ) -> None:
        super().__init__(config)
        self.service = service
        self.grpc_port = grpc_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc: GrpcTransport | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.start_draining()
        if self._grpc is not None and self._loop is not None:
            # A signal handler runs between two bytecodes of whatever the loop was doing: hand over.
            self._loop.call_soon_threadsafe(self._grpc.begin_drain)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        service = self.service
        service.start_draining()
        limit = service.config.drain_seconds
        start = time.monotonic()
        in_flight = service.in_flight
        _say(
            f"draining: {in_flight} request(s) in flight get up to {limit:g} s (--drain-seconds); "
            "new requests get 503"
        )
        while service.in_flight and not self.force_exit and time.monotonic() - start < limit:
            await asyncio.sleep(0.05)
        cut = service.in_flight
        if cut:
            service.abandon(
                f"the server is shutting down and this request did not finish within --drain-seconds ({limit:g} s)"
            )
        await super().shutdown(sockets)
        _say(
            f"drained in {time.monotonic() - start:.2f} s: {in_flight - cut} request(s) finished, "
            f"{cut} cut off with 503"
        )

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_port is None:
            await super().serve(sockets)
            return
        from .grpc.transport import GrpcTransport

        transport = GrpcTransport(self.service, self.config.host, self.grpc_port)
        try:
            await transport.start()
        except OSError as exc:  # as uvicorn does when its own port is taken: a message and status 1
            print(f"fastembed-native serve: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        self._loop, self._grpc = asyncio.get_running_loop(), transport
        try:
            await super().serve(sockets)
        finally:
            await transport.stop()


def serve(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    grpc_port: int | None = None,
) -> int:
    """Load the models, serve until SIGTERM / SIGINT, drain, and return the exit status (0).

    With ``grpc_port``, gRPC (``serve/grpc``) is served on that port too, from the same event loop
    and the same queues, so requests of both protocols share engine calls."""
    start = time.perf_counter()
    raise_open_files_limit()  # every connection is a file: 1,024 of them should not stop the server
    service = EmbeddingService.load(config)
    server = DrainingServer(
        uvicorn.Config(
            create_asgi(service),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            http=http_protocol(config),  # connection cap, header size and header deadline
            h11_max_incomplete_event_size=config.max_header_bytes,
            timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
            timeout_graceful_shutdown=CLOSE_GRACE_SECONDS,  # type: ignore[arg-type]  # after our drain
            lifespan="on",
        ),
        service,
        grpc_port,
    )
    # uvicorn re-raises the stop signal after its shutdown, to the handler that was there before it;
    # with this one in place that ends in a clean exit 0 instead of death by the default handler.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    ready = time.perf_counter() - start
    names = ", ".join(f"{name} ({s.embedder.dim} dims)" for name, s in service.models.items())
    grpc_note = f" and grpc://{host}:{grpc_port}" if grpc_port is not None else ""
    print(
        f"fastembed-native serve: {names} on http://{host}:{port}{grpc_note} (loaded in {ready:.2f} s)",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    return 0


def _say(text: str) -> None:
    """One line on stderr, as the line that says the server is ready."""
    print(f"fastembed-native serve: {text}", file=sys.stderr, flush=True)


def _ignore(sig: int, frame: FrameType | None) -> None:
    log.info("signal %d after shutdown: exiting", sig)
