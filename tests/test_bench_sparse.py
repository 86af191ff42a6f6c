"""``fastembed-native bench sparse`` end to end, small: a tiny SPLADE (DistilBERT) built into a models
folder, a few real texts in two interleaved rounds, every contender, then the report files, each
contender's sparse vectors against sentence-transformers (torch), and the built model found again;
then the contenders' worker processes (none is built in the benchmark's own process, each is ended)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastembed_native.bench import sparse, sparse_contenders
from fastembed_native.bench.corpus import sample_texts
from fastembed_native.bench.head_models import MAXPOOL_OUTPUT, ensure_model
from fastembed_native.bench.sparse import agreement, peak_rss_mb
from fastembed_native.bench.sparse_contenders import CONTENDERS

MODEL = "tiny-splade"
TEXTS, ROUNDS, QUERIES = 24, 2, 2
TOLERANCE = 1e-4  # relative to a text's largest weight, as export's sparse parity check
# fastembed is in the [bench] extra, not [test]: without it the run has one contender fewer.
EXPECTED = [c for c in CONTENDERS if c != "fastembed" or importlib.util.find_spec("fastembed")]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-sparse")
    out, models = root / "out", root / "models"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastembed_native.cli",
            "bench",
            "sparse",
            "--models",
            MODEL,
            "--models-dir",
            str(models),
            "--contenders",
            ",".join(EXPECTED),
            "--texts",
            str(TEXTS),
            "--rounds",
            str(ROUNDS),
            "--queries",
            str(QUERIES),
            "--threads",
            "2",
            "--settle",
            "0",
            "--no-memory",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping" not in result.stderr, result.stderr[-3000:]
    return out, models


@pytest.mark.real_model
def test_every_contender_encodes_as_sentence_transformers(bench_run):
    results = json.loads((bench_run[0] / "sparse.json").read_text())
    assert list(results["models"]) == [MODEL] and results["rounds"] == ROUNDS
    model = results["models"][MODEL]
    assert model["texts"] == TEXTS and model["reference"] == "st_torch" and model["vocab_size"] == 30522
    # The bias shift keeps a text's vector sparse but not empty: a few dozen words of 30,522.
    assert 5 < model["reference_mean_active_dims"] < 1000
    assert list(model["contenders"]) == EXPECTED
    for name, r in model["contenders"].items():
        assert r["max_relative_difference"] <= TOLERANCE, name
        assert r["texts_with_same_indices"] == TEXTS, name
        assert r["texts_per_s"] > 0 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"], name
        assert "peak_rss_mb" not in r  # --no-memory
    engine = model["fastembed_native_engine"]
    assert engine["runs"] >= ROUNDS and 0 < engine["padding_efficiency"] <= 1


@pytest.mark.real_model
def test_report_has_a_row_per_contender_and_the_graph_pooling_comparison(bench_run):
    report = (bench_run[0] / "sparse.md").read_text()
    assert f"### {MODEL}:" in report
    for contender in EXPECTED:
        label = f"**{contender}**" if contender == "fastembed_native" else contender
        assert report.count(f"| {label} |") == 1, contender
    assert "Masked max + log1p(relu) inside the graph" in report and "texts/s (" in report


@pytest.mark.real_model
def test_the_maxpool_graph_outputs_batch_by_vocabulary(bench_run):
    import onnxruntime as ort

    model = ensure_model(MODEL, bench_run[1], [])
    session = ort.InferenceSession(str(model.maxpool_path), providers=["CPUExecutionProvider"])
    (output,) = session.get_outputs()
    assert output.name == MAXPOOL_OUTPUT and output.shape[1] == 30522
    ids = np.array([[101, 7592, 2088, 102, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 0]], dtype=np.int64)
    (pooled,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    (logits,) = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input_ids": ids, "attention_mask": mask}
    )
    np.testing.assert_allclose(
        pooled[0], np.log1p(np.maximum(logits[0, :4].max(axis=0), 0)), rtol=1e-6, atol=1e-7
    )


@pytest.mark.real_model
def test_built_model_is_found_again_not_rebuilt(bench_run, capsys):
    _, models = bench_run
    before = (models / MODEL / "onnx" / "onnx" / "model.onnx").stat().st_mtime_ns
    model = ensure_model(MODEL, models, [])
    assert model.onnx_path.stat().st_mtime_ns == before and model.checkpoint.is_dir()
    assert capsys.readouterr().err == ""  # a build or an export announces itself


@pytest.mark.real_model
def test_peak_rss_of_a_fresh_process(bench_run):
    _, models = bench_run
    model = ensure_model(MODEL, models, [])
    args = argparse.Namespace(models_dir=models, threads=1)
    peak = peak_rss_mb("fastembed_native", model, ["what is splade?", "a sparse vector"], args)
    assert peak is not None and 20 < peak < 4000


@pytest.fixture
def started_workers(monkeypatch) -> list[sparse.SparseWorker]:
    """The workers ``sparse.run_model`` starts, recorded; the contenders' factories made to fail in
    this process (they must run only in the workers, which import their own)."""

    def not_here(*_: object) -> None:
        raise AssertionError("a contender was built in the benchmark's own process")

    for name in list(sparse_contenders.FACTORIES):
        monkeypatch.setitem(sparse_contenders.FACTORIES, name, not_here)
    started: list[sparse.SparseWorker] = []

    class Recorded(sparse.SparseWorker):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(sparse, "SparseWorker", Recorded)
    return started


def _args(models: Path, contenders: list[str]) -> argparse.Namespace:
    return argparse.Namespace(
        models_dir=models, contenders=contenders, threads=1, rounds=2, queries=1, settle=0, memory=False
    )


SMALL_TEXTS = [
    "what is splade?",
    "Sparse lexical vectors keep one weight per vocabulary word that the text makes likely.",
    "a short one",
    "Return the number of items in a container; for a mapping, the number of its keys, for a "
    "sequence its length, and a TypeError for an object without a length.",
    "the quick brown fox jumps over the lazy dog",
    "expand the query with related words",
]


@pytest.mark.real_model
def test_each_contender_runs_in_its_own_worker_process(bench_run, started_workers, capsys):
    model = ensure_model(MODEL, bench_run[1], [])
    names = ["st_torch", "fastembed_native", "naive_ort"]
    out = sparse.run_model(model, SMALL_TEXTS, SMALL_TEXTS[:2], _args(bench_run[1], [*names, "no_such"]))
    assert (
        "skipping no_such: RuntimeError: no_such worker: ValueError: unknown contender"
        in capsys.readouterr().err
    )
    pids = {worker.pid for worker in started_workers}
    assert len(pids) == len(names) and os.getpid() not in pids  # the failed one never got recorded
    assert all(worker.worker.process.poll() is not None for worker in started_workers)  # all ended
    assert list(out["contenders"]) == names and out["reference"] == "st_torch"
    for name, r in out["contenders"].items():
        assert r["max_relative_difference"] <= TOLERANCE, name
        assert r["texts_with_same_indices"] == len(SMALL_TEXTS), name
        assert r["worker_peak_rss_mb"] > 20 and r["latency_ms"]["p50"] > 0, name
    assert out["fastembed_native_engine"]["runs"] >= 2  # asked of the worker


@pytest.mark.real_model
def test_workers_are_ended_when_the_run_is_interrupted(bench_run, started_workers, monkeypatch):
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sparse, "_run", interrupted)
    model = ensure_model(MODEL, bench_run[1], [])
    with pytest.raises(KeyboardInterrupt):
        sparse.run_model(model, SMALL_TEXTS, SMALL_TEXTS[:1], _args(bench_run[1], ["fastembed_native"]))
    (worker,) = started_workers
    assert worker.worker.process.poll() is not None


def test_agreement_counts_index_flips_and_relative_differences():
    reference = [(np.array([1, 5]), np.array([2.0, 1.0])), (np.array([], int), np.array([]))]
    assert agreement(reference, reference) == (0.0, 2)
    # Index 7 only on one side (a near-zero weight that flipped): the indices differ, the value counts.
    flipped = [(np.array([1, 5, 7]), np.array([2.0, 1.0, 1e-7])), reference[1]]
    worst, same = agreement(flipped, reference)
    assert same == 1 and worst == pytest.approx(1e-7 / 2)
    off = [(np.array([1, 5]), np.array([2.0, 1.5])), (np.array([3]), np.array([0.5]))]
    worst, same = agreement(off, reference)
    # The first text: the same indices, a difference of 0.5 against 2; the second: 0.5 against nothing.
    assert same == 1 and worst == pytest.approx(1.0)


def test_sample_texts_goes_through_the_corpus_before_repeating():
    corpus = [f"text {i}" for i in range(10)]
    texts = sample_texts(corpus, 25, seed=1)
    assert texts == sample_texts(corpus, 25, seed=1) and texts != sample_texts(corpus, 25, seed=2)
    assert sorted(texts[:10]) == sorted(corpus) and sorted(texts[10:20]) == sorted(corpus)
    assert len(texts) == 25 and sample_texts([], 5) == []
