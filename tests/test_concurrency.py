"""Many threads on one model, the GIL released during inference, and Ctrl-C mid-embed."""

from __future__ import annotations

import _thread
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_parity import real_corpus

THREADS = 8
REQUESTS = 1000


@pytest.mark.real_model
@pytest.mark.timeout(300)  # a hang here means a deadlock
def test_threads_sharing_one_model_get_sequential_results(minilm):
    corpus = real_corpus()
    rng = random.Random(7)
    requests = []
    for _ in range(REQUESTS):
        texts = rng.sample(corpus, rng.randint(1, 4))
        requests.append((texts, rng.choice([1, 2, 3, 8])))
    expected = [minilm.embed(texts, batch_size=bs) for texts, bs in requests]

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(minilm.embed, texts, batch_size=bs) for texts, bs in requests]
        results = [f.result(timeout=120) for f in futures]
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"request {i}")


@pytest.mark.real_model
@pytest.mark.timeout(120)
def test_gil_is_released_during_inference(minilm):
    """While one big batch runs in C++, a Python thread keeps running: its longest stall stays
    far below the batch's duration (with the GIL held it would equal it)."""
    texts = [" ".join(["embedding"] * 250)] * 64
    done = threading.Event()
    durations = []

    def work():
        start = time.perf_counter()
        minilm.embed(texts, batch_size=64)  # one ORT Run
        durations.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=work)
    last = time.perf_counter()
    longest_gap = 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest_gap = max(longest_gap, now - last)
        last = now
        time.sleep(0.001)
    worker.join()
    assert durations[0] > 0.2, "batch too quick to show anything"
    assert longest_gap < durations[0] / 4, f"Python stalled {longest_gap:.3f}s of a {durations[0]:.3f}s run"


@pytest.mark.timeout(60)
def test_ctrl_c_mid_embed_leaves_the_model_usable(encoder_dir):
    from fastembed_native import TextEmbedding

    model = TextEmbedding(encoder_dir.path)
    texts = ["the quick brown fox jumps over the lazy dog"] * 200_000
    reference = model.embed(texts[:3])
    timer = threading.Timer(0.2, _thread.interrupt_main)  # what Ctrl-C delivers
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        model.embed(texts, batch_size=4)
    timer.join()
    np.testing.assert_array_equal(model.embed(texts[:3]), reference)
