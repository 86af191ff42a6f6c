"""The cross-request batching core: one queue per model, one engine thread draining it.

Requests arrive already tokenized (as :class:`Job` s) from any transport. While the engine runs a call,
new jobs accumulate; the next call takes everything waiting up to a token budget, and the engine's own
length sorting and token-budget batches then apply across requests. There is no wait timer: an idle
queue starts a lone query at once.

Fair shares. The engine serves queued jobs round robin: a call takes jobs in arrival order, and a job
bigger than what is left of the call gives up its place: its rest is queued again when the call ends,
behind every job that arrived meanwhile. So a 2048-text request never holds a short query back for its
whole length, and a job of ``t`` tokens admitted now is done once the engine has run its ``t`` tokens
and, of each other queued job, at most ``t`` (the rest of a bigger job runs after it). Admission
charges exactly that. ``max_queued_tokens`` stands for a wait (about that many tokens of engine work),
and a job of ``t`` tokens is admitted when::

    t + sum over queued jobs of min(tokens it has queued, t)  <=  max_queued_tokens

Each queued job counts against a newcomer only up to the newcomer's own size: one large request that
holds the whole limit costs a one-token query one token, not a 429, while many requests still fill the
queue (``n`` jobs of ``t`` tokens admit about ``max_queued_tokens / t`` of them). Two bounds complete
it: a job whose tokens alone exceed ``max_queued_tokens`` is refused with 413, even into an empty queue
(it cannot be served within the wait the limit stands for; the client should split it), and a model's
queue never holds more than ``2 * max_queued_tokens`` tokens (the memory bound: one job of up to the
limit, and every other job within the limit again).

Heads. What one call computes is the queue's :data:`EngineCall`: the encodings of every job in the call
in, one result per encoding out (a float32 array's rows for embeddings and a reranker's logits, a list
of sparse vectors for SPLADE, a list of ``(tokens, dim)`` arrays for ColBERT), handed back to each job's
``out`` slice by slice. Jobs carry a ``group``, and a call holds jobs of one group only: what changes
the engine call for every row (the prompt tokens the pooling skips; a ColBERT query or document).
Jobs also carry what they ``asks`` of a head with several outputs (BGE-M3's dense, sparse and
multi-vector rows of one forward pass): jobs of one group that ask for different outputs share a
call, which computes every output any of them asks for (the union, handed to the call), and each
job's ``out`` takes its own from the call's rows (serve/m3.py).

Threads: ``submit``, ``cancel`` and ``abandon`` run on the event loop; the engine thread only touches a
job's ``out`` and hands results back with ``loop.call_soon_threadsafe``. The engine releases the GIL
while it runs.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import ApiError, Draining, EngineFailure, Overloaded, PayloadTooLarge


class TokenSequence(Protocol):
    """What the engine needs of one tokenized input (``tokenizers.Encoding`` has it)."""

    @property
    def ids(self) -> list[int]: ...
    @property
    def type_ids(self) -> list[int]: ...
    def __len__(self) -> int: ...


#: One engine call of a head: ``(encodings, group, asks) -> results``, one result per encoding in
#: order (a float32 array's rows, or a sequence). ``asks`` is the union of the call's jobs'
#: :attr:`Job.asks` (empty for heads of one output, which ignore it). Runs on the queue's engine
#: thread; an exception fails every job of the call.
EngineCall = Callable[[Sequence[TokenSequence], Any, frozenset[str]], "np.ndarray | Sequence[Any]"]


class DenseEngine(Protocol):
    """What :func:`dense_call` needs of an engine (``Embedder`` has it)."""

    @property
    def dim(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    def embed_encodings(self, encodings: Any, out: np.ndarray, batch_size: int, **options: Any) -> None: ...


def dense_call(engine: DenseEngine) -> EngineCall:
    """The engine's pooled rows (embeddings unnormalised, or a reranker's logits): float32
    ``(len(encodings), dim)``; the group is the prompt tokens the pooling skips."""

    def run(encodings: Sequence[TokenSequence], skip_prefix: Any, asks: frozenset[str]) -> np.ndarray:
        out = np.empty((len(encodings), engine.dim), dtype=np.float32)
        engine.embed_encodings(encodings, out, engine.batch_size, normalize=False, skip_prefix=skip_prefix)
        return out

    return run


@dataclass(eq=False)  # compared by identity: the queue finds and removes jobs by ``in`` / ``remove``
class Job:
    """One request's inputs for one model, and where their results go: ``out[i]`` receives input
    ``i``'s (a float32 array of rows for :func:`dense_call`, a list for the other heads; for a head
    of several outputs, whatever takes its own output from the call's rows)."""

    encodings: Sequence[TokenSequence]
    out: np.ndarray | MutableSequence[Any]
    future: asyncio.Future[None]
    tokens: int
    #: Jobs of one group share calls (dense: prompt tokens left out of pooling; ColBERT: is_query).
    group: Hashable = 0
    #: The outputs it wants of a head with several (BGE-M3): jobs that ask for different ones share calls.
    asks: frozenset[str] = frozenset()
    enqueued: float = field(default_factory=time.perf_counter)
    done: int = 0  # encodings embedded so far
    taken: int = 0  # encodings handed to calls so far
    started: float | None = None  # when its first part's call began
    inference_seconds: float = 0.0  # summed durations of the calls its parts ran in
    cancelled: bool = False
    queued: int = field(init=False)  # tokens not yet handed to a call

    def __post_init__(self) -> None:
        self.queued = self.tokens


class BatchMetrics(Protocol):
    """Where the queue reports what it did (serve/metrics.py implements it)."""

    def engine_call(self, model: str, texts: int, tokens: int, requests: int, seconds: float) -> None: ...
    def queue_depth(self, model: str, jobs: int, tokens: int) -> None: ...


class BatchQueue:
    """One model's queue and its engine thread.

    Args:
        name: the model's served name (for metrics and messages).
        call: what one engine call computes (:data:`EngineCall`); an engine with ``embed_encodings``
            stands for ``dense_call(engine)``.
        max_call_tokens: tokens (real, not padded) one engine call takes at most, over all requests.
        max_queued_tokens: the queue's limit, shared fairly (see the module docstring): a job over it
            alone gets 413; a job over its fair share of it, 429; never more than twice it queued.
        metrics: receives per-call statistics.
    """

    def __init__(
        self,
        name: str,
        call: EngineCall | DenseEngine,
        *,
        max_call_tokens: int,
        max_queued_tokens: int,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self.name = name
        self.call: EngineCall = dense_call(call) if hasattr(call, "embed_encodings") else call  # type: ignore[arg-type]
        self.max_call_tokens = max_call_tokens
        self.max_queued_tokens = max_queued_tokens
        self._metrics = metrics
        self._pending: deque[Job] = deque()
        #: The job whose part runs now and whose rest is queued again when the call ends.
        self._parked: Job | None = None
        self._running: list[Job] = []  # the jobs of the call that runs now
        self._queued_tokens = 0  # of the pending and parked jobs
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
            PayloadTooLarge: the job alone has more tokens than the queue's limit.
            Overloaded: the job's fair share of the queue is taken (see the module docstring).
            Draining: the queue is closed.
        """
        limit = self.max_queued_tokens
        with self._lock:
            if self._closed:
                raise Draining("the server is shutting down and takes no new requests")
            if job.tokens > limit:
                raise PayloadTooLarge(
                    f"the request has {job.tokens} tokens to embed; model {self.name!r} queues at most "
                    f"{limit} (--max-queued-tokens): split it into smaller requests",
                    param="input",
                    code="too_many_tokens",
                )
            waiting = self._waiting()
            charged = job.tokens + sum(min(other.queued, job.tokens) for other in waiting)
            if charged > limit or self._queued_tokens + job.tokens > 2 * limit:
                retry_ms = self._retry_after_ms(max(charged, self._queued_tokens + job.tokens - limit))
                if charged > limit:
                    why = (
                        f"this request's {job.tokens} tokens and its share of theirs ({charged - job.tokens}) "
                        f"are over the limit of {limit} (--max-queued-tokens)"
                    )
                else:
                    why = f"this request's {job.tokens} tokens would take it past twice the limit of {limit}"
                raise Overloaded(
                    f"model {self.name!r} has {self._queued_tokens} tokens queued in {len(waiting)} requests; "
                    f"{why}; retry after {retry_ms} ms",
                    code="queue_full",
                    headers={"retry-after-ms": str(retry_ms), "retry-after": str(max(1, retry_ms // 1000))},
                )
            self._pending.append(job)
            self._queued_tokens += job.queued
            self._report_depth()
            self._lock.notify()

    def cancel(self, job: Job) -> None:
        """Drop what of ``job`` has not run yet (its client went away)."""
        with self._lock:
            job.cancelled = True
            if job is self._parked:
                self._parked = None
            elif job in self._pending:
                self._pending.remove(job)
            else:
                return
            self._drop(job)
            self._report_depth()

    def abandon(self, error: ApiError) -> int:
        """Close the queue and fail every job not finished yet with ``error`` (at once, also those
        in the running call, whose results are then discarded); returns how many jobs failed."""
        with self._lock:
            self._closed = True
            jobs = list(self._pending) + [j for j in (self._parked,) if j is not None]
            jobs += [j for j in self._running if j not in jobs]
            self._pending.clear()
            self._parked = None
            self._queued_tokens = 0
            for job in jobs:
                job.cancelled = True
                job.queued = 0
                self._finish(job, error)
            self._report_depth()
            self._lock.notify()
        return len(jobs)

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
            return len(self._waiting()), self._queued_tokens

    # -- engine-thread side --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:  # closed and empty
                    return
                parts = self._take()
                self._running = [job for job, _, _ in parts]
                self._report_depth()
            self._run(parts)
            with self._lock:
                self._running = []
                parked, self._parked = self._parked, None
                if parked is not None:  # behind every job that arrived during the call
                    if parked.cancelled:
                        self._drop(parked)
                    else:
                        self._pending.append(parked)
                    self._report_depth()

    def _take(self) -> list[tuple[Job, int, int]]:
        """Parts (job, first, stop) for one call, up to ``max_call_tokens`` (at least one input).

        A call holds jobs of one ``group`` (what changes the engine call for every row: the prompt
        tokens the pooling skips, a ColBERT query or document); jobs of another stay at the head of
        the queue for the next call.
        A job only partly taken is parked until the call ends (``_work`` queues its rest again).
        """
        parts: list[tuple[Job, int, int]] = []
        budget = self.max_call_tokens
        group = self._pending[0].group
        other: list[Job] = []
        while self._pending and budget > 0:
            job = self._pending[0]
            if job.group != group:
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
            taken = sum(len(e) for e in job.encodings[first:stop])
            self._queued_tokens -= taken
            job.queued -= taken
            job.taken = stop
            parts.append((job, first, stop))
            self._pending.popleft()
            if stop < len(job.encodings):
                self._parked = job
                break
        self._pending.extendleft(reversed(other))
        return parts

    def _run(self, parts: list[tuple[Job, int, int]]) -> None:
        encodings = [e for job, first, stop in parts for e in job.encodings[first:stop]]
        start = time.perf_counter()
        self.busy_since = start
        for job, _, _ in parts:
            if job.started is None:
                job.started = start
        try:
            asks = frozenset().union(*(job.asks for job, _, _ in parts))
            out = self.call(encodings, parts[0][0].group, asks)
        except Exception as exc:  # the engine failed on validated input: every job in the call fails
            self.busy_since = None
            failure = EngineFailure(f"the engine failed: {type(exc).__name__}: {exc}")
            for job, _, _ in parts:
                job.cancelled = True  # a parked rest is dropped, not run
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

    # -- helpers (called with the lock held) ------------------------------------------------------------
    def _waiting(self) -> list[Job]:
        """The jobs with tokens queued: pending, and the parked one."""
        return [*self._pending, self._parked] if self._parked is not None else list(self._pending)

    def _drop(self, job: Job) -> None:
        self._queued_tokens -= job.queued
        job.queued = 0

    def _retry_after_ms(self, tokens: int) -> int:
        """When a refused job may fit: ``tokens`` of work at the engine's measured speed, spread at
        random over [1x, 2x] so the refused clients do not all come back at the same moment."""
        seconds = tokens / self._tokens_per_second
        return int(min(10_000, max(20, 1000 * seconds * (1 + random.random()))))

    def _report_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth(self.name, len(self._waiting()), self._queued_tokens)


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
