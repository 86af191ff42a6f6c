"""The benchmarks' worker processes (bench/worker_protocol.py): hello, replies, errors named, and the
worker always ended, also when the parent gives up while it is still working."""

from __future__ import annotations

import json
import sys
import time

import pytest

from fastembed_native.bench.worker_protocol import Worker

SCRIPT = """
import sys, time
from fastembed_native.bench.worker_protocol import serve

def setup():
    if sys.argv[1] == "fail":
        raise ImportError("no module named 'peer'")
    print("a library's chatter")  # must not reach the replies
    handlers = {
        "echo": lambda request: {"echo": request["value"]},
        "sleep": lambda request: time.sleep(request["seconds"]) or {},
        "boom": lambda request: 1 / 0,
    }
    return {"ready": True}, handlers

sys.exit(serve(setup))
"""


def start(mode: str = "ok") -> Worker:
    return Worker([sys.executable, "-c", SCRIPT, mode], "test")


def test_requests_are_answered_and_errors_named():
    worker = start()
    try:
        assert worker.hello == {"ready": True}
        assert worker.ask({"op": "echo", "value": [1, "two"]}) == {"echo": [1, "two"]}
        with pytest.raises(RuntimeError, match="test worker: ZeroDivisionError"):
            worker.ask({"op": "boom"})
        with pytest.raises(RuntimeError, match="unknown op 'nope'"):
            worker.ask({"op": "nope"})
        assert worker.peak_rss_mb() > 1  # every worker answers peak_rss
    finally:
        worker.close()
    assert worker.process.returncode == 0  # quit


def test_a_worker_that_cannot_start_says_why():
    with pytest.raises(RuntimeError, match="test worker: ImportError: no module named 'peer'"):
        start("fail")


def test_a_busy_worker_is_killed_on_close():
    worker = start()
    assert worker.process.stdin is not None
    worker._busy = True  # as when the parent is interrupted waiting for this reply
    worker.process.stdin.write(json.dumps({"op": "sleep", "seconds": 60}) + "\n")
    worker.process.stdin.flush()
    start_close = time.perf_counter()
    worker.close()
    assert worker.process.returncode is not None and time.perf_counter() - start_close < 10
