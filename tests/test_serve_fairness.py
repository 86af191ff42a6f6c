"""A model's queue shared fairly: a request bigger than the whole queue is refused (413), a large
admitted request yields to small ones and does not get them refused; clients that hang up mid-body
are counted as what they are (499, no traceback); client input is quoted at a bounded length in
every message, HTTP and gRPC. Servers listen on 127.0.0.1 only; every load is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import numpy as np
import pytest
from conftest import write_model_dir
from serving import HOST, Server, free_port

from fastembed_native.engine import Embedder
from fastembed_native.serve.batcher import BatchQueue, Job
from fastembed_native.serve.config import ServeConfig
from fastembed_native.serve.errors import QUOTE_CHARS, Overloaded, PayloadTooLarge, quote_input
from fastembed_native.serve.service import EmbeddingService, EmbedRequest

pytestmark = pytest.mark.timeout(240)

LONG = "Embedding servers batch requests from many clients into one engine call. " * 12  # ~170 tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("fair") / "tiny", token_types=True, normalize=True)


class Gate:
    """Holds an embedder's engine calls until ``open()``, recording each call's input count."""

    def __init__(self, embedder: Embedder) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        real = embedder.embed_encodings

        def held(encodings, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls.append(len(encodings))
            self.entered.set()
            self._open.wait(30)
            return real(encodings, *args, **kwargs)

        embedder.embed_encodings = held  # type: ignore[method-assign]

    def open(self) -> None:
        self._open.set()


# -- the queue's admission: 413 for a request bigger than the queue, fair shares below it --------------


def test_a_request_bigger_than_the_whole_queue_is_refused_413_even_when_the_queue_is_empty(tiny):
    service = EmbeddingService(
        {"tiny": Embedder(tiny.path)}, ServeConfig(api_key=None, max_queued_tokens=100, max_call_tokens=16)
    )

    async def main():
        with pytest.raises(PayloadTooLarge) as refused:
            await service.embed(EmbedRequest(["hello world"] * 26))  # 26 x 4 = 104 tokens
        at_limit = await service.embed(EmbedRequest(["hello world"] * 25))  # 100 tokens: admitted
        return refused.value, at_limit

    error, at_limit = asyncio.run(main())
    assert error.status == 413 and error.code == "too_many_tokens" and error.param == "input"
    assert "104 tokens" in error.message and "--max-queued-tokens" in error.message and "100" in error.message
    assert at_limit.vectors.shape == (25, 7)
    assert service.close(5)


def test_a_large_admitted_request_neither_gets_small_ones_refused_nor_holds_them_back(tiny):
    """The issue's case: one request at the queue limit, admitted into an empty queue, used to get
    every later request a 429 until it ended. Now small requests are admitted and run first."""
    embedder = Embedder(tiny.path)
    gate = Gate(embedder)
    service = EmbeddingService(
        {"tiny": embedder}, ServeConfig(api_key=None, max_queued_tokens=100, max_call_tokens=16)
    )
    finished: list[str] = []

    async def tracked(name: str, request: EmbedRequest):
        result = await service.embed(request)
        finished.append(name)
        return result

    async def main():
        big = asyncio.ensure_future(tracked("big", EmbedRequest(["hello world"] * 25)))  # 100 tokens
        await asyncio.to_thread(gate.entered.wait, 10)  # its first 16 tokens are in the engine
        small = [
            asyncio.ensure_future(tracked(f"small{i}", EmbedRequest([f"flag {i % 3}"]))) for i in range(20)
        ]
        await asyncio.sleep(0.05)  # every small request is queued (or refused) by now
        gate.open()
        return await asyncio.gather(big, *small, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, BaseException)]
    assert not refused, f"{len(refused)} small requests refused: {refused[0]}"
    assert finished[-1] == "big", f"the big request finished before small ones: {finished}"
    assert sorted(finished[:-1]) == sorted(f"small{i}" for i in range(20))
    expected = Embedder(tiny.path).embed(["flag 0"])
    np.testing.assert_allclose(results[1].vectors, expected, rtol=1e-5, atol=1e-6)
    assert service.close(5)


class _Tokens:
    """``length`` tokens, for a queue whose engine never runs."""

    def __init__(self, length: int) -> None:
        self.ids = [1] * length
        self.type_ids = [0] * length

    def __len__(self) -> int:
        return len(self.ids)


class _Idle:
    """An engine that is never called: the queue's thread waits for a job, and these tests submit
    only while it is blocked on a held first call (see ``_held_queue``)."""

    dim = 1
    batch_size = 32

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def embed_encodings(self, encodings, out, batch_size, normalize=False, skip_prefix=0):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.release.wait(30)
        out[:] = 0


def _job(loop: asyncio.AbstractEventLoop, sizes: list[int]) -> Job:
    encodings = [_Tokens(n) for n in sizes]
    return Job(encodings, np.empty((len(sizes), 1), np.float32), loop.create_future(), sum(sizes))


def test_fair_share_admission_counts_each_request_only_up_to_the_newcomer_size():
    """Per-request accounting: a newcomer of t tokens is admitted when t plus, for every queued
    request, min(its queued tokens, t) fits the limit; and nothing ever holds more than twice it."""
    engine = _Idle()
    queue = BatchQueue("m", engine, max_call_tokens=10, max_queued_tokens=1000)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        queue.submit(_job(loop, [10]))  # the engine takes it and blocks: the queue is empty again
        assert engine.entered.wait(10)
        queue.submit(_job(loop, [10] * 100))  # 1,000 tokens: the whole limit, admitted alone
        for _ in range(30):  # small newcomers are admitted: each is charged min(1000, 5) of it
            queue.submit(_job(loop, [5]))
        with pytest.raises(Overloaded) as full:  # 600 + min(1000, 600) + 30 x 5 > 1000
            queue.submit(_job(loop, [10] * 60))
        assert int(full.value.headers["retry-after-ms"]) > 0 and full.value.status == 429
        queue.submit(_job(loop, [10] * 40))  # 400 + 400 + 150 <= 1000: admitted
        # Admissions never take the queue past twice the limit, whatever the mix of sizes.
        refused = []
        for size in (300, 200, 150, 120, 100, 80, 60, 50, 40, 30, 20, 10, 5, 1) * 4:
            try:
                queue.submit(_job(loop, [size]))
            except Overloaded as exc:
                refused.append(exc.message)
            assert queue.queued[1] <= 2 * 1000
        assert any("twice the limit" in message for message in refused), refused
        with pytest.raises(PayloadTooLarge):
            queue.submit(_job(loop, [10] * 101))
    finally:
        queue.close()
        engine.release.set()
        queue.join(10)
        loop.close()


# -- the same over HTTP, against the real model ---------------------------------------------------------


def test_http_413_names_the_queue_limit(tiny):
    with Server(["--model", f"t={tiny.path}", "--max-queued-tokens", "40"]) as server:
        status, body = server.json("POST", "/v1/embeddings", {"input": ["hello world"] * 11, "model": "t"})
        ok, _ = server.json("POST", "/v1/embeddings", {"input": ["hello world"] * 10, "model": "t"})
    assert status == 413, body
    error = body["error"]
    assert error["code"] == "too_many_tokens" and error["type"] == "invalid_request_error"
    assert "44 tokens" in error["message"] and "--max-queued-tokens" in error["message"]
    assert "40" in error["message"]
    assert ok == 200


@pytest.mark.real_model
def test_http_queries_sent_while_a_large_request_runs_are_admitted_and_answered_first(minilm_dir, minilm):
    """A request of exactly --max-queued-tokens, admitted into an empty queue, then 30 queries of
    one text each while it runs: together they hold more than what its first calls took from the
    queue (which got some of them 429 before), and each is charged only its own size of the large
    one: all are admitted, and all are answered before the large request ends."""
    big = [f"{i} {LONG}" for i in range(300)]
    limit = sum(len(e) for e in minilm.tokenizer.encode(big))  # ~51,000 tokens: seconds of work
    args = ["--model", f"m={minilm_dir}", "--max-queued-tokens", str(limit), "--max-call-tokens", "1024"]
    with Server(args) as server:
        answers: list = []

        def send_big():
            answers.append(server.request("POST", "/embed", {"inputs": big}, timeout=240))
            answers.append(time.monotonic())

        small: list = []

        def send_small(i: int):
            status, _, data = server.request(
                "POST", "/embed", {"inputs": [f"query {i}: {LONG}"]}, timeout=120
            )
            small.append((status, time.monotonic(), data))

        worker = threading.Thread(target=send_big)
        worker.start()
        deadline = time.monotonic() + 60
        while server.metric("fastembed_batch_texts_count") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the large request's first call ran
        clients = [threading.Thread(target=send_small, args=(i,)) for i in range(30)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
        worker.join(240)
    assert answers and answers[0][0] == 200
    refused = [data[:200] for status, _, data in small if status != 200]
    assert len(small) == 30 and not refused, f"{len(refused)} refused: {refused[:1]}"
    assert max(t for _, t, _ in small) < answers[1], "the large request ended before the small ones"


# -- clients that hang up ------------------------------------------------------------------------------


def _half_body(port: int) -> None:
    """Headers for a 1,000-byte body, 100 bytes of it, then hang up."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ["' + b"a" * 87
        )
        time.sleep(0.05)


def _bad_chunk(port: int) -> None:
    """A chunked body whose second chunk size is not hexadecimal."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"inp\r\nZZZ\r\nuts\r\n0\r\n\r\n'
        )
        s.settimeout(10)
        with contextlib.suppress(OSError):
            s.recv(1000)  # uvicorn's own 400, then its close


def test_a_client_that_hangs_up_mid_body_is_counted_499_and_logs_no_traceback(tiny):
    with Server(["--model", f"t={tiny.path}"]) as server:
        for _ in range(3):  # (the tracebacks of more would fill the pipe the test reads the log from)
            _half_body(server.port)
            _bad_chunk(server.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            closed = server.metric("fastembed_requests_total", 'route="/embed",status="499"')
            errors = server.metric("fastembed_requests_total", 'route="/embed",status="500"')
            if closed + errors >= 6:
                break
            time.sleep(0.1)
        status, _ = server.json("POST", "/embed", {"inputs": ["hello world"]})  # still serving
    assert errors == 0, server.output[-3000:]
    assert closed == 6
    assert status == 200
    assert "Traceback" not in server.output, server.output[-3000:]
    lines = [line for line in server.output.splitlines() if not line.startswith("fastembed-native serve:")]
    assert len(lines) <= 6, "\n".join(lines[:40])  # one line per client at most


# -- client input quoted at a bounded length -------------------------------------------------------------


def test_quote_input_bounds_what_it_echoes():
    assert quote_input("minilm") == "'minilm'"
    long = quote_input("x" * 100_000)
    assert len(long) < QUOTE_CHARS + 40 and "100000 characters" in long
    assert len(quote_input([1] * 10_000)) < QUOTE_CHARS + 40
    assert "bits" in quote_input(10**5000)  # repr would refuse past 4,300 digits


def test_a_huge_model_name_is_quoted_short_over_http_and_grpc(tiny):
    grpc = pytest.importorskip("grpc", reason="the [serve] extra brings grpcio")
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    name = "m" * 100_000
    grpc_port = free_port()
    with Server(["--model", f"t={tiny.path}", "--grpc-port", str(grpc_port)]) as server:
        status, body = server.json("POST", "/v1/embeddings", {"input": "hello", "model": name})
        prompt_status, prompt = server.json(
            "POST", "/embed", {"inputs": "hello", "prompt_name": "p" * 100_000}
        )
        route_status, route = server.json("GET", "/" + "r" * 5000)
        with grpc.insecure_channel(f"{HOST}:{grpc_port}") as channel:
            stub = v1_grpc.EmbedderStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Embed(v1.EmbedRequest(inputs=["hello"], model=name), timeout=30)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert len(body["error"]["message"]) < 300 and "100000 characters" in body["error"]["message"]
    assert prompt_status == 400 and len(prompt["error"]["message"]) < 300
    assert route_status == 404 and len(route["error"]["message"]) < 400
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value
    assert len(info.value.details()) < 300
