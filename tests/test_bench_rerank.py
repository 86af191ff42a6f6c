"""``fastembed-native bench rerank`` end to end, small: tiny BERT and XLM-R rerankers built into a
models folder, a few queries of a few real documents, every contender, then the report files, each
contender's logits against sentence-transformers (torch), and the built models found again."""

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

from fastembed_native.bench.rerank import build_workload, peak_rss_mb
from fastembed_native.bench.rerank_contenders import CONTENDERS
from fastembed_native.bench.rerank_models import LOGIT_STD, ensure_model

MODELS = ("tiny-bert", "tiny-xlmr")
QUERIES, DOCS = 3, 6
LOGIT_TOLERANCE = 1e-4
# fastembed is in the [bench] extra, not [test]: without it the run has one contender fewer.
EXPECTED = [c for c in CONTENDERS if c != "fastembed" or importlib.util.find_spec("fastembed")]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-rerank")
    out, models = root / "out", root / "models"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastembed_native.cli",
            "bench",
            "rerank",
            "--models",
            ",".join(MODELS),
            "--models-dir",
            str(models),
            "--contenders",
            ",".join(EXPECTED),
            "--queries",
            str(QUERIES),
            "--docs",
            str(DOCS),
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
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping" not in result.stderr, result.stderr[-3000:]
    return out, models


@pytest.mark.real_model
def test_every_contender_scores_as_sentence_transformers(bench_run):
    results = json.loads((bench_run[0] / "rerank.json").read_text())
    assert list(results["models"]) == list(MODELS)
    for name, model in results["models"].items():
        assert model["pairs"] == QUERIES * DOCS and model["queries"] == QUERIES, name
        assert model["reference"] == "st_torch"
        # Calibrated random weights: logits spread as a trained reranker's, so a difference means something.
        assert LOGIT_STD / 4 < model["reference_logit_std"] < LOGIT_STD * 4, name
        assert list(model["contenders"]) == EXPECTED
        for contender, r in model["contenders"].items():
            assert r["max_abs_logit_difference"] <= LOGIT_TOLERANCE, (name, contender)
            assert r["queries_ranked_identically"] == QUERIES, (name, contender)
            assert r["pairs_per_s"] > 0 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        bulk = model["fastembed_native_bulk"]
        assert bulk["max_abs_logit_difference_vs_reranks"] <= LOGIT_TOLERANCE
        assert bulk["rerank_over_bulk"] == pytest.approx(
            bulk["rerank_tokens_per_s"] / bulk["bulk_tokens_per_s"]
        )
        assert 0 < bulk["rerank_padding_efficiency"] <= 1 and 0 < bulk["bulk_padding_efficiency"] <= 1


@pytest.mark.real_model
def test_report_has_a_row_per_contender_and_the_rerank_to_bulk_ratio(bench_run):
    report = (bench_run[0] / "rerank.md").read_text()
    for name in MODELS:
        assert f"### {name}:" in report
    for contender in EXPECTED:
        label = f"**{contender}**" if contender == "fastembed_native" else contender
        assert report.count(f"| {label} |") == len(MODELS), contender
    assert report.count("tokens/s: ") == len(MODELS) and "raw logits on every side" in report


@pytest.mark.real_model
def test_built_models_are_found_again_not_rebuilt(bench_run, capsys):
    _, models = bench_run
    for name in MODELS:
        before = (models / name / "onnx" / "onnx" / "model.onnx").stat().st_mtime_ns
        # No training text: a rebuild would fail to train a tokenizer, so this proves none happens.
        model = ensure_model(name, models, [])
        assert model.onnx_path.stat().st_mtime_ns == before and model.checkpoint.is_dir()
    assert capsys.readouterr().err == ""


@pytest.mark.real_model
def test_peak_rss_of_a_fresh_process(bench_run):
    _, models = bench_run
    model = ensure_model("tiny-bert", models, [])
    args = argparse.Namespace(models_dir=models, threads=1)
    peak = peak_rss_mb("fastembed_native", model, [("what is onnx?", ["a runtime", "a format"])], 512, args)
    assert peak is not None and 20 < peak < 4000


def test_workload_queries_are_short_real_sentences_with_distinct_documents():
    corpus = [
        f"Paragraph {i} says something about topic {i % 7}. And then more follows.\nLine two."
        for i in range(50)
    ]
    corpus += ["too short.", "a multi\nline first sentence here ok. tail"]
    workload = build_workload(5, 10, corpus, seed=3)
    assert workload == build_workload(5, 10, corpus, seed=3)  # reproducible
    assert workload != build_workload(5, 10, corpus, seed=4)
    assert len({q for q, _ in workload}) == 5
    for query, documents in workload:
        assert query.startswith("Paragraph ") and "\n" not in query and "." not in query
        assert len(documents) == 10 == len(set(documents)) and set(documents) <= set(corpus)
    assert np.unique([d for _, docs in workload for d in docs]).size > 10  # queries get different candidates
    with pytest.raises(ValueError, match="asked for 60 queries"):
        build_workload(60, 10, corpus)
