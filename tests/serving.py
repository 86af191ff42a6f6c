"""A `fastembed-native serve` subprocess on 127.0.0.1 for tests: started on a free port, waited
for through /health, stopped (SIGTERM, then SIGKILL) by whoever started it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """One server process. ``args`` are `serve` flags after ``--host``/``--port``."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, ready_timeout: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = [
            sys.executable,
            "-m",
            "fastembed_native.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        self.output = ""
        self.process = subprocess.Popen(
            command + args,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.process.stdout.read()}"
                )
            try:
                status, _, _ = self.request("GET", "/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {ready_timeout} s")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection: (status, headers, body). ``body``: bytes, or JSON-encoded."""
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            all_headers = {"content-type": "application/json", **(headers or {})}
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kwargs)
        return status, json.loads(data) if data else None

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one Prometheus sample (0 when absent)."""
        _, _, data = self.request("GET", "/metrics")
        total = 0.0
        for line in data.decode().splitlines():
            if line.startswith(name + (("{" + labels) if labels else "")) and not line.startswith("#"):
                head, value = line.rsplit(" ", 1)
                if head.split("{")[0] == name:
                    total += float(value)
        return total

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.output = self.process.stdout.read()
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def model_arg(name: str, path: Path) -> list[str]:
    return ["--model", f"{name}={path}"]


# -- Decoding the sparse and multi-vector answers (shared by the sparse, multi-vector and BGE-M3 tests) --
def tei_sparse_rows(items: list[list[dict]], size: int) -> np.ndarray:
    """TEI's ``/embed_sparse`` answer as dense rows, checking its shape: indices ascending and unique,
    only ``index`` and ``value`` keys, every value positive."""
    out = np.zeros((len(items), size), dtype=np.float32)
    for row, values in enumerate(items):
        indices = [v["index"] for v in values]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)
        assert all(set(v) == {"index", "value"} and v["value"] > 0 for v in values)
        out[row, indices] = [v["value"] for v in values]
    return out


def multi_vector_rows(body: dict, dim: int) -> list[np.ndarray]:
    """``/embed_multi_vector``'s float answer as one ``(tokens, dim)`` array per input, checking each
    item's index, object and shape."""
    out = []
    for i, item in enumerate(body["data"]):
        assert item["index"] == i and item["object"] == "multi_vector"
        rows = np.asarray(item["embedding"], dtype=np.float32).reshape(-1, dim)
        assert list(rows.shape) == item["shape"]
        out.append(rows)
    return out


def assert_arrays_close(answer: list[np.ndarray], expected: list[np.ndarray], atol: float) -> None:
    """Two lists of arrays of the same shapes, equal within ``atol``."""
    assert len(answer) == len(expected)
    for ours, want in zip(answer, expected, strict=True):
        assert ours.shape == want.shape
        np.testing.assert_allclose(ours, want, atol=atol)
