"""The server's behaviour over time: overload and retries, clients that leave, SIGTERM with work in
flight, a stuck engine, several models, and the cache."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import numpy as np
import pytest
from conftest import write_model_dir
from serving import HOST, Server, free_port

from fastembed_native.engine import Embedder
from fastembed_native.models import cosine_rows
from fastembed_native.serve.cache import EmbeddingCache
from fastembed_native.serve.config import ServeConfig
from fastembed_native.serve.service import EmbeddingService, EmbedRequest

pytestmark = pytest.mark.timeout(300)
openai = pytest.importorskip("openai", reason="the [test] extra brings the openai client")

LONG = "Embedding servers batch requests from many clients into one engine call. " * 12  # ~170 tokens


def engine_texts(server: Server) -> float:
    """Inputs the engine has embedded so far (the sum of the per-call batch sizes)."""
    return server.metric("fastembed_batch_texts_sum")


@pytest.mark.real_model
def test_overload_gives_429_with_retry_after_and_the_client_retries(minilm_dir, minilm):
    texts = [f"query {i}: {LONG}" for i in range(16)]
    with Server(["--model", f"m={minilm_dir}", "--max-queued-tokens", "700"]) as server:

        async def main():
            # Each retry waits what retry-after-ms says (~0.1 s): 100 of them cover a slow machine.
            async with openai.AsyncOpenAI(
                base_url=server.url + "/v1", api_key="x", max_retries=100
            ) as client:
                return await asyncio.gather(*(client.embeddings.create(model="m", input=t) for t in texts))

        responses = asyncio.run(main())
        refused = server.metric("fastembed_requests_total", 'route="/v1/embeddings",status="429"')
        # A raw request while the queue is full shows the header the client honoured.
        status, headers, body = _overloaded_request(server, texts)
    got = np.array([r.data[0].embedding for r in responses], dtype=np.float32)
    assert cosine_rows(got, minilm.embed(texts)).min() >= 0.99999
    assert refused > 0, "the queue limit never refused a request"
    assert status == 429 and int(headers["retry-after-ms"]) > 0
    assert json.loads(body)["error"]["type"] == "rate_limit_error"


def _overloaded_request(server: Server, texts: list[str]):
    """12 requests at once, each of 3 texts (~530 tokens, within the 700-token queue, where two of
    them are over any one's fair share): a refused one (or the last answer, if none was refused)."""
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(server.request("POST", "/embed", {"inputs": texts[:3]}))
        )
        for _ in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return next((r for r in results if r[0] == 429), results[-1])


@pytest.mark.real_model
def test_a_client_that_disconnects_has_its_queued_work_dropped(minilm_dir):
    with Server(["--model", f"m={minilm_dir}"]) as server:
        big = [f"{i} {LONG}" for i in range(150)]  # keeps the engine busy for a while
        before = engine_texts(server)
        answers = []
        done = threading.Thread(
            target=lambda: answers.append(server.request("POST", "/embed", {"inputs": big}, timeout=240))
        )
        done.start()
        time.sleep(0.3)
        # A second client queues 300 inputs behind it, then hangs up.
        body = json.dumps({"inputs": [f"dropped {i} {LONG}" for i in range(300)]}).encode()
        with socket.create_connection((HOST, server.port)) as s:
            s.sendall(
                f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.2)
        done.join()
        assert answers and answers[0][0] == 200
        time.sleep(0.5)
        embedded = engine_texts(server) - before
        assert server.request("GET", "/health")[0] == 200
    assert embedded < len(big) + 300, f"the engine embedded {embedded} inputs: the dropped request's too"
    assert embedded >= len(big)


@pytest.mark.real_model
def test_sigterm_drains_in_flight_requests_then_exits_0(minilm_dir, minilm):
    server = Server(["--model", f"m={minilm_dir}", "--drain-seconds", "60"])
    texts = [f"{i} {LONG}" for i in range(150)]
    answers = []
    worker = threading.Thread(
        target=lambda: answers.append(server.json("POST", "/embed", {"inputs": texts}, timeout=240))
    )
    worker.start()
    time.sleep(0.5)  # the request is in the engine now
    start = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    worker.join(120)
    code = server.process.wait(60)
    server.stop()
    assert code == 0, server.output
    assert time.monotonic() - start < 60
    status, body = answers[0]
    assert status == 200 and len(body) == len(texts)
    assert cosine_rows(np.array(body, dtype=np.float32), minilm.embed(texts)).min() >= 0.99999
    with pytest.raises(OSError):
        socket.create_connection((HOST, server.port), timeout=2).close()


def test_health_fails_when_the_engine_is_stuck_or_draining(tmp_path):
    model = write_model_dir(tmp_path / "tiny", token_types=True)
    embedder = Embedder(model.path)
    release = threading.Event()
    real = embedder.embed_encodings

    def stuck(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    embedder.embed_encodings = stuck  # type: ignore[method-assign]
    service = EmbeddingService({"tiny": embedder}, ServeConfig(stuck_after=0.2, api_key=None))

    async def main():
        assert service.health() is None
        work = asyncio.ensure_future(service.embed(EmbedRequest(["hello world"])))
        await asyncio.sleep(0.5)
        stuck_reason = service.health()
        release.set()
        result = await work
        return stuck_reason, result

    stuck_reason, result = asyncio.run(main())
    assert stuck_reason is not None and "stuck" in stuck_reason and "tiny" in stuck_reason
    assert result.vectors.shape == (1, 7)
    assert service.health() is None
    service.start_draining()
    assert "draining" in service.health()
    assert service.close(5)


def test_several_models_are_routed_by_name(tmp_path):
    encoder = write_model_dir(tmp_path / "enc", token_types=True, normalize=True)
    decoder = write_model_dir(
        tmp_path / "dec", pooling="last_token", padding_side="left", positions=True, normalize=True
    )
    texts = ["hello world", "the quick brown fox"]
    with Server(["--model", f"enc={encoder.path}", "--model", f"dec={decoder.path}"]) as server:
        status, listed = server.json("GET", "/v1/models")
        assert [m["id"] for m in listed["data"]] == ["enc", "dec"]
        for name, model in (("enc", encoder), ("dec", decoder)):
            status, body = server.json("POST", "/embed", {"inputs": texts, "model": name})
            assert status == 200
            expected = Embedder(model.path).embed(texts)
            np.testing.assert_allclose(np.array(body, dtype=np.float32), expected, rtol=1e-5, atol=1e-6)
        status, body = server.json("POST", "/embed", {"inputs": texts})  # no model: the first one
        np.testing.assert_allclose(np.array(body), Embedder(encoder.path).embed(texts), rtol=1e-5, atol=1e-6)


def test_cache_hits_are_counted_and_equal_fresh_vectors(tmp_path):
    model = write_model_dir(tmp_path / "tiny", token_types=True, normalize=True)
    texts = ["hello world", "the lazy dog", "flag embedding"]
    with Server(["--model", f"t={model.path}", "--cache-size", "1"]) as server:
        _, first = server.json("POST", "/embed", {"inputs": texts})
        _, again = server.json("POST", "/embed", {"inputs": texts})
        _, shorter = server.json("POST", "/embed", {"inputs": texts, "dimensions": 3})
        hits = server.metric("fastembed_cache_hits_total")
        ratio = server.metric("fastembed_cache_hit_ratio")
    assert first == again
    expected = Embedder(model.path).embed(texts, dimensions=3)
    np.testing.assert_allclose(np.array(shorter), expected, rtol=1e-5, atol=1e-6)
    assert hits == 6  # the second and third requests, three inputs each
    assert ratio == pytest.approx(6 / 9)


def test_cache_is_bounded_in_bytes():
    cache = EmbeddingCache(max_bytes=10_000)
    vector = np.ones(384, dtype=np.float32)
    for i in range(100):
        cache.put(("m", f"text {i}", True, 0), (vector, 3))
    assert cache.bytes <= 10_000
    assert 0 < len(cache) < 100
    assert cache.get(("m", "text 99", True, 0)) is not None  # the newest stays
    assert cache.get(("m", "text 0", True, 0)) is None  # the oldest went


@pytest.mark.real_model
def test_bench_serve_small_run(minilm_dir, tmp_path):
    """`fastembed-native bench serve` end to end at a tiny scale: both servers start, every load runs
    without errors, the vectors match sentence-transformers and the report is written."""
    import subprocess
    import sys

    out = tmp_path / "bench"
    command = [sys.executable, "-m", "fastembed_native.cli", "bench", "serve", "--model", str(minilm_dir)]
    command += [
        "--contenders",
        "fastembed_native,naive_fastapi_ort",
        "--scale",
        "0.02",
        "--corpus-size",
        "60",
    ]
    command += ["--limit-seconds", "20", "--settle", "0", "--threads", "2", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "serve.json").read_text())
    assert len(results["loads"]) == 6
    for row in results["loads"].values():
        for name, outcome in row.items():
            assert outcome["errors"] == 0, name
            assert outcome.get("min_cosine_vs_st", 1.0) >= 0.9999, name
    assert "fastembed_native_base64" in results["loads"]["8 clients x 32 texts"]
    assert (out / "serve.md").read_text().startswith("| load |")


def test_prompts_left_out_of_pooling_share_the_queue_and_match_the_library(tmp_path):
    """An ``include_prompt: false`` model: requests with and without the prompt arrive together; the
    queue keeps them in separate engine calls (the pooling skip is per call) and each answer equals
    the library's."""
    model = write_model_dir(tmp_path / "instructor", token_types=True, normalize=True)
    pooling = model.path / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "include_prompt": False}))
    prompt = "the quick "
    (model.path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": prompt}}))
    embedder = Embedder(model.path)
    assert embedder.prompt_tokens(prompt) > 0
    service = EmbeddingService({"m": embedder}, ServeConfig(api_key=None))
    texts = ["hello world", "lazy dog", "fox jumps over", "flag"]

    async def main():
        requests = [EmbedRequest([t], prompt_name=p) for t in texts for p in ("query", None)]
        return await asyncio.gather(*(service.embed(r) for r in requests))

    results = asyncio.run(main())
    got = np.vstack([r.vectors for r in results])
    expected = np.vstack(
        [
            row
            for pair in zip(embedder.embed(texts, prompt=prompt), embedder.embed(texts), strict=True)
            for row in pair
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], Embedder(model.path, include_prompt=True).embed([prompt + texts[0]])[0])
    assert service.close(5)


def _drain_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("fastembed-native serve: drain")]


@pytest.mark.real_model
def test_sigterm_drain_answers_new_requests_503_while_in_flight_work_finishes_and_logs_it(minilm_dir):
    """The socket stays open during the drain: a new connection gets 503 (not refused) while the
    request in flight still runs; the drain's start and end are one log line each."""
    server = Server(["--model", f"m={minilm_dir}", "--drain-seconds", "120"])
    texts = [f"{i} {LONG}" for i in range(300)]  # ~50,000 tokens: seconds of engine work
    done: list = []

    def send_big():
        done.append(server.json("POST", "/embed", {"inputs": texts}, timeout=240))
        done.append(time.monotonic())

    worker = threading.Thread(target=send_big)
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while server.metric("fastembed_batch_texts_count") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the request runs in the engine
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # uvicorn notices the signal within 0.1 s: the drain has begun
        status, body = server.json("POST", "/embed", {"inputs": ["hello world"]}, timeout=30)
        answered = time.monotonic()
        health = server.request("GET", "/health", timeout=30)[0]
        worker.join(240)
        code = server.process.wait(60)
    finally:
        server.stop()
    assert status == 503 and body["error"]["type"] == "service_unavailable", body
    assert health == 503
    assert done and done[0][0] == 200 and len(done[0][1]) == len(texts)
    assert answered < done[1], "the in-flight request had ended before the new connection: nothing shown"
    assert code == 0, server.output
    lines = _drain_lines(server.output)
    assert len(lines) == 2, server.output
    assert "draining: 1 request(s) in flight" in lines[0]
    assert "1 request(s) finished, 0 cut off" in lines[1]


@pytest.mark.real_model
def test_sigterm_with_more_work_than_the_drain_allows_answers_503_never_500_and_exits_0(minilm_dir):
    """200 HTTP requests and 20 gRPC calls queued, --drain-seconds 3: what finished is 200 / OK,
    the rest 503 in the OpenAI shape / UNAVAILABLE, and the process exits 0."""
    aiohttp = pytest.importorskip("aiohttp", reason="the [test] extra brings aiohttp")
    grpc = pytest.importorskip("grpc", reason="the [serve] extra brings grpcio")
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    grpc_port = free_port()
    args = ["--model", f"m={minilm_dir}", "--drain-seconds", "3", "--max-queued-tokens", "2000000"]
    server = Server([*args, "--grpc-port", str(grpc_port)])
    inputs = [f"{j} {LONG}" for j in range(10)]  # ~1,700 tokens a request; 220 of them: ~30 s of work

    async def http_load() -> list:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one():
                async with session.post(server.url + "/embed", json={"inputs": inputs}) as response:
                    return response.status, await response.read()

            return await asyncio.gather(*(one() for _ in range(200)), return_exceptions=True)

    answers: list = []
    loader = threading.Thread(target=lambda: answers.extend(asyncio.run(http_load())))
    channel = grpc.insecure_channel(f"{HOST}:{grpc_port}")
    try:
        stub = v1_grpc.EmbedderStub(channel)
        calls = [stub.Embed.future(v1.EmbedRequest(inputs=inputs), timeout=120) for _ in range(20)]
        loader.start()
        deadline = time.monotonic() + 120
        while server.metric("fastembed_queue_jobs") < 150 and time.monotonic() < deadline:
            time.sleep(0.2)  # until most of the load is queued
        queued = server.metric("fastembed_queue_jobs")
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        loader.join(120)
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        code = server.process.wait(60)
        took = time.monotonic() - start
    finally:
        channel.close()
        server.stop()
    assert queued >= 150
    failures = [a for a in answers if isinstance(a, BaseException)]
    assert not failures, failures[:3]
    statuses = [status for status, _ in answers]
    assert len(statuses) == 200 and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(503) > 0
    for status, data in answers:
        if status == 503:
            error = json.loads(data)["error"]
            assert error["type"] == "service_unavailable" and "shutting down" in error["message"], error
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert grpc.StatusCode.UNAVAILABLE in codes
    assert code == 0, server.output[-3000:]
    assert took < 3 + 30, took  # the drain, the close grace, and a slow machine's exit
    assert "Traceback" not in server.output, server.output[-3000:]
    lines = _drain_lines(server.output)
    assert len(lines) == 2 and "cut off with 503" in lines[1], server.output[-3000:]


def test_a_request_still_sending_its_body_when_the_drain_ends_gets_503_not_500(tmp_path):
    """uvicorn cancels what still runs once its close grace is over; a request cut off that way is
    answered 503 in the OpenAI shape, without a traceback."""
    model = write_model_dir(tmp_path / "tiny", token_types=True)
    server = Server(["--model", f"t={model.path}", "--drain-seconds", "1"])
    try:
        with socket.create_connection((HOST, server.port), timeout=30) as s:
            s.sendall(
                b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ["hello'
            )
            time.sleep(0.3)  # the request is reading its body
            server.process.send_signal(signal.SIGTERM)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        code = server.process.wait(30)
    finally:
        server.stop()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), reply[:300]
    assert json.loads(body)["error"]["type"] == "service_unavailable"
    assert code == 0
    assert "Traceback" not in server.output, server.output[-3000:]
