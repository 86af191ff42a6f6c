"""Load generators for ``bench serve``: concurrent keep-alive clients over HTTP (aiohttp) and gRPC,
each run bounded by its request count and a time limit.

:func:`run_calls` is the HTTP core: any list of :class:`Call` s (an embedding request, a rerank, a
hostile request with the 4xx it should get); :func:`run_load` (embeddings) and :func:`run_rerank_load`
(TEI's ``/rerank``) build the calls of their loads and read the answers."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .servers import Peer

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One HTTP request of a load: its route, its JSON body, how many inputs it carries (texts or
    pairs: what throughput counts) and the status it should get."""

    path: str
    body: dict[str, Any]
    items: int = 1
    expect: int = 200


async def run_calls(
    url: str,
    calls: Sequence[Call],
    clients: int,
    limit_s: float,
    parse: Callable[[bytes], Any] | None = None,
) -> dict[str, Any]:
    """``clients`` keep-alive workers send ``calls`` in order until all are sent or ``limit_s`` has
    passed (what was sent still gets its answer, inside the wall time).

    Returns ``requests`` (sent), ``errors`` (answers other than the call's ``expect``, or no answer),
    ``statuses`` (answers by HTTP status; 0: no answer), ``items`` (of the calls answered 200 as
    expected) and ``items_per_s`` over the wall time, latency percentiles over every call (ms), the
    ``latencies`` in seconds by call index, and ``answers``: ``parse(body)`` of each 200 by index.
    """
    import aiohttp

    latencies: dict[int, float] = {}
    answers: dict[int, Any] = {}
    statuses: Counter[int] = Counter()
    errors = 0
    items = 0
    next_index = 0
    deadline = time.perf_counter() + limit_s
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=limit_s + 600)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, errors, items
        while next_index < len(calls) and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            call = calls[index]
            start = time.perf_counter()
            data = json.dumps(call.body).encode()
            # aiohttp warns that a body over 1 MiB as bytes blocks the loop; a stream does not.
            payload_in = io.BytesIO(data) if len(data) > 2**20 else data
            try:
                async with session.post(url + call.path, data=payload_in, headers=JSON) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status, payload = 0, b""
            latencies[index] = time.perf_counter() - start
            statuses[status] += 1
            if status != call.expect:
                errors += 1
            elif status == 200:
                items += call.items
                if parse is not None:
                    answers[index] = parse(payload)

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    wall = time.perf_counter() - start
    p50, p95, p99 = percentiles_ms(list(latencies.values()))
    return {
        "requests": len(latencies), "errors": errors, "statuses": dict(sorted(statuses.items())),
        "items": items, "seconds": wall, "items_per_s": items / wall,
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "latencies": latencies, "answers": answers,
    }  # fmt: skip


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of ``seconds`` in ms (NaN when empty)."""
    if not seconds:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(seconds, [50, 95, 99]) * 1000
    return float(p50), float(p95), float(p99)


def embedding_call(peer: Peer, texts: list[str]) -> Call:
    """An OpenAI embeddings request of ``texts`` to ``peer``."""
    body = {"input": texts, "model": peer.model, "encoding_format": peer.encoding}
    return Call(peer.path, body, len(texts))


def _vectors(encoding: str, payload: bytes) -> np.ndarray:
    data = json.loads(payload)["data"]
    if encoding == "base64":
        rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
    else:
        rows = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
    return np.vstack(rows)


async def run_load(peer: Peer, batches: list[list[str]], clients: int, limit_s: float) -> dict[str, Any]:
    """``clients`` workers send ``batches`` (one embeddings request each) in order until done or
    ``limit_s``: :func:`run_calls`, counted in texts, with each answer's ``vectors`` by index."""
    out = await run_calls(
        peer.url,
        [embedding_call(peer, batch) for batch in batches],
        clients,
        limit_s,
        parse=lambda payload: _vectors(peer.encoding, payload),
    )
    out["texts"], out["texts_per_s"] = out.pop("items"), out.pop("items_per_s")
    out["vectors"] = out.pop("answers")
    del out["latencies"], out["statuses"]
    return out


def rerank_call(model: str, query: str, documents: list[str], **options: Any) -> Call:
    """A TEI ``/rerank`` request: ``query`` against ``documents``, ``options`` as TEI names them."""
    return Call("/rerank", {"model": model, "query": query, "texts": documents, **options}, len(documents))


def tei_scores(payload: bytes) -> np.ndarray:
    """A TEI ``/rerank`` answer (best first) as float32 scores in input order."""
    ranks = json.loads(payload)
    scores = np.empty(len(ranks), dtype=np.float32)
    for rank in ranks:
        scores[rank["index"]] = rank["score"]
    return scores


async def run_rerank_load(
    peer: Peer, workload: Sequence[tuple[str, list[str]]], clients: int, limit_s: float
) -> dict[str, Any]:
    """``clients`` workers send one TEI ``/rerank`` request (raw scores: the logits) per
    (query, documents) item of ``workload``: :func:`run_calls`, counted in pairs, with each
    answer's ``scores`` in input order by index."""
    calls = [rerank_call(peer.model, query, docs, raw_scores=True) for query, docs in workload]
    out = await run_calls(peer.url, calls, clients, limit_s, parse=tei_scores)
    out["pairs"], out["pairs_per_s"] = out.pop("items"), out.pop("items_per_s")
    out["scores"] = out.pop("answers")
    return out


async def run_grpc_load(
    target: str, model: str, batches: list[list[str]], clients: int, limit_s: float
) -> dict[str, Any]:
    """``run_load`` over gRPC: ``clients`` concurrent callers of ``fastembed_native.v1`` Embed on one
    channel (one HTTP/2 connection, as a gRPC client holds it), vectors read from the packed bytes."""
    import grpc

    from ..serve.grpc import fastembed_pb2 as v1
    from ..serve.grpc import fastembed_pb2_grpc as v1_grpc

    latencies: list[float] = []
    vectors: dict[int, np.ndarray] = {}
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + limit_s
    # Large batches over the default 4 MiB receive limit would fail on the client, not the server.
    options = [("grpc.max_receive_message_length", -1)]

    async def worker(stub: v1_grpc.EmbedderStub) -> None:
        nonlocal next_index, errors
        while next_index < len(batches) and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                response = await stub.Embed(
                    v1.EmbedRequest(inputs=batches[index], model=model), timeout=limit_s + 60
                )
            except grpc.aio.AioRpcError:
                latencies.append(time.perf_counter() - start)
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            vectors[index] = np.frombuffer(response.vectors, "<f4").reshape(
                response.count, response.dimensions
            )

    start = time.perf_counter()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = v1_grpc.EmbedderStub(channel)
        await asyncio.gather(*(worker(stub) for _ in range(clients)))
    wall = time.perf_counter() - start
    texts = sum(len(batches[i]) for i in vectors)
    p50, p95, p99 = percentiles_ms(latencies)
    return {
        "requests": len(latencies), "errors": errors, "texts": texts, "seconds": wall,
        "texts_per_s": texts / wall, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "vectors": vectors,
    }  # fmt: skip
