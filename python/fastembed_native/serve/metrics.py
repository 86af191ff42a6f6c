"""Prometheus metrics of one server (its own registry, so two servers in a process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)


class Metrics:
    """Counters and histograms for requests, engine calls, the queues and the cache."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fastembed_requests", "Requests answered, by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "fastembed_request_seconds",
            "Time from request to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("fastembed_inputs", "Inputs embedded", ["model"], registry=r)
        self.tokens = Counter("fastembed_tokens", "Tokens embedded (after truncation)", ["model"], registry=r)
        self.queue_seconds = Histogram(
            "fastembed_queue_seconds",
            "Time a request waited for its first engine call",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "fastembed_tokenize_seconds",
            "Tokenization time per request",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_texts = Histogram(
            "fastembed_batch_texts",
            "Inputs per engine call (across requests)",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "fastembed_batch_tokens", "Tokens per engine call", ["model"], buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "fastembed_batch_requests",
            "Requests sharing one engine call",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "fastembed_inference_seconds",
            "Duration of one engine call",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queued_jobs = Gauge(
            "fastembed_queue_jobs", "Requests waiting for the engine", ["model"], registry=r
        )
        self.queued_tokens = Gauge(
            "fastembed_queue_tokens", "Tokens waiting for the engine", ["model"], registry=r
        )
        self.cache_hits = Counter("fastembed_cache_hits", "Embedding cache hits", registry=r)
        self.cache_misses = Counter("fastembed_cache_misses", "Embedding cache misses", registry=r)
        self.cache_bytes = Gauge("fastembed_cache_bytes", "Bytes held by the embedding cache", registry=r)
        self.cache_hit_ratio = Gauge(
            "fastembed_cache_hit_ratio", "Cache hits / lookups since start", registry=r
        )

    # BatchMetrics (serve/batcher.py)
    def engine_call(self, model: str, texts: int, tokens: int, requests: int, seconds: float) -> None:
        self.batch_texts.labels(model).observe(texts)
        self.batch_tokens.labels(model).observe(tokens)
        self.batch_requests.labels(model).observe(requests)
        self.inference_seconds.labels(model).observe(seconds)

    def queue_depth(self, model: str, jobs: int, tokens: int) -> None:
        self.queued_jobs.labels(model).set(jobs)
        self.queued_tokens.labels(model).set(tokens)

    def cache_lookup(
        self, hits: int, misses: int, held_bytes: int, total_hits: int, total_lookups: int
    ) -> None:
        self.cache_hits.inc(hits)
        self.cache_misses.inc(misses)
        self.cache_bytes.set(held_bytes)
        self.cache_hit_ratio.set(total_hits / total_lookups if total_lookups else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
