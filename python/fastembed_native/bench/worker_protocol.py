"""The request/reply loop of the benchmarks' worker processes (:mod:`.pylate_worker`,
:mod:`.sparse_worker`) and the parent's side of it (:class:`Worker`).

A worker gets ready (loads its contender), writes one JSON line on stdout (its hello, or ``{"error":
...}`` when it could not start, then exits), and then answers one JSON request per line of stdin with
one JSON line on stdout. Whatever the libraries print goes to stderr, never to the replies. A request
is ``{"op": name, ...}``; every worker also answers ``{"op": "peak_rss"}`` with ``{"mb": its peak
RSS}`` and ``{"op": "quit"}`` with ``{}`` before exiting, and exits at the end of stdin (its parent
gone). A failing request is answered ``{"error": "Type: message"}``, so the parent names it instead of
waiting forever. Workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
parent, which gets it too, ends them (:meth:`Worker.close`).

Only the standard library: :mod:`.pylate_worker` runs it in pylate's venv, where this package is not
installed (there it is imported as the file beside the script).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def own_peak_rss_mb() -> float:
    """This process's peak RSS. On Linux from VmHWM, which belongs to the address space made at
    exec; ru_maxrss would carry over the peak of the parent that forked us."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def time_each(call: Callable[[list[str]], Any], texts: Sequence[str]) -> list[float]:
    """The seconds of ``call([text])`` for each text alone, as a search query is encoded."""
    spent = []
    for text in texts:
        start = time.perf_counter()
        call([text])
        spent.append(time.perf_counter() - start)
    return spent


def serve(setup: Callable[[], tuple[dict[str, Any], dict[str, Handler]]]) -> int:
    """The worker's side: ``setup()`` loads what the worker serves and returns its hello and its
    handlers by op; then requests are answered until ``quit`` or the end of stdin. The exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # whatever the libraries print must not mix with the replies

    def send(reply: dict[str, Any]) -> None:
        replies.write(json.dumps(reply) + "\n")
        replies.flush()

    try:
        hello, handlers = setup()
    except Exception as exc:  # a missing optional library: said in the hello, the parent skips us
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    send(hello)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            send({})
            return 0
        try:
            if op == "peak_rss":
                reply = {"mb": own_peak_rss_mb()}
            elif op in handlers:
                reply = handlers[op](request)
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # answered, so the parent names it instead of waiting forever
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        send(reply)
    return 0


class Worker:
    """The parent's side: starts ``argv`` (a worker speaking this protocol) and reads its hello
    (:attr:`hello`); :meth:`ask` sends one request and returns its reply; :meth:`close` ends it.

    Raises:
        RuntimeError: the worker could not start (its error), or a request failed or the worker
            exited (its stderr, which is the parent's, says why).
    """

    def __init__(self, argv: list[str], label: str, env: dict[str, str] | None = None) -> None:
        self.label = label
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._busy = True  # until the hello is read
        try:
            self.hello = self._reply()
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._busy = True
        with contextlib.suppress(BrokenPipeError):  # a worker that exited: said by _reply
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self._busy = False
        if not line:
            raise RuntimeError(
                f"the {self.label} worker exited (status {self.process.wait()}); see its stderr"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.label} worker: {reply['error']}")
        return reply

    def peak_rss_mb(self) -> float:
        """The worker's peak RSS so far."""
        return float(self.ask({"op": "peak_rss"})["mb"])

    def close(self, timeout: float = 30) -> None:
        """Ends the worker: ``quit`` when it is idle; killed when it is still working on a request
        (the parent interrupted or failed while waiting for it) or does not exit in ``timeout`` s."""
        if self.process.poll() is None:
            if not self._busy:
                with contextlib.suppress(Exception):
                    self.ask({"op": "quit"})
            else:
                self.process.kill()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
