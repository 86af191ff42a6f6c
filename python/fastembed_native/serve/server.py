"""Running the server: uvicorn on one event loop, the engines on their own threads, and a drain on
SIGTERM (no new work, in-flight requests finish, then exit 0 within ``drain_seconds``)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType

import uvicorn

from .config import ServeConfig
from .http import create_asgi
from .service import EmbeddingService

log = logging.getLogger("fastembed_native.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which marks the service draining the moment a stop signal arrives, so
    requests still reaching open connections get 503 and /health turns unhealthy."""

    def __init__(self, config: uvicorn.Config, service: EmbeddingService) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.start_draining()
        super().handle_exit(sig, frame)


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> int:
    """Load the models, serve until SIGTERM / SIGINT, drain, and return the exit status (0)."""
    start = time.perf_counter()
    service = EmbeddingService.load(config)
    server = DrainingServer(
        uvicorn.Config(
            create_asgi(service),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=int(config.drain_seconds),
            lifespan="on",
        ),
        service,
    )
    # uvicorn re-raises the stop signal after its shutdown, to the handler that was there before it;
    # with this one in place that ends in a clean exit 0 instead of death by the default handler.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    ready = time.perf_counter() - start
    names = ", ".join(f"{name} ({s.embedder.dim} dims)" for name, s in service.models.items())
    print(
        f"fastembed-native serve: {names} on http://{host}:{port} (loaded in {ready:.2f} s)",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    return 0


def _ignore(sig: int, frame: FrameType | None) -> None:
    log.info("signal %d after shutdown: exiting", sig)
