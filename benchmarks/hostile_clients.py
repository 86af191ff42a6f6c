"""Issue 17's hostile clients against `fastembed-native serve` with its default flags (all-MiniLM-L6-v2,
127.0.0.1): the server's RSS (from /proc) during and after each load, /health and a one-text query
timed while it runs, and what the hostile clients got back.

    python benchmarks/hostile_clients.py [--out benchmarks/results/serve/hostile.json]

Each load is bounded in count and time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import contextlib

from serving import HOST, Server, free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.rss: list[float] = []
        self.health: list[float] = []
        self.query: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._rss), threading.Thread(target=self._probe)]

    def _rss(self) -> None:
        while not self.stop.wait(0.05):
            self.rss.append(rss_mb(self.server.process.pid))

    def _probe(self) -> None:
        while not self.stop.wait(0.1):
            start = time.monotonic()
            self.server.request("GET", "/health", timeout=60)
            self.health.append(time.monotonic() - start)
            start = time.monotonic()
            self.server.request("POST", "/v1/embeddings", {"input": "hello world"}, timeout=60)
            self.query.append(time.monotonic() - start)

    def __enter__(self) -> Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


def measure(server: Server, name: str, load) -> dict:  # type: ignore[no-untyped-def]
    time.sleep(2)
    idle = rss_mb(server.process.pid)
    start = time.monotonic()
    with Watch(server) as watch:
        outcome = load()
    seconds = time.monotonic() - start
    time.sleep(3)
    after = rss_mb(server.process.pid)
    row = {
        "load": name,
        "seconds": round(seconds, 1),
        "rss_before_mb": round(idle),
        "rss_peak_mb": round(max(watch.rss or [idle])),
        "rss_after_mb": round(after),
        "health_max_s": round(max(watch.health or [0]), 3),
        "query_p99_s": round(p99(watch.query), 3),
        "probes": len(watch.query),
        "outcome": outcome,
    }
    print(json.dumps(row), flush=True)
    return row


def statuses(results: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in results:
        out[str(status)] = out.get(str(status), 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve/hostile.json"))
    args = parser.parse_args()
    grpc_port = free_port()
    rows = []
    server = Server(["--grpc-port", str(grpc_port), "--api-key", "k"], env={}, ready_timeout=300)
    auth = {"authorization": "Bearer k"}
    try:
        big = json.dumps({"input": [("lorem ipsum dolor sit amet " * 300)[:7000]] * 2048}).encode()

        def big_bodies() -> dict:
            with ThreadPoolExecutor(32) as pool:
                got = list(pool.map(lambda _: server.request("POST", "/v1/embeddings", big, headers=auth, timeout=300)[0], range(32)))  # fmt: skip
            return {"body_mb": round(len(big) / 1e6, 1), "statuses": statuses(got)}

        def stalled_bodies() -> dict:
            socks = []
            for _ in range(64):
                s = socket.create_connection((HOST, server.port), timeout=60)
                head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                with contextlib.suppress(OSError):
                    s.sendall(
                        head + b"Content-Length: 16000000\r\n\r\n" + b'{"input": ["' + b"a" * 15_000_000
                    )
                socks.append(s)
            answers = []
            for s in socks:
                try:
                    answers.append(s.recv(12)[9:12].decode() or "closed")
                except OSError:
                    answers.append("reset")
                s.close()
            return {"statuses": statuses(answers)}  # type: ignore[arg-type]

        def endless_headers() -> dict:
            socks, answers = [], []
            for _ in range(20):
                s = socket.create_connection((HOST, server.port), timeout=60)
                with contextlib.suppress(OSError):
                    s.sendall(b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 20_000_000)
                socks.append(s)
            for s in socks:
                try:
                    answers.append(s.recv(12)[9:12].decode() or "closed")
                except OSError:
                    answers.append("reset")
                s.close()
            return {"statuses": statuses(answers)}  # type: ignore[arg-type]

        def commas() -> dict:
            got = [
                server.request(
                    "POST", "/v1/embeddings", {"input": "," * 2_000_000}, headers=auth, timeout=300
                )[0],
                server.request(
                    "POST", "/v1/embeddings", {"input": ["," * 1000] * 2048}, headers=auth, timeout=300
                )[0],
                server.request("POST", "/tokenize", {"inputs": "," * 4_000_000}, headers=auth, timeout=300)[
                    0
                ],
            ]
            return {"statuses": statuses(got)}

        def tei_stream() -> dict:
            import grpc

            from fastembed_native.serve.grpc import tei_pb2, tei_pb2_grpc

            text = "lorem ipsum " * 87_000
            with grpc.insecure_channel(
                f"{HOST}:{grpc_port}", options=[("grpc.max_send_message_length", -1)]
            ) as ch:
                stream = tei_pb2_grpc.EmbedStub(ch).EmbedStream(
                    iter([tei_pb2.EmbedRequest(inputs=text, truncate=True)] * 300), metadata=[("authorization", "Bearer k")], timeout=600
                )  # fmt: skip
                return {"answers": sum(1 for _ in stream)}

        def made_up_methods() -> dict:
            import grpc

            with grpc.insecure_channel(f"{HOST}:{grpc_port}") as ch:
                for i in range(3000):
                    with contextlib.suppress(grpc.RpcError):
                        ch.unary_unary(f"/made.up.Service{i}/Method{i}")(b"", timeout=10)
            return {"metrics_bytes": len(server.request("GET", "/metrics", headers=auth)[2])}

        def idle_connections() -> dict:
            socks = [socket.create_connection((HOST, server.port), timeout=60) for _ in range(1100)]
            time.sleep(0.5)
            start = time.monotonic()
            with socket.create_connection((HOST, server.port), timeout=30) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                refused = s.recv(12)[9:12].decode()
            refused_after = time.monotonic() - start
            closed = 0
            for s in socks:
                s.settimeout(30)
                try:
                    closed += s.recv(1) == b""
                except OSError:
                    closed += 1
                s.close()
            return {
                "surplus_status": refused,
                "surplus_answered_s": round(refused_after, 3),
                "idle_closed": closed,
            }

        loads = [
            ("32 x 14.7 MB bodies", big_bodies),
            ("64 stalled 15/16 MB bodies", stalled_bodies),
            ("20 x 20 MB header lines", endless_headers),
            ("commas: 2M / 2048 x 1000 / tokenize 4M", commas),
            ("TEI EmbedStream 300 x 1 MB", tei_stream),
            ("3000 made-up gRPC methods", made_up_methods),
            ("1100 idle connections", idle_connections),
        ]
        for name, load in loads:
            rows.append(measure(server, name, load))
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
