"""The cross-request batching core: one queue per model, one engine thread draining it.

Requests arrive already tokenized (as :class:`Job` s) from any transport. While the engine runs a call,
new jobs accumulate; the next call takes everything waiting up to a token budget, and the engine's own
length sorting and token-budget batches then apply across requests. There is no wait timer: an idle
queue starts a lone query at once. A job bigger than one call is split into parts and re-queued behind
the jobs that arrived meanwhile, so a 2048-text request never holds a short query for its whole length.

Threads: ``submit`` and ``cancel`` run on the event loop; the engine thread only touches a job's arrays
and hands results back with ``loop.call_soon_threadsafe``. The engine releases the GIL while it runs.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..engine import Embedder
from .errors import Draining, EngineFailure, Overloaded


class TokenSequence(Protocol):
    """What the engine needs of one tokenized input (``tokenizers.Encoding`` has it)."""

    @property
    def ids(self) -> list[int]: ...
    @property
    def type_ids(self) -> list[int]: ...
    def __len__(self) -> int: ...


@dataclass
class Job:
    """One request's inputs for one model, and where their raw (unnormalised) vectors go."""

    encodings: Sequence[TokenSequence]
    out: np.ndarray  # float32 (len(encodings), dim)
    future: asyncio.Future[None]
    tokens: int
    skip_prefix: int = 0  # prompt tokens left out of pooling (include_prompt: false models)
    enqueued: float = field(default_factory=time.perf_counter)
    done: int = 0  # encodings embedded so far
    taken: int = 0  # encodings handed to calls so far
    started: float | None = None  # when its first part's call began
    inference_seconds: float = 0.0  # summed durations of the calls its parts ran in
    cancelled: bool = False


class BatchMetrics(Protocol):
    """Where the queue reports what it did (serve/metrics.py implements it)."""

    def engine_call(self, model: str, texts: int, tokens: int, requests: int, seconds: float) -> None: ...
    def queue_depth(self, model: str, jobs: int, tokens: int) -> None: ...


class BatchQueue:
    """One model's queue and its engine thread.

    Args:
        name: the model's served name (for metrics and messages).
        embedder: the engine.
        max_call_tokens: tokens (real, not padded) one engine call takes at most, over all requests.
        max_queued_tokens: tokens waiting at most; a job that would go past it is refused with 429
            (unless the queue is empty: a large batch is split, never refused for its size alone).
        metrics: receives per-call statistics.
    """

    def __init__(
        self,
        name: str,
        embedder: Embedder,
        *,
        max_call_tokens: int,
        max_queued_tokens: int,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self.name = name
        self.embedder = embedder
        self.max_call_tokens = max_call_tokens
        self.max_queued_tokens = max_queued_tokens
        self._metrics = metrics
        self._pending: deque[Job] = deque()
        self._queued_tokens = 0
        self._lock = threading.Condition()
        self._closed = False
        # The engine's speed, for retry-after: a moving average over calls (a MiniLM-sized model
        # on 2 cores to start with).
        self._tokens_per_second = 20_000.0
        #: perf_counter() when the running call began, None while idle (for the health check).
        self.busy_since: float | None = None
        self._thread = threading.Thread(target=self._work, name=f"fastembed-native-{name}", daemon=True)
        self._thread.start()

    # -- event-loop side ---------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job``; its future completes when every input is embedded.

        Raises:
            Overloaded: the queue holds too many tokens already.
            Draining: the queue is closed.
        """
        with self._lock:
            if self._closed:
                raise Draining("the server is shutting down and takes no new requests")
            if self._pending and self._queued_tokens + job.tokens > self.max_queued_tokens:
                retry_ms = self._retry_after_ms()
                raise Overloaded(
                    f"model {self.name!r} has {self._queued_tokens} tokens queued (limit {self.max_queued_tokens}); "
                    f"retry after {retry_ms} ms",
                    code="queue_full",
                    headers={"retry-after-ms": str(retry_ms), "retry-after": str(max(1, retry_ms // 1000))},
                )
            self._pending.append(job)
            self._queued_tokens += job.tokens
            self._report_depth()
            self._lock.notify()

    def cancel(self, job: Job) -> None:
        """Drop what of ``job`` has not run yet (its client went away)."""
        with self._lock:
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)
                self._queued_tokens -= self._untaken_tokens(job)
                self._report_depth()

    def close(self) -> None:
        """Refuse new jobs; jobs already queued still run. The thread ends when the queue is empty."""
        with self._lock:
            self._closed = True
            self._lock.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to finish the queue; True if it did within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> tuple[int, int]:
        """(jobs, tokens) waiting."""
        with self._lock:
            return len(self._pending), self._queued_tokens

    # -- engine-thread side --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:  # closed and empty
                    return
                parts = self._take()
                self._report_depth()
            self._run(parts)

    def _take(self) -> list[tuple[Job, int, int]]:
        """Parts (job, first, stop) for one call, up to ``max_call_tokens`` (at least one input).

        A call holds jobs of one ``skip_prefix`` (the engine leaves that many prompt tokens out of
        every row's pooling); jobs with another stay at the head of the queue for the next call.
        """
        parts: list[tuple[Job, int, int]] = []
        budget = self.max_call_tokens
        skip = self._pending[0].skip_prefix
        other: list[Job] = []
        partial = None
        while self._pending and budget > 0:
            job = self._pending[0]
            if job.skip_prefix != skip:
                other.append(self._pending.popleft())
                continue
            first = stop = job.taken
            while stop < len(job.encodings):
                length = len(job.encodings[stop])
                if length > budget and (parts or stop > first):  # a call always takes one input
                    break
                budget -= length
                stop += 1
            if stop == first:  # the next input does not fit: this call is full
                break
            self._queued_tokens -= sum(len(e) for e in job.encodings[first:stop])
            job.taken = stop
            parts.append((job, first, stop))
            self._pending.popleft()
            if stop < len(job.encodings):
                partial = job  # the rest waits behind whoever arrived meanwhile
                break
        self._pending.extendleft(reversed(other))
        if partial is not None:
            self._pending.append(partial)
        return parts

    def _run(self, parts: list[tuple[Job, int, int]]) -> None:
        encodings = [e for job, first, stop in parts for e in job.encodings[first:stop]]
        out = np.empty((len(encodings), self.embedder.dim), dtype=np.float32)
        start = time.perf_counter()
        self.busy_since = start
        for job, _, _ in parts:
            if job.started is None:
                job.started = start
        try:
            self.embedder.embed_encodings(
                encodings, out, self.embedder.batch_size, normalize=False, skip_prefix=parts[0][0].skip_prefix
            )
        except Exception as exc:  # the engine failed on validated input: every job in the call fails
            self.busy_since = None
            failure = EngineFailure(f"the engine failed: {type(exc).__name__}: {exc}")
            for job, _, _ in parts:
                self._finish(job, failure)
            return
        seconds = time.perf_counter() - start
        self.busy_since = None
        tokens = sum(len(e) for e in encodings)
        if seconds > 0:
            self._tokens_per_second = 0.8 * self._tokens_per_second + 0.2 * (tokens / seconds)
        if self._metrics is not None:
            self._metrics.engine_call(self.name, len(encodings), tokens, len(parts), seconds)
        row = 0
        for job, first, stop in parts:
            job.out[first:stop] = out[row : row + stop - first]
            row += stop - first
            job.inference_seconds += seconds
            job.done += stop - first
            if job.done == len(job.encodings):
                self._finish(job, None)

    def _finish(self, job: Job, error: BaseException | None) -> None:
        loop = job.future.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, job.future, error)

    # -- helpers ---------------------------------------------------------------------------------
    def _untaken_tokens(self, job: Job) -> int:
        return sum(len(e) for e in job.encodings[job.taken :])

    def _retry_after_ms(self) -> int:
        """When the queue will have room: its tokens at the engine's measured speed, spread at
        random over [1x, 2x] so the refused clients do not all come back at the same moment."""
        seconds = self._queued_tokens / self._tokens_per_second
        return int(min(10_000, max(20, 1000 * seconds * (1 + random.random()))))

    def _report_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth(self.name, len(self._pending), self._queued_tokens)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # cancelled by the request that gave up on it
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def stuck_queues(queues: Sequence[BatchQueue], stuck_after: float) -> list[str]:
    """Names of queues whose engine thread died or has been inside one call for over ``stuck_after`` s."""
    now = time.perf_counter()
    stuck = []
    for queue in queues:
        since = queue.busy_since
        if (not queue.alive and not queue.closed) or (since is not None and now - since > stuck_after):
            stuck.append(queue.name)
    return stuck
