"""Ray Serve: the HTTP server's app (OpenAI ``/v1/embeddings``, TEI ``/embed``, ``/health``,
``/metrics``, ...) on replicas behind Serve's proxy.

    from ray import serve
    from fastembed_native.integrations.ray_serve import embedding_app

    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(embedding_app(["minilm=path/to/model"], num_replicas=4, num_cpus=2), route_prefix="/")
    # then, e.g.: openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").embeddings.create(...)

Each replica is one ``fastembed-native serve`` without its socket: it loads its models once, in its
constructor (:meth:`EmbeddingService.load`), and Serve's proxy hands it ASGI calls, which go through
the same gate (API key, body limit, metrics) and routes as the standalone server's. Requests that
reach one replica together share engine calls, as in the standalone server; ``/metrics`` is the
metrics of whichever replica answers.

Choices, and why:

- ``max_ongoing_requests`` defaults to :data:`DEFAULT_MAX_ONGOING_REQUESTS` (256), not Serve's 5: a
  replica merges only the requests it holds, so with 5 an engine call never carries more than 5
  requests, however many wait in the proxy. A request held by a replica costs a suspended coroutine
  while it waits, and the replica's own limit (``max_queued_tokens``, a 429 with Retry-After) still
  guards it against more work than it can do.
- ORT threads per replica: the CPUs Serve assigned it (``ray_actor_options["num_cpus"]``, at least 1,
  whole CPUs), unless ``threads=`` says otherwise; ORT ignores ``OMP_NUM_THREADS``, which Ray sets.
- A model directory given as a path must exist on every node that runs a replica (a shared file
  system); a model id is resolved by each node's own model cache.
- Serve's health check calls :meth:`EmbeddingDeployment.check_health`, which fails when an engine
  is stuck or stopped (what ``/health`` reports), so Serve replaces that replica.

Serve binds its proxy where ``serve.start(http_options=...)`` says (``host="127.0.0.1"`` keeps it
on this machine); the cluster itself stays on loopback as described in
:mod:`fastembed_native.integrations.ray`, with one exception Ray 2.60 gives no setting for: each
replica's internal gRPC server listens on ``[::]:0``, every interface (ray-project/ray#64544).
Ray's token authentication, on by default, refuses calls to it without the cluster's token
(``tests/test_ray_serve.py`` checks both); keep it on, or firewall the nodes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from typing import Any

try:
    import ray
    from ray import serve
    from ray.serve import Application
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.ray_serve needs Ray Serve ({exc}); "
        "install it with: pip install 'fastembed-native[ray-serve]'"
    ) from exc

from ..serve.config import ModelSpec, ServeConfig
from ..serve.http import create_asgi
from ..serve.service import EmbeddingService

__all__ = [
    "DEFAULT_MAX_ONGOING_REQUESTS",
    "EmbeddingDeployment",
    "embedding_app",
    "server_config",
]

#: Requests one replica holds at once (Serve's own default is 5). See the module docstring.
DEFAULT_MAX_ONGOING_REQUESTS = 256


def _assigned_cpus() -> float:
    """CPUs Ray assigned the calling actor; 0 when it assigned none (or outside Ray)."""
    if not ray.is_initialized():
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))


class _BelowPrefix:
    """ASGI shim: the app sees paths below Serve's route prefix, as under ``fastembed-native serve``.

    Serve keeps the full path in ``scope["path"]`` and puts the prefix in ``root_path``; the gate
    matches paths literally (the API-key exemption of ``/health``, the metrics' route labels), so it
    gets the path below the prefix and an empty ``root_path`` (which also keeps Starlette from
    stripping a second time when a route happens to start with the prefix, e.g. ``/v1`` twice).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        root = scope.get("root_path", "")
        if scope["type"] in ("http", "websocket") and root and scope["path"].startswith(root):
            scope = {**scope, "path": scope["path"][len(root) :] or "/", "root_path": ""}
            if "raw_path" in scope and scope["raw_path"] is not None:
                scope["raw_path"] = scope["raw_path"][len(root.encode()) :] or b"/"
        await self.app(scope, receive, send)


@serve.ingress()  # the app is per service, so each replica builds it (__serve_build_asgi_app__)
class EmbeddingDeployment:
    """One Serve replica: the models of ``config``, loaded once, behind the HTTP server's routes.

    Args:
        config: what ``fastembed-native serve`` takes: the models and the limits. When its
            ``threads`` is None, each model runs ONNX Runtime on the CPUs Serve assigned this replica
            (at least 1), not on every CPU of the machine.
    """

    def __init__(self, config: ServeConfig) -> None:
        if config.threads is None:
            cpus = _assigned_cpus()
            if cpus > 0:
                config = dataclasses.replace(config, threads=max(1, math.floor(cpus)))
        if config.threads is not None:
            # The tokenizer's Rust pool sizes itself from the machine, not from Ray's share; it reads
            # this once, on first use, which comes after this line in a fresh replica process.
            os.environ.setdefault("RAYON_NUM_THREADS", str(config.threads))
        self.config = config
        self.service = EmbeddingService.load(config)

    def __serve_build_asgi_app__(self) -> Any:
        """The ASGI app Serve's proxy calls: the server's gate and routes over this replica's service."""
        return _BelowPrefix(create_asgi(self.service))

    def check_health(self) -> None:
        """Serve's periodic health check: raises when an engine is stuck or stopped, so Serve
        replaces this replica (a draining replica is on its way out and says so too)."""
        problem = self.service.health()
        if problem is not None:
            raise RuntimeError(problem)

    def describe(self) -> dict[str, Any]:
        """This replica's process id, and per model its ORT threads and providers (for a handle call)."""
        return {
            "pid": os.getpid(),
            "models": {
                name: {"threads": served.embedder.threads, "providers": list(served.embedder.providers)}
                for name, served in self.service.models.items()
            },
        }


def server_config(
    models: str | ModelSpec | Iterable[str | os.PathLike[str] | ModelSpec] | None = None,
    **serve_config: Any,
) -> ServeConfig:
    """A :class:`ServeConfig` from ``models`` (``NAME=SOURCE`` or ``SOURCE`` strings, paths or
    :class:`ModelSpec` s, as ``serve --model`` takes them; None: the default model) and its other
    fields by name (``api_key``, ``max_inputs``, ``cache_bytes``, ``threads``, ...).

    Raises:
        TypeError: a keyword is not a ServeConfig field (the message lists them), or a model is
            neither a string, a path nor a ModelSpec.
        ValueError: ``models`` is empty, or a model string is empty.
    """
    fields = {f.name for f in dataclasses.fields(ServeConfig)} - {"models"}
    unknown = sorted(set(serve_config) - fields)
    if unknown:
        raise TypeError(
            f"unknown server option(s) {', '.join(map(repr, unknown))}; "
            f"ServeConfig takes: {', '.join(sorted(fields))}"
        )
    if models is None:
        return ServeConfig(**serve_config)
    if isinstance(models, (str, ModelSpec, os.PathLike)):
        models = [models]
    specs = []
    for i, model in enumerate(models):
        if isinstance(model, ModelSpec):
            specs.append(model)
        elif isinstance(model, (str, os.PathLike)):
            specs.append(ModelSpec.parse(os.fspath(model)))
        else:
            raise TypeError(
                f"models[{i}] must be 'NAME=SOURCE', a model directory or id, or a ModelSpec, "
                f"not {type(model).__name__}"
            )
    if not specs:
        raise ValueError("models is empty: give at least one model (or None for the default model)")
    return ServeConfig(models=tuple(specs), **serve_config)


def embedding_app(
    models: str | ModelSpec | Iterable[str | os.PathLike[str] | ModelSpec] | None = None,
    *,
    num_replicas: int | str | None = 1,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    num_cpus: float = 1.0,
    ray_actor_options: dict[str, Any] | None = None,
    deployment_options: dict[str, Any] | None = None,
    **serve_config: Any,
) -> Application:
    """The Serve application to pass to ``serve.run``: ``num_replicas`` replicas of
    :class:`EmbeddingDeployment`, each serving ``models`` on the HTTP server's routes.

    Args:
        models: see :func:`server_config`; the first model answers requests that name none.
        num_replicas: replicas; "auto" for Serve's default autoscaling, or None to leave it to
            ``deployment_options={"autoscaling_config": ...}``.
        max_ongoing_requests: requests one replica holds at once; high, so cross-request batches form
            (Serve's default of 5 would cap every engine call at 5 requests).
        num_cpus: CPUs Ray reserves per replica; also its ORT threads (whole CPUs, at least 1)
            unless ``threads=`` is given.
        ray_actor_options: further actor options (``num_gpus``, ``runtime_env``, ...); its
            ``num_cpus``, if any, wins over ``num_cpus``.
        deployment_options: further ``Deployment.options`` (``autoscaling_config``,
            ``health_check_period_s``, ``graceful_shutdown_timeout_s``, ...).
        **serve_config: the server's limits, as :class:`ServeConfig` fields (``api_key``,
            ``max_inputs``, ``max_queued_tokens``, ``cache_bytes``, ``threads``, ...).

    Raises:
        TypeError / ValueError: as :func:`server_config`, or a count or limit is out of range.
    """
    config = server_config(models, **serve_config)
    if isinstance(max_ongoing_requests, bool) or not isinstance(max_ongoing_requests, int):
        raise TypeError(f"max_ongoing_requests must be an int, not {type(max_ongoing_requests).__name__}")
    if max_ongoing_requests < 1:
        raise ValueError(f"max_ongoing_requests must be >= 1, got {max_ongoing_requests}")
    if num_replicas not in (None, "auto") and (
        isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1
    ):
        raise ValueError(f"num_replicas must be an int >= 1, 'auto' or None, got {num_replicas!r}")
    actor_options = {"num_cpus": num_cpus, **(ray_actor_options or {})}
    if not (isinstance(actor_options["num_cpus"], (int, float)) and actor_options["num_cpus"] >= 0):
        raise ValueError(f"num_cpus must be a number >= 0, got {actor_options['num_cpus']!r}")
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": actor_options,
    }
    if num_replicas is not None:
        options["num_replicas"] = num_replicas
    options.update(deployment_options or {})
    deployment = serve.deployment(EmbeddingDeployment, name="fastembed-native").options(**options)
    return deployment.bind(config)
