"""The HTTP server's app on Ray Serve replicas, behind Serve's proxy on 127.0.0.1: the official openai
client's vectors equal in-process `TextEmbedding.embed`, the routes, the gate (API key, under a route
prefix), ORT threads from the replica's CPUs, and cross-request batches that Serve's default
`max_ongoing_requests` of 5 would cap."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import WORDS, write_model_dir
from serving import HOST, free_port

# Read by Ray on import and inherited by its processes: set before the first `import ray` of this
# process (tests/test_ray.py explains the second: it keeps every Ray socket on loopback).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ray = pytest.importorskip("ray", reason="Ray is not installed (the [ray-serve] extra)")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (the [ray-serve] extra)")
openai = pytest.importorskip("openai", reason="the [test] extra brings the openai client")

from fastembed_native import TextEmbedding  # noqa: E402
from fastembed_native.integrations.ray_serve import (  # noqa: E402
    DEFAULT_MAX_ONGOING_REQUESTS,
    embedding_app,
    server_config,
)
from fastembed_native.models import cosine_rows  # noqa: E402
from fastembed_native.serve import ModelSpec  # noqa: E402

pytestmark = pytest.mark.timeout(120)  # a hang (a replica that never starts) is a failure

APP = "fastembed"
CLUSTER_CPUS = 2


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Texts of 1 to 12 words from the tiny vocabulary (never empty: a zero vector has no cosine)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 13))) for _ in range(count)]


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    cosines = cosine_rows(got, expected)
    assert cosines.min() >= 0.99999, f"input {int(cosines.argmin())}: cosine {cosines.min()}"


class Proxy:
    """Serve's HTTP proxy on 127.0.0.1, and the one application the tests deploy on it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.deployed: tuple[Any, ...] | None = None

    def deploy(self, key: tuple[Any, ...], build: Callable[[], Any], route_prefix: str = "/") -> Any:
        """Run ``build()`` as the application (replacing the last one unless ``key`` is the same);
        returns its handle once every replica is running."""
        if self.deployed != key:
            self.deployed = None
            serve.run(build(), name=APP, route_prefix=route_prefix)
            self.deployed = key
        return serve.get_app_handle(APP)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(
                method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
            )
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, data = self.request(method, path, body, **kwargs)
        return status, json.loads(data) if data else None

    def metric(self, name: str, label: str = "") -> float:
        """One Prometheus sample summed over the label sets that contain ``label`` (0 when absent),
        from the replica that answers."""
        status, data = self.request("GET", "/metrics")
        assert status == 200, data
        total = 0.0
        for line in data.decode().splitlines():
            if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    """A 2-CPU Ray cluster on loopback with its own temp dir and Serve's proxy on 127.0.0.1; both
    shut down after the module."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set "
            "(or the environment sets it to 1): the cluster would listen on every interface"
        )
    # Ray puts its Unix sockets under the temp dir; a short path stays below the 107-byte limit.
    ray.init(
        num_cpus=CLUSTER_CPUS,
        include_dashboard=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": HOST, "port": port})
        yield Proxy(port)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True)


@pytest.fixture
def tiny_app(proxy: Proxy, tiny):
    """One replica of the tiny model with 1 CPU, at the root."""
    handle = proxy.deploy(("tiny",), lambda: embedding_app([f"tiny={tiny.path}"], num_cpus=1))
    return proxy, handle


# -- the builder, no cluster needed ---------------------------------------------------------------


def test_builder_options_reach_the_deployment(tiny):
    app = embedding_app(
        [f"tiny={tiny.path}", ModelSpec("other", str(tiny.path))],
        num_replicas=3,
        num_cpus=2,
        ray_actor_options={"num_gpus": 0},
        deployment_options={"health_check_period_s": 5},
        api_key="k",
        cache_bytes=1024,
    )
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.max_ongoing_requests == DEFAULT_MAX_ONGOING_REQUESTS > 5
    assert deployment.ray_actor_options == {"num_cpus": 2, "num_gpus": 0}
    assert deployment._deployment_config.health_check_period_s == 5
    (config,) = deployment.init_args
    assert [m.name for m in config.models] == ["tiny", "other"]
    assert (config.api_key, config.cache_bytes, config.threads) == ("k", 1024, None)


@pytest.mark.parametrize(
    ("models", "kwargs", "error", "message"),
    [
        pytest.param([], {}, ValueError, "models is empty", id="no-models"),
        pytest.param([3], {}, TypeError, r"models\[0\] must be 'NAME=SOURCE'", id="not-a-model"),
        pytest.param(None, {"max_batch": 3}, TypeError, "unknown server option.*'max_batch'.*max_inputs", id="typo"),
    ],
)  # fmt: skip
def test_server_config_names_what_is_wrong(models, kwargs, error, message):
    with pytest.raises(error, match=message):
        server_config(models, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"max_ongoing_requests": 0}, "max_ongoing_requests must be >= 1", id="zero-ongoing"),
        pytest.param({"num_replicas": 0}, "num_replicas must be an int >= 1, 'auto' or None", id="zero-replicas"),
        pytest.param({"num_replicas": "many"}, "got 'many'", id="word-replicas"),
        pytest.param({"num_cpus": -1}, "num_cpus must be a number >= 0", id="negative-cpus"),
    ],
)  # fmt: skip
def test_embedding_app_refuses_bad_counts(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        embedding_app([str(tiny.path)], **kwargs)


def test_check_health_fails_a_replica_whose_engine_is_stuck():
    """Serve calls check_health periodically and replaces a replica on which it raises."""
    from types import SimpleNamespace

    from fastembed_native.integrations.ray_serve import EmbeddingDeployment

    def replica(problem):
        return SimpleNamespace(service=SimpleNamespace(health=lambda: problem))

    EmbeddingDeployment.check_health(replica(None))
    with pytest.raises(RuntimeError, match="engine stuck or stopped for model"):
        EmbeddingDeployment.check_health(replica("engine stuck or stopped for model(s): tiny"))


# -- on the cluster --------------------------------------------------------------------------------


def test_openai_client_through_serve_equals_in_process(tiny_app, tiny):
    proxy, _ = tiny_app
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    texts = random_texts(200, seed=3)
    expected = TextEmbedding(tiny.path).embed(texts)
    raw = client.embeddings.with_raw_response.create(model="tiny", input=texts)
    assert '"embedding":"' in raw.http_response.text  # the client's default: base64
    response = raw.parse()
    assert response.model == "tiny"
    assert_same(vectors(response), expected)
    assert_same(
        vectors(client.embeddings.create(model="tiny", input=texts, encoding_format="float")), expected
    )
    one = client.embeddings.create(model="tiny", input=texts[0], encoding_format="float")
    assert_same(vectors(one), expected[:1])


def test_the_server_routes_and_errors_through_serve(tiny_app, tiny):
    proxy, _ = tiny_app
    assert proxy.json("GET", "/health") == (200, {"status": "ok"})
    status, body = proxy.json("POST", "/embed", {"inputs": ["hello world", "lazy dog"]})
    assert status == 200
    assert_same(np.array(body, dtype=np.float32), TextEmbedding(tiny.path).embed(["hello world", "lazy dog"]))
    status, models = proxy.json("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]
    status, body = proxy.json("GET", "/nowhere")
    assert status == 404 and "routes: /v1/embeddings" in body["error"]["message"]
    # The server's own 400, in OpenAI's error shape, reaches the client through the proxy.
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="input must not be empty"):
        client.embeddings.create(model="tiny", input=[])
    with pytest.raises(openai.NotFoundError, match="model 'nope' is not served here; served: tiny"):
        client.embeddings.create(model="nope", input="hello")
    assert proxy.metric("fastembed_requests_total") > 0


def test_ort_threads_come_from_the_replica_cpus(tiny_app):
    _, handle = tiny_app
    described = handle.describe.remote().result(timeout_s=60)
    assert described["models"]["tiny"]["threads"] == 1  # num_cpus=1, on a 2-CPU cluster
    assert described["pid"] != os.getpid()


def test_two_replicas_behind_the_proxy(proxy: Proxy, tiny):
    handle = proxy.deploy(
        ("two-replicas",), lambda: embedding_app([f"tiny={tiny.path}"], num_replicas=2, num_cpus=1)
    )
    replicas = serve.status().applications[APP].deployments["fastembed-native"].replica_states
    assert replicas == {"RUNNING": 2}
    pids = {handle.describe.remote().result(timeout_s=60)["pid"] for _ in range(20)}
    assert 1 <= len(pids) <= 2  # which replica answers is Serve's choice
    texts = random_texts(60, seed=4)

    async def main():
        async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0) as client:
            return await asyncio.gather(
                *(client.embeddings.create(model="tiny", input=[t], encoding_format="float") for t in texts)
            )

    got = np.vstack([vectors(r) for r in asyncio.run(main())])
    assert_same(got, TextEmbedding(tiny.path).embed(texts))


def test_api_key_and_route_prefix(proxy: Proxy, tiny):
    """Under a route prefix the gate sees the server's own paths: /health is open, the rest needs the
    key, the metrics name the routes; a 2-CPU replica runs ORT on 2 threads."""
    handle = proxy.deploy(
        ("keyed",),
        lambda: embedding_app([f"tiny={tiny.path}"], num_cpus=2, api_key="secret"),
        route_prefix="/api",
    )
    assert handle.describe.remote().result(timeout_s=60)["models"]["tiny"]["threads"] == 2
    assert proxy.json("GET", "/api/health") == (200, {"status": "ok"})
    status, body = proxy.json("POST", "/api/v1/embeddings", {"input": "hello"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.url + "/api/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="tiny", input="hello"
        )
    client = openai.OpenAI(base_url=proxy.url + "/api/v1", api_key="secret", max_retries=0)
    texts = random_texts(10, seed=5)
    got = vectors(client.embeddings.create(model="tiny", input=texts, encoding_format="float"))
    assert_same(got, TextEmbedding(tiny.path).embed(texts))
    status, metrics = proxy.request("GET", "/api/metrics", headers={"authorization": "Bearer secret"})
    assert status == 200
    assert 'fastembed_requests_total{route="/v1/embeddings",status="200"}' in metrics.decode()
    assert 'route="/v1/embeddings",status="401"' in metrics.decode()


def _listening_sockets(processes) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket the processes listen on."""
    import psutil

    found = []
    for process in processes:
        try:
            name = process.name()
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_the_proxy_listens_on_loopback_and_so_does_ray_but_one_authenticated_port(tiny_app):
    """Serve's proxy and every Ray process listen on 127.0.0.1, except one socket per replica: Ray
    Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` with no setting to
    change it (ray/serve/_private/replica.py; ray-project/ray#64544). Ray's token authentication,
    on by default since 2.5x, guards it: a call without the cluster's token is refused."""
    psutil = pytest.importorskip("psutil")
    grpc = pytest.importorskip("grpc")
    proxy, _ = tiny_app
    assert proxy.json("GET", "/health")[0] == 200  # a replica and the proxy are up
    driver = psutil.Process()
    sockets = _listening_sockets([driver, *driver.children(recursive=True)])
    if not sockets:
        pytest.skip("psutil sees no listening socket of this process tree (no permission here)")
    names = " ".join(name for name, _, _ in sockets)
    assert "ProxyActor" in names and "ServeReplica" in names and "gcs_server" in names, sockets
    proxy_sockets = [s for s in sockets if s[2] == proxy.port]
    assert proxy_sockets and all(_is_loopback(address) for _, address, _ in proxy_sockets), proxy_sockets
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert len(exposed) <= 1 and all("ServeReplica" in name for name, _, _ in exposed), (
        f"sockets reachable from outside this machine beyond the replica's gRPC server: {exposed}"
    )
    for _, _, port in exposed:
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value


# -- batching, on the real model (an engine call long enough for requests to pile up) ----------


def _calls(proxy: Proxy) -> tuple[float, float]:
    """(engine calls so far, those that carried more than 8 requests), from the one replica."""
    calls = proxy.metric("fastembed_batch_requests_count")
    return calls, calls - proxy.metric("fastembed_batch_requests_bucket", 'le="8.0"')


def _queries_behind_a_long_request(proxy: Proxy, count: int) -> tuple[np.ndarray, list[str], float, float]:
    """``count`` one-text requests sent at once together with a long one that keeps the engine busy
    (so requests pile up in the replica, as they do under load): (their vectors, their texts, engine
    calls they all took, calls that carried more than 8 requests)."""
    texts = [f"request {i} asks about {['cats', 'dogs', 'rust', 'onnx'][i % 4]}" for i in range(count)]
    long_request = [f"document {i}: " + "a rather long sentence about embeddings " * 8 for i in range(192)]
    before = _calls(proxy)
    timeout = openai.Timeout(90, connect=30)

    async def main():
        async with openai.AsyncOpenAI(
            base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=timeout
        ) as client:
            long = asyncio.ensure_future(client.embeddings.create(model="minilm", input=long_request))
            await asyncio.sleep(0.3)  # its first part is in the engine (about a second on 1 thread)
            return await asyncio.gather(
                long, *(client.embeddings.create(model="minilm", input=t) for t in texts)
            )

    responses = asyncio.run(main())
    after = _calls(proxy)
    got = np.vstack([vectors(r) for r in responses[1:]])
    return got, texts, after[0] - before[0], after[1] - before[1]


@pytest.mark.real_model
def test_requests_share_engine_calls_with_the_default_cap(proxy: Proxy, minilm_dir, minilm):
    """Fewer than a fifth as many engine calls as requests, and calls that carry more than 8
    requests: both ruled out by Serve's default cap of 5 (in one run here: 2 calls for 61 requests)."""
    proxy.deploy(("minilm", DEFAULT_MAX_ONGOING_REQUESTS), lambda: embedding_app([f"minilm={minilm_dir}"]))
    got, texts, calls, big_calls = _queries_behind_a_long_request(proxy, 60)
    assert_same(got, minilm.embed(texts))
    assert big_calls > 0, f"no engine call carried more than 8 of {len(texts)} concurrent requests"
    assert calls < (len(texts) + 1) / 5, f"{calls} engine calls for {len(texts) + 1} concurrent requests"


@pytest.mark.real_model
def test_serve_default_cap_of_5_limits_each_engine_call_to_5_requests(proxy: Proxy, minilm_dir, minilm):
    """The control: with max_ongoing_requests=5 a replica holds 5 requests, so no call has more
    (in one run here: 37 calls for the same 61 requests)."""
    proxy.deploy(("minilm", 5), lambda: embedding_app([f"minilm={minilm_dir}"], max_ongoing_requests=5))
    got, texts, calls, big_calls = _queries_behind_a_long_request(proxy, 60)
    assert_same(got, minilm.embed(texts))
    assert big_calls == 0
    assert calls >= (len(texts) + 1) / 5, (
        f"{calls} engine calls for {len(texts) + 1} requests held 5 at a time"
    )
