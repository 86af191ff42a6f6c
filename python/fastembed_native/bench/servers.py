"""The servers ``bench serve`` compares: how each is started, probed and stopped."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where our server also answers gRPC during the benchmark.
GRPC_PORT = 18404


@dataclass
class Peer:
    """A server process to benchmark: how to start it and where to send OpenAI-style requests."""

    name: str
    command: list[str]
    port: int
    path: str = "/v1/embeddings"
    model: str = "model"
    encoding: str = "float"  # "float" or "base64"
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/health"
    process: subprocess.Popen[bytes] | None = None
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> None:
        import socket
        import urllib.request

        # A server already on the port would answer the health check and every request in place of
        # the one started here (another benchmark left running): refuse rather than measure it.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(
                    f"port {self.port} is in use already: stop what listens there before benchmarking {self.name}"
                )
        start = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1) as response:
                    if response.status == 200:
                        self.ready_seconds = time.perf_counter() - start
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready within {timeout} s")

    def rss_mb(self) -> dict[str, float]:
        """Current and peak RSS of the server and its children (MB)."""
        import psutil

        assert self.process is not None
        root = psutil.Process(self.process.pid)
        procs = [root, *root.children(recursive=True)]
        current = sum(p.memory_info().rss for p in procs) / 2**20
        peak = 0.0
        for p in procs:
            status = Path(f"/proc/{p.pid}/status")
            if status.is_file():
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) / 1024
        return {"rss_mb": current, "peak_rss_mb": peak}

    def metrics(self) -> dict[str, float]:
        """Our server's Prometheus samples, summed over labels (empty for peers without them)."""
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("{")[0].split(" ")[0], line.rsplit(" ", 1)[1]
                totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def make_peers(args: argparse.Namespace, model_dir: Path) -> list[Peer]:
    python = sys.executable
    ours = [python, "-m", "fastembed_native.cli", "serve", "--model", f"model={model_dir}"]
    ours += ["--threads", str(args.threads), "--host", "127.0.0.1", "--grpc-port", str(GRPC_PORT)]
    peers = [
        Peer("fastembed_native", [*ours, "--port", "18401"], 18401),
        Peer("naive_fastapi_ort", [], 18402),
    ]
    peers[1].command = [
        python, "-m", "uvicorn", "fastembed_native.bench.naive_server:app", "--host", "127.0.0.1",
        "--port", "18402", "--log-level", "warning",
    ]  # fmt: skip
    peers[1].env = {"FASTEMBED_BENCH_MODEL_DIR": str(model_dir), "FASTEMBED_BENCH_THREADS": str(args.threads)}
    if args.infinity:
        # benchmarks/peers/: infinity's own venv, and a view of the model dir it can load (see there).
        peers_dir = Path(__file__).resolve().parents[3] / "benchmarks" / "peers"
        view = Path(args.infinity_view or Path(args.infinity).parent / "infinity-model")
        subprocess.run(
            ["bash", str(peers_dir / "setup_infinity.sh"), args.infinity, str(model_dir), str(view)],
            check=True,
        )
        command = ["bash", str(peers_dir / "serve_infinity.sh"), args.infinity, str(view), "18403"]
        # infinity has no ORT thread setting: taskset gives it the same CPUs the others use.
        command = ["taskset", "-c", f"0-{args.threads - 1}", *command]
        peers.append(Peer("infinity", command, 18403, model=view.name))
    return [p for p in peers if p.name in args.contenders.split(",")]


def engine_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What our server's metrics say about one run: engine calls, inputs per call, and mean
    tokenize / queue / inference time per request (ms)."""
    if "fastembed_batch_texts_count" not in after:
        return {}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    calls = delta("fastembed_batch_texts_count")
    requests = delta("fastembed_tokenize_seconds_count")
    return {
        "engine_calls": calls,
        "inputs_per_call": delta("fastembed_batch_texts_sum") / calls if calls else 0.0,
        "requests_per_call": delta("fastembed_batch_requests_sum") / calls if calls else 0.0,
        "tokenize_ms_per_request": 1000 * delta("fastembed_tokenize_seconds_sum") / requests
        if requests
        else 0.0,
        "queue_ms_per_request": 1000 * delta("fastembed_queue_seconds_sum") / requests if requests else 0.0,
    }
