"""What bounds the memory clients can make the server hold, and the connections they can keep.

- :class:`RequestBudget`: bytes of requests in flight, all clients together. :class:`Admission`
  charges a request its ``Content-Length`` before reading the body (a chunked body as it streams),
  then its answer's size once the service knows it (:func:`charge_answer`, before any work), and
  holds the charge until the answer is written; a request that does not fit is refused at once (429
  with ``retry-after-ms``). Small requests may use a reserve the large ones cannot, so a query still
  gets in while big batches fill the budget.
- :func:`guarded_protocol`: uvicorn's HTTP protocol with a limit on request-header bytes and a
  deadline for a complete request header (uvicorn itself has neither with httptools).
- :func:`raise_open_files_limit` and :func:`trim_memory`: the process side.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import ctypes.util
import json
import logging
import resource
import threading
from collections.abc import Iterator
from typing import Any

from .config import ServeConfig
from .errors import ApiError, Overloaded

log = logging.getLogger("fastembed_native.serve")

#: Bodies up to this size count as small: they may use the reserve (1/8 of the budget on top).
SMALL_REQUEST_BYTES = 64 * 1024
#: Bytes one input's answer is charged per dimension: a JSON float ("-0.0123456789,") and more.
ANSWER_BYTES_PER_DIMENSION = 16
#: Bytes a ``/tokenize`` answer is charged per token it can hold (the token's dict and its JSON).
TOKENIZE_BYTES_PER_TOKEN = 128


class RequestBudget:
    """Bytes of requests in flight (bodies, their parsed and tokenized forms, their answers).

    Args:
        limit: bytes all requests together may be charged; requests over ``SMALL_REQUEST_BYTES``
            may fill only this much, small ones another eighth of it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserve = limit // 8
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()  # gRPC and HTTP both run on the loop; the lock is for tests

    def try_acquire(self, n: int, small: bool) -> bool:
        """Charge ``n`` bytes if they fit (a request alone is always let in); False if not."""
        with self._lock:
            room = self.limit + (self.reserve if small else 0)
            if self.used and self.used + n > room:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n

    def refusal(self, n: int) -> Overloaded:
        """The error for a request of ``n`` bytes that did not fit."""
        # Requests finish in about a second on a busy CPU server: come back in 0.5-1 s.
        retry_ms = 500 + (n * 500) // max(1, self.limit)
        return Overloaded(
            f"the server holds {self.used} bytes of requests (limit {self.limit}, --max-inflight-bytes); "
            f"this one needs {n}; retry after {retry_ms} ms",
            code="server_busy",
            headers={"retry-after-ms": str(retry_ms), "retry-after": "1"},
        )


class RequestTimeout(ApiError):
    """408: the request body stalled (no bytes for ``--body-timeout`` seconds); the connection closes."""

    status = 408
    grpc_code = "DEADLINE_EXCEEDED"


#: Answers are written in pieces of this size, each waiting for the client to take the one before
#: (uvicorn's flow control), so an answer's charge is held until the client has nearly all of it.
ANSWER_PIECE_BYTES = 256 * 1024
#: After a request of at least this charge ends with nothing else in flight, freed memory is
#: handed back to the system (at most once a second).
TRIM_AFTER_BYTES = 4 * 2**20


class Ticket:
    """One request's charge, which grows as the request learns what it will hold (its body as it
    streams, then its answer)."""

    def __init__(self, budget: RequestBudget) -> None:
        self.budget = budget
        self.charged = 0

    def grow(self, n: int) -> None:
        """Charge ``n`` more bytes, or raise the budget's refusal (429)."""
        if n <= 0:
            return
        if not self.budget.try_acquire(n, small=self.charged + n <= SMALL_REQUEST_BYTES):
            raise self.budget.refusal(self.charged + n)
        self.charged += n


_ticket: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "fastembed_native_ticket", default=None
)


@contextlib.contextmanager
def charged(budget: RequestBudget, n: int) -> Iterator[Ticket]:
    """A ticket of ``n`` bytes (or the budget's refusal, raised) that :func:`charge_answer` grows,
    released on exit: how a gRPC call is charged (its message is in memory already; grpc read it)."""
    ticket = Ticket(budget)
    ticket.grow(n)
    context = _ticket.set(ticket)
    try:
        yield ticket
    finally:
        _ticket.reset(context)
        budget.release(ticket.charged)


async def acquire_waiting(budget: RequestBudget, n: int, poll: float = 0.05) -> None:
    """Charge ``n`` bytes, waiting while the budget is full: a stream is one long job, which a full
    server should slow down (HTTP/2 flow control holds its sender back), not end."""
    while not budget.try_acquire(n, small=n <= SMALL_REQUEST_BYTES):
        await asyncio.sleep(poll)


def charge_answer(n: int, too_large: ApiError | None = None) -> None:
    """Charge the request being served (when it came through :class:`Admission`) ``n`` more bytes
    for its answer, before any work is done for it.

    Raises:
        Overloaded: the budget has no room for it (429, ``retry-after-ms``).
        ApiError: ``too_large``, when given and the request could not fit even with nothing else in
            flight (a retry would never be admitted: the client must send less).
    """
    ticket = _ticket.get()
    if ticket is not None:
        if too_large is not None:
            total = ticket.charged + n
            budget = ticket.budget
            if total > budget.limit + (budget.reserve if total <= SMALL_REQUEST_BYTES else 0):
                raise too_large
        ticket.grow(n)


class Admission:
    """ASGI middleware that charges each request with a body to the server's :class:`RequestBudget`:
    its ``Content-Length`` before reading it (a chunked body as it streams), then its answer once the
    route knows its size (:func:`charge_answer`); refuses it (429) when that does not fit; drops a
    body that stalls for ``body_timeout`` seconds (408); and writes answers in pieces that wait for
    the client (one that takes nothing for ``body_timeout`` seconds is cut off). The charge is held
    until the answer is written, so nothing a client sends or fails to read is held past the budget."""

    def __init__(self, app: Any, budget: RequestBudget, body_timeout: float) -> None:
        self.app = app
        self.budget = budget
        self.body_timeout = body_timeout
        self._last_trim = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        ticket = Ticket(self.budget)
        try:
            ticket.grow(declared or 0)
        except ApiError as refusal:
            # Read the body and drop it, piece by piece, so the client reads the 429 instead of a
            # reset connection (which is what a socket closed on unread data gives it).
            await _discard_body(receive, self.body_timeout)
            await _respond(send, refusal)
            return
        seen = 0
        body_done = False
        timeout = self.body_timeout

        async def receive_charged() -> Any:
            nonlocal seen, body_done
            if body_done:  # after the body only a disconnect comes: wait for it as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"the request body stalled: no bytes for {timeout:g} s (--body-timeout)",
                    code="body_timeout",
                    headers={"connection": "close"},
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if declared is None:  # chunked: charged as it streams
                    ticket.grow(seen - ticket.charged)
            else:
                body_done = True
            return message

        async def send_in_pieces(message: Any) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= ANSWER_PIECE_BYTES:
                await send(message)
                return
            view = memoryview(body)
            more = message.get("more_body", False)
            for start in range(0, len(body), ANSWER_PIECE_BYTES):
                piece = bytes(view[start : start + ANSWER_PIECE_BYTES])
                last = start + ANSWER_PIECE_BYTES >= len(body)
                try:
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": piece, "more_body": more or not last}),
                        timeout,
                    )
                except asyncio.TimeoutError:
                    # The client takes nothing: stop; uvicorn closes a connection whose answer the
                    # app left unfinished.
                    raise _ClientNotReading from None

        context = _ticket.set(ticket)
        try:
            await self.app(scope, receive_charged, send_in_pieces)
        except _ClientNotReading:
            log.info("%s %s: the client read none of its answer for %g s; connection closed",
                     scope["method"], scope["path"], timeout)  # fmt: skip
        finally:
            _ticket.reset(context)
            self.budget.release(ticket.charged)
            if ticket.charged >= TRIM_AFTER_BYTES and self.budget.used == 0:
                self._trim_soon()

    def _trim_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_trim >= 1.0:
            self._last_trim = loop.time()
            loop.run_in_executor(None, trim_memory)


class _ClientNotReading(Exception):
    pass


async def _discard_body(receive: Any, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            message = await asyncio.wait_for(receive(), timeout)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


async def _respond(send: Any, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(
    base: type[asyncio.Protocol], header_timeout: float, max_header_bytes: int, max_connections: int
) -> Any:
    """``base`` (uvicorn's httptools or h11 protocol) that

    - answers a connection beyond ``max_connections`` open ones with 503 (OpenAI's error shape,
      ``retry-after-ms``) and closes it at once, before reading anything;
    - closes a connection which has not sent a complete request header within ``header_timeout``
      seconds of connecting or of its last answer;
    - answers 431 to a request header over ``max_header_bytes``, so a header costs at most about that
      many bytes however long the client makes it.
    """

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _header_bytes: int | None = 0  # bytes of the header being read; None while in a request
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._header_bytes = None
                _write_and_close(transport, 503, "Service Unavailable", _busy_body(max_connections),
                                 b"content-type: application/json\r\nretry-after-ms: 1000\r\nretry-after: 1\r\n")  # fmt: skip
                return
            self._await_header()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._header_bytes is not None:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._header_bytes is not None and self._header_bytes > max_header_bytes:
                self._refuse_header()

        # httptools calls on_headers_complete; h11's handle_events builds the cycle. Both end in
        # a RequestResponseCycle being set up, after which the header is complete.
        def on_headers_complete(self) -> None:
            self._header_done()
            super().on_headers_complete()

        def handle_events(self) -> None:
            super().handle_events()
            if getattr(self, "cycle", None) is not None and not self.cycle.response_complete:
                self._header_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_header()

        def _await_header(self) -> None:
            self._header_bytes = 0
            self._stop_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _header_done(self) -> None:
            self._header_bytes = None
            self._stop_timer()

        def _stop_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self._header_bytes is not None and not self.transport.is_closing():
                self.transport.close()

        def _refuse_header(self) -> None:
            self._header_done()
            body = f"the request header is over {max_header_bytes} bytes (--max-header-bytes)".encode()
            _write_and_close(self.transport, 431, "Request Header Fields Too Large", body,
                             b"content-type: text/plain; charset=utf-8\r\n")  # fmt: skip

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def _busy_body(max_connections: int) -> bytes:
    message = f"the server has {max_connections} connections open (--max-connections); retry after 1000 ms"
    error = {"message": message, "type": "service_unavailable", "param": None, "code": "too_many_connections"}
    return json.dumps({"error": error}).encode()


def _write_and_close(transport: Any, status: int, reason: str, body: bytes, headers: bytes) -> None:
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + headers
        + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )  # fmt: skip
    transport.close()


def http_protocol(config: ServeConfig) -> Any:
    """uvicorn's HTTP protocol (httptools when installed, else h11) guarded as ``config`` says."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return guarded_protocol(
        AutoHTTPProtocol, config.header_timeout, config.max_header_bytes, config.max_connections
    )


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (every connection is one); returns
    (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft, hard


_libc: Any = None


def trim_memory() -> bool:
    """Hand freed heap memory back to the system (glibc keeps it in its arenas otherwise: after a
    burst of large requests RSS would stay at the peak). False where there is no glibc."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
            if _libc and not hasattr(_libc, "malloc_trim"):
                _libc = False
        except OSError:
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True
