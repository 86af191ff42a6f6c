"""The HTTP transport: OpenAI- and TEI-compatible routes on FastAPI, translating JSON to
:class:`~fastembed_native.serve.service.EmbedRequest` and back. Errors of every kind leave through
one set of handlers in the OpenAI error shape; nothing a client sends produces a 500.

An ASGI gate in front of the app checks the API key and the body size before any parsing, and
counts every answer in the metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .errors import (
    ApiError,
    BadRequest,
    Draining,
    EngineFailure,
    InputTooLong,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    Unauthorized,
    quote_input,
)
from .limits import Admission
from .protocol import (
    CohereRerankRequest,
    MultiVectorEmbedRequest,
    OpenAIEmbeddingRequest,
    TEIEmbedRequest,
    TEIEmbedSparseRequest,
    TEIRerankRequest,
    TEITokenizeRequest,
    cohere_rerank_response,
    models_response,
    multivector_response,
    openai_response,
    tei_rerank_response,
    tei_response,
    tei_sparse_response,
)
from .rerank import RerankResult
from .service import EmbeddingService, EmbedRequest, EmbedResult
from .sparse import MultiVectorResult, SparseResult

log = logging.getLogger("fastembed_native.serve")

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROUTES = (
    "/v1/embeddings",
    "/embeddings",
    "/embed",
    "/embed_sparse",
    "/embed_multi_vector",
    "/tokenize",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
    "/v1/models",
    "/info",
    "/health",
    "/metrics",
)
_OPEN_ROUTES = ("/health",)  # answered without the API key, for load balancers


class JSONBytes(Response):
    """A JSON response written by orjson, which also writes numpy arrays (no .tolist())."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(error: ApiError) -> JSONBytes:
    return JSONBytes(error.body(), status_code=error.status, headers=error.headers)


class ClientGone(Exception):
    """The client disconnected while its request waited; its queued work was dropped."""


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def embed_or_drop(
    service: EmbeddingService, request: Request, embed_request: EmbedRequest
) -> EmbedResult:
    """Run ``service.embed``, cancelling it (and so dropping its queued work) if the client leaves."""
    return await run_or_drop(request, service.embed(embed_request))


async def run_or_drop(request: Request, job: Awaitable[T]) -> T:
    """Await ``job`` (a service call), cancelling it (and so dropping its queued work) if the client
    leaves first."""
    work = asyncio.ensure_future(job)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        with suppress(asyncio.CancelledError, ApiError):
            await work
        raise ClientGone
    return work.result()


def timing_headers(result: EmbedResult | RerankResult | SparseResult | MultiVectorResult) -> dict[str, str]:
    """TEI's timing headers, in milliseconds."""
    t = result.timings
    return {
        "x-total-time": f"{t.total * 1000:.3f}",
        "x-tokenization-time": f"{t.tokenize * 1000:.3f}",
        "x-queue-time": f"{t.queue * 1000:.3f}",
        "x-inference-time": f"{t.inference * 1000:.3f}",
        "x-compute-tokens": str(result.tokens if isinstance(result, RerankResult) else result.prompt_tokens),
    }


def _validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """One message (and the field at fault) from pydantic's errors."""
    if not errors:
        return "the request body is invalid", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc) or None
    if first.get("type") in ("model_type", "model_attributes_type"):
        return "the request body must be a JSON object", None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return message, field


async def _parse(request: Request, model: type[Model]) -> Model:
    """The body as ``model``. JSON is read whatever the Content-Type says (curl's -d sends a form
    type), with orjson; every failure is a 400 that says what is wrong."""
    body = await request.body()
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON (UTF-8): {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, field = _validation_message(exc.errors(include_url=False))
        raise BadRequest(message, param=field) from None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses ``model`` itself."""
    return {
        "requestBody": {
            "content": {"application/json": {"schema": model.model_json_schema()}},
            "required": True,
        }
    }


def create_app(service: EmbeddingService) -> FastAPI:
    """The FastAPI app over ``service``, wrapped in the gate (key, body size, metrics)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # Shutdown: in-flight requests are done (uvicorn waited for them); stop the engines.
        service.start_draining()
        await asyncio.get_running_loop().run_in_executor(None, service.close, service.config.drain_seconds)

    app = FastAPI(title="fastembed-native", version=service.info()["version"], lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message, field = _validation_message(list(exc.errors()))
        return error_response(BadRequest(message, param=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            path = quote_input(request.url.path)
            return error_response(RouteNotFound(f"no route {path}; routes: {', '.join(_ROUTES)}"))
        if exc.status_code == 405:
            path = quote_input(request.url.path)  # (the method is one of HTTP's, checked by uvicorn)
            return error_response(MethodNotAllowed(f"{request.method} is not allowed on {path}"))
        if exc.status_code == 413:
            return error_response(PayloadTooLarge(str(exc.detail)))
        error = BadRequest(str(exc.detail))
        return JSONBytes(error.body(), status_code=exc.status_code if exc.status_code < 500 else 400)

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: Exception) -> Response:
        # The client hung up (while its body was read, or while its work waited), or uvicorn closed
        # a connection whose body it could not parse (a bad chunk size; uvicorn answered 400 itself).
        # Not a server error: counted as nginx's 499 "client closed request", which nobody reads.
        log.info(
            "%s %s: the client closed the connection before the answer", request.method, request.url.path
        )
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(EngineFailure(f"internal error: {type(exc).__name__}"))

    @app.post("/v1/embeddings", openapi_extra=_body_schema(OpenAIEmbeddingRequest))
    @app.post("/embeddings", include_in_schema=False)
    async def openai_embeddings(request: Request) -> Response:
        body = await _parse(request, OpenAIEmbeddingRequest)
        try:
            result = await embed_or_drop(service, request, body.to_service())
        except InputTooLong as exc:
            raise exc.as_openai() from None
        return JSONBytes(openai_response(result, body.encoding_format), headers=timing_headers(result))

    @app.post("/embed", openapi_extra=_body_schema(TEIEmbedRequest))
    async def tei_embed(request: Request) -> Response:
        body = await _parse(request, TEIEmbedRequest)
        result = await embed_or_drop(service, request, body.to_service())
        return JSONBytes(tei_response(result), headers=timing_headers(result))

    @app.post("/embed_sparse", openapi_extra=_body_schema(TEIEmbedSparseRequest))
    async def tei_embed_sparse(request: Request) -> Response:
        body = await _parse(request, TEIEmbedSparseRequest)
        result = await run_or_drop(request, service.embed_sparse(body.to_service()))
        return Response(
            tei_sparse_response(result), media_type="application/json", headers=timing_headers(result)
        )

    @app.post("/embed_multi_vector", openapi_extra=_body_schema(MultiVectorEmbedRequest))
    async def embed_multi_vector(request: Request) -> Response:
        body = await _parse(request, MultiVectorEmbedRequest)
        result = await run_or_drop(
            request, service.embed_multi_vector(body.to_service(), body.encoding_format)
        )
        return JSONBytes(multivector_response(result, body.encoding_format), headers=timing_headers(result))

    @app.post("/tokenize", openapi_extra=_body_schema(TEITokenizeRequest))
    async def tei_tokenize(request: Request) -> Response:
        body = await _parse(request, TEITokenizeRequest)
        tokens = await service.tokenize(body.inputs, body.model, body.add_special_tokens, body.prompt_name)
        return JSONBytes(tokens)

    @app.post("/rerank", openapi_extra=_body_schema(TEIRerankRequest))
    async def tei_rerank(request: Request) -> Response:
        body = await _parse(request, TEIRerankRequest)
        result = await run_or_drop(request, service.rerank(body.to_service()))
        return JSONBytes(tei_rerank_response(result, body.return_text), headers=timing_headers(result))

    @app.post("/v1/rerank", openapi_extra=_body_schema(CohereRerankRequest))
    @app.post("/v2/rerank", include_in_schema=False)
    async def cohere_rerank(request: Request) -> Response:
        body = await _parse(request, CohereRerankRequest)
        result = await run_or_drop(request, service.rerank(body.to_service()))
        return JSONBytes(
            cohere_rerank_response(result, body.return_documents), headers=timing_headers(result)
        )

    @app.get("/v1/models")
    async def list_models() -> Response:
        outputs = {name: served.outputs for name, served in service.models.items()}
        return JSONBytes(models_response(outputs, int(service.started)))

    @app.get("/info")
    async def info() -> Response:
        return JSONBytes(service.info())

    @app.get("/health")
    async def health() -> Response:
        problem = service.health()
        if problem is None:
            return JSONBytes({"status": "ok"})
        return JSONBytes({"status": "unavailable", "reason": problem}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    return app


class Gate:
    """ASGI middleware: the API key, the body-size limit, and request metrics, before any parsing."""

    def __init__(self, app: Any, service: EmbeddingService) -> None:
        self.app = app
        self.service = service
        self.key = service.config.api_key.encode() if service.config.api_key else None
        self.max_body = service.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in _ROUTES else "other"
        start = time.perf_counter()
        status = 500
        started = False

        async def send_counted(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            problem = self._refuse(scope, path)
            if problem is not None:
                await error_response(problem)(scope, receive, send_counted)
                return
            await self.app(scope, self._limited(receive), send_counted)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when its shutdown grace ends, and would answer it 500
            # with a traceback: it is work the drain cut off, so 503, and the task ends quietly.
            if not started:
                cut = Draining("the server shut down before this request was answered", code="drain_deadline")
                await error_response(cut)(scope, receive, send_counted)
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(route, str(status)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - start)

    def _refuse(self, scope: Scope, path: str) -> ApiError | None:
        headers = dict(scope["headers"])
        if self.key is not None and path not in _OPEN_ROUTES:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return Unauthorized(
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return BadRequest("the Content-Length header is not a number")
            if size > self.max_body:
                return PayloadTooLarge(
                    f"the request body is {size} bytes; the limit is {self.max_body} (--max-body-bytes)",
                    code="body_too_large",
                )
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that refuses a chunked body once it passes the limit."""
        seen = 0
        limit = self.max_body

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # fastapi's HTTPException: FastAPI re-raises it from its body reader as it is.
                    raise HTTPException(413, f"the request body is over {limit} bytes (--max-body-bytes)")
            return message

        return receive_limited


def create_asgi(service: EmbeddingService) -> Gate:
    """The complete ASGI application: the gate, then the admission against the budget of requests in
    flight (serve/limits.py), in front of the routes."""
    admitted = Admission(create_app(service), service.budget, service.config.body_timeout)
    return Gate(admitted, service)
