"""What a server is started with: its models and its limits (every one a ``serve`` flag)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "FASTEMBED_NATIVE_API_KEY"

#: Seconds granted after a drain (``drain_seconds``) for answers to be written and connections
#: closed: uvicorn's graceful-shutdown timeout, and what the gRPC server's grace adds to the drain.
CLOSE_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class ModelSpec:
    """One served model: the name clients send as ``model``, and what to load (a directory or id)."""

    name: str
    source: str | None  # None: the default model

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``NAME=SOURCE`` or ``SOURCE``; a directory is served under its folder name, an id as itself."""
        name, sep, source = text.partition("=")
        if sep and name and source:
            return cls(name.strip(), source.strip())
        source = text.strip()
        if not source:
            raise ValueError("a --model value is empty")
        path = Path(source)
        return cls(path.name if path.is_dir() else source, source)


@dataclass(frozen=True)
class ServeConfig:
    """Models and limits. Defaults suit one CPU machine; each is a ``fastembed-native serve`` flag.

    Attributes:
        models: the served models; the first is also the default for requests without ``model``.
        api_key: when set, every route but /health needs ``Authorization: Bearer <key>``.
        max_inputs: inputs per request (OpenAI's own limit is 2048).
        max_body_bytes: request body size.
        max_queued_tokens: tokens waiting per model before new requests get 429.
        max_call_tokens: tokens one engine call takes at most, over all waiting requests.
        auto_truncate: truncate over-long inputs to the model's max length (else a 400 that states
            the token count); a request's own ``truncate`` wins.
        cache_bytes: size of the in-memory embedding cache (0: off).
        stuck_after: seconds one engine call may take before /health reports the engine stuck.
        drain_seconds: how long SIGTERM waits for in-flight requests before exiting.
        threads: ORT threads per model (None: every CPU).
        quantized: serve the int8 files (``onnx/model_int8.onnx``, made by ``fastembed-native
            quantize``) of the embedding, reranker and sparse models; ColBERT models stay fp32.
        grpc_max_message_bytes: the largest gRPC message the server receives (bigger ones get
            RESOURCE_EXHAUSTED from grpc itself).
        max_inflight_bytes: bytes of requests in flight, all clients together: each request is
            charged its body before it is read, then its answer's size, and refused with 429 when
            that does not fit (serve/limits.py).
        max_connections: open HTTP connections; one more is answered 503 and closed at once.
        header_timeout: seconds a connection may take to send a complete request header.
        max_header_bytes: size of a request's header (431 past it).
        body_timeout: seconds a request body may stall (no bytes arriving) before the request is
            dropped with 408.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
    """

    models: tuple[ModelSpec, ...] = (ModelSpec("sentence-transformers/all-MiniLM-L6-v2", None),)
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    max_inputs: int = 2048
    max_body_bytes: int = 16 * 2**20
    max_queued_tokens: int = 500_000  # about 25 s of work for MiniLM on 2 cores
    max_call_tokens: int = 8192
    auto_truncate: bool = True
    cache_bytes: int = 0
    stuck_after: float = 120.0
    drain_seconds: float = 30.0
    threads: int | None = None
    quantized: bool = False
    grpc_max_message_bytes: int = 16 * 2**20
    max_inflight_bytes: int = 128 * 2**20
    max_connections: int = 1024
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 2**10
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
