"""``fastembed-native bench late`` end to end, small: a tiny ColBERT (pylate's layout) built into a
models folder, a few real documents in two interleaved rounds, every contender (pylate too when its
venv is there: ``$PYLATE_VENV``, default /work/venvs/pylate, see tests/data/colbert_tiny/make_reference.py),
then the report files, the vectors against the reference, and MaxSim's ways against float64."""

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

from fastembed_native.bench.head_models import ensure_model
from fastembed_native.bench.late import peak_rss_mb, vector_agreement
from fastembed_native.bench.late_contenders import CONTENDERS

MODEL = "tiny-colbert"
TEXTS, ROUNDS, QUERIES = 24, 2, 2
VECTOR_TOLERANCE = 1e-5  # pylate parity: vectors to 1e-5
PYLATE = os.environ.get("PYLATE_VENV", "/work/venvs/pylate")
HAS_PYLATE = (Path(PYLATE) / "bin" / "python").is_file()
EXPECTED = [
    *(["pylate"] if HAS_PYLATE else []),
    *(c for c in CONTENDERS if c != "fastembed" or importlib.util.find_spec("fastembed")),
]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-late")
    out, models = root / "out", root / "models"
    command = [
        sys.executable,
        "-m",
        "fastembed_native.cli",
        "bench",
        "late",
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
        "--maxsim-docs",
        "50",
        "--maxsim-repeats",
        "3",
        "--threads",
        "2",
        "--settle",
        "0",
        "--no-memory",
        "--out",
        str(out),
    ]
    if HAS_PYLATE:
        command += ["--pylate", PYLATE]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping" not in result.stderr, result.stderr[-3000:]
    return out, models


@pytest.mark.real_model
def test_every_contender_gives_the_references_vectors(bench_run):
    results = json.loads((bench_run[0] / "late.json").read_text())
    assert list(results["models"]) == [MODEL]
    model = results["models"][MODEL]
    assert model["texts"] == TEXTS and model["queries"] == ROUNDS * QUERIES
    assert model["reference"] == ("pylate" if HAS_PYLATE else "fastembed_native")
    assert list(model["contenders"]) == EXPECTED
    for name, r in model["contenders"].items():
        assert r["documents_with_same_rows"] == TEXTS, name
        assert r["queries_with_same_rows"] == ROUNDS * QUERIES, name
        assert r["max_abs_difference_documents"] <= VECTOR_TOLERANCE, name
        assert r["max_abs_difference_queries"] <= VECTOR_TOLERANCE, name
        assert r["docs_per_s"] > 0 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"], name


@pytest.mark.real_model
def test_maxsim_ways_agree_with_float64(bench_run):
    maxsim = json.loads((bench_run[0] / "late.json").read_text())["models"][MODEL]["maxsim"]
    assert maxsim["documents"] == 50 and maxsim["query_rows"] == 32 and maxsim["dim"] == 16
    ways = maxsim["ways"]
    expected = {
        "LateInteractionTextEmbedding.score",
        "_core.maxsim (packed)",
        "numpy (matmul + maximum.reduceat)",
    }
    assert expected <= set(ways) and ("pylate colbert_scores (padded)" in ways) == HAS_PYLATE
    for name, way in ways.items():
        assert way["median_ms"] > 0 and way["docs_per_s"] > 0, name
        if way["max_abs_score_difference"] is not None:  # reading the vectors once scores nothing
            assert way["max_abs_score_difference"] <= 1e-4, name


@pytest.mark.real_model
def test_report_has_a_row_per_contender_and_the_maxsim_table(bench_run):
    report = (bench_run[0] / "late.md").read_text()
    assert f"### {MODEL}:" in report
    for contender in EXPECTED:
        label = f"**{contender}**" if contender == "fastembed_native" else contender
        assert report.count(f"| {label} |") == 1, contender
    assert "| LateInteractionTextEmbedding.score |" in report and "MaxSim: one query of 32 x 16" in report


@pytest.mark.real_model
def test_built_model_is_found_again_not_rebuilt(bench_run, capsys):
    _, models = bench_run
    before = (models / MODEL / "onnx" / "onnx" / "model.onnx").stat().st_mtime_ns
    model = ensure_model(MODEL, models, [])
    assert model.onnx_path.stat().st_mtime_ns == before and model.checkpoint.is_dir()
    assert capsys.readouterr().err == ""


@pytest.mark.real_model
def test_peak_rss_of_a_fresh_process(bench_run):
    _, models = bench_run
    model = ensure_model(MODEL, models, [])
    args = argparse.Namespace(models_dir=models, threads=1, pylate=None)
    peak = peak_rss_mb("fastembed_native", model, ["late interaction", "one vector per token"], args)
    assert peak is not None and 20 < peak < 4000


def test_vector_agreement_compares_unit_rows_of_same_shaped_arrays():
    a = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    worst, same = vector_agreement([a], [a / 5])
    assert same == 1 and worst < 1e-7  # rows compared after normalising
    worst, same = vector_agreement([a, a[:1]], [a, a])
    assert same == 1 and worst == 0.0  # the second pair differs in shape: counted out, not compared
