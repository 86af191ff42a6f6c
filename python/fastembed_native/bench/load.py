"""Load generators for ``bench serve``: concurrent clients over HTTP (aiohttp) and gRPC, each run
bounded by its request count and a time limit."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np

from .servers import Peer


async def run_load(peer: Peer, batches: list[list[str]], clients: int, limit_s: float) -> dict[str, Any]:
    """``clients`` workers send ``batches`` (one request each) in order until done or ``limit_s``."""
    import aiohttp

    latencies: list[float] = []
    vectors: dict[int, np.ndarray] = {}
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + limit_s
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=limit_s + 60)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, errors
        while next_index < len(batches) and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            body = {"input": batches[index], "model": peer.model, "encoding_format": peer.encoding}
            start = time.perf_counter()
            try:
                async with session.post(peer.url + peer.path, json=body) as response:
                    payload = await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - start)
            if not ok:
                errors += 1
                continue
            data = json.loads(payload)["data"]
            if peer.encoding == "base64":
                rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
            else:
                rows = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
            vectors[index] = np.vstack(rows)

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    wall = time.perf_counter() - start
    texts = sum(len(batches[i]) for i in vectors)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000 if latencies else (np.nan,) * 3
    return {
        "requests": len(latencies),
        "errors": errors,
        "texts": texts,
        "seconds": wall,
        "texts_per_s": texts / wall,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "vectors": vectors,
    }


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
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000 if latencies else (np.nan,) * 3
    return {
        "requests": len(latencies), "errors": errors, "texts": texts, "seconds": wall,
        "texts_per_s": texts / wall, "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
        "vectors": vectors,
    }  # fmt: skip
