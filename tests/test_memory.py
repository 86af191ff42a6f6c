"""Resident memory stays flat over many calls: a per-call leak in the native path would show."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest

from fastembed_native import TextEmbedding

CALLS = 10_000
# Allowance: allocator and arena noise stay well under this; a leak of one input or output
# tensor per call (hundreds of bytes and up) over 10,000 calls exceeds it.
ALLOWED_GROWTH_MB = 3.0


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.timeout(300)
def test_rss_flat_over_many_calls(encoder_dir):
    model = TextEmbedding(encoder_dir.path)
    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "flag"]
    for _ in range(1000):  # warm-up: arenas, caches and lazily built state settle
        model.embed(texts)
    before = rss_mb()
    for i in range(CALLS):
        out = model.embed(texts[: 1 + i % 3], batch_size=1 + i % 2)
    after = rss_mb()
    assert np.isfinite(out).all()
    print(f"RSS {before:.1f} MB -> {after:.1f} MB over {CALLS} calls")
    assert after - before < ALLOWED_GROWTH_MB, f"RSS grew {after - before:.1f} MB over {CALLS} calls"


@pytest.mark.real_model
@pytest.mark.timeout(300)
def test_rss_flat_on_the_real_model(minilm):
    texts = ["a short query", "a somewhat longer sentence about embeddings and vectors " * 3]
    for _ in range(200):
        minilm.embed(texts)
    before = rss_mb()
    for _ in range(2000):
        minilm.embed(texts)
    after = rss_mb()
    print(f"RSS {before:.1f} MB -> {after:.1f} MB over 2000 real-model calls")
    assert after - before < ALLOWED_GROWTH_MB * 2
