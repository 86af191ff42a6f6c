"""``fastembed-native bench serve --rerank`` end to end, small: the tiny BERT reranker built into a
models folder, served on 127.0.0.1, a few interleaved rounds against in-process reranks, then the
long varied run (``--soak``) and its hostile requests; plus the embedding soak on the same loop."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import Server, model_arg

ROUNDS, REQUESTS, IN_PROCESS, DOCS = 2, 6, 3, 5
LOGIT_TOLERANCE = 1e-4
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def bench_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fastembed_native.cli", "bench", "serve", "--threads", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-serve-rerank") / "models"


@pytest.fixture(scope="module")
def load_run(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("load")
    result = bench_serve(
        "--rerank", "--reranker", "tiny-bert", "--models-dir", str(models), "--clients", "1,4",
        "--docs", str(DOCS), "--queries", "4", "--requests", str(REQUESTS), "--in-process", str(IN_PROCESS),
        "--rounds", str(ROUNDS), "--settle", "0", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.real_model
def test_rerank_load_against_in_process_interleaved(load_run):
    results = json.loads((load_run / "serve_rerank.json").read_text())
    assert results["model"]["name"] == "tiny-bert" and results["docs_per_request"] == DOCS
    assert list(results["loads"]) == ["1 client", "4 clients"]
    for name, row in results["loads"].items():
        server, local = row["server"], row["in_process"]
        assert server["errors"] == 0 and server["statuses"] == {"200": ROUNDS * REQUESTS}, name
        assert server["requests"] == ROUNDS * REQUESTS and server["pairs"] == ROUNDS * REQUESTS * DOCS
        assert local["requests"] == ROUNDS * IN_PROCESS and local["pairs"] == ROUNDS * IN_PROCESS * DOCS
        assert server["pairs_per_s"] > 0 and local["pairs_per_s"] > 0
        assert row["ratio"] == pytest.approx(server["pairs_per_s"] / local["pairs_per_s"])
        assert len(row["ratio_per_round"]) == ROUNDS
        assert 0 < server["p50_ms"] <= server["p99_ms"] and 0 < local["p50_ms"] <= local["p99_ms"]
        # The server scored the in-process items too: the same logits, the same order.
        assert row["compared_requests"] == ROUNDS * IN_PROCESS
        assert row["max_abs_logit_difference"] <= LOGIT_TOLERANCE
        assert row["same_ranking"] == row["compared_requests"]
        assert server["engine_calls"] >= 1 and server["requests_per_call"] >= 1
    assert results["server"]["after"]["rss_mb"] > 0
    assert {"load_average_start", "load_average_end"} <= set(results["machine"])


@pytest.mark.real_model
def test_rerank_load_report(load_run):
    report = (load_run / "serve_rerank.md").read_text()
    assert report.startswith("### Reranking over HTTP: tiny-bert")
    assert report.count("| 1 client |") == 1 and report.count("| 4 clients |") == 1
    assert "server / in-process" in report and "load average" in report  # how busy the machine was


@pytest.mark.real_model
def test_varied_rerank_soak_samples_rss_and_checks_every_answer(models, load_run, tmp_path):
    out = tmp_path / "soak"
    result = bench_serve(
        "--rerank", "--reranker", "tiny-bert", "--models-dir", str(models), "--soak", "60",
        "--soak-warmup", "10", "--soak-clients", "4", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "soak_rerank.json").read_text())
    assert results["requests"] == 60 and results["warmup_requests"] == 10 and results["errors"] == 0
    samples = results["samples"]
    assert len(samples) == 61 and samples[0]["requests"] == 0 and samples[-1]["requests"] == 60
    assert all(a["seconds"] <= b["seconds"] for a, b in itertools.pairwise(samples))
    rss = [s["rss_mb"] for s in samples]
    assert results["rss_max_mb"] == max(rss) and results["rss_after_warmup_mb"] == rss[0]
    assert min(rss) <= results["rss_first_quarter_median_mb"] <= max(rss)
    assert min(rss) <= results["rss_last_quarter_median_mb"] <= max(rss)
    assert sum(results["kinds"].values()) == 70 == sum(results["statuses"].values())
    assert {"tei /rerank", "cohere /v1/rerank"} <= set(results["kinds"])
    assert (out / "soak_rerank.png").stat().st_size > 0
    report = (out / "soak_rerank.md").read_text()
    assert "first-quarter median MB" in report and "| tei /rerank |" in report and "load average" in report


@pytest.mark.real_model
def test_every_hostile_soak_request_gets_the_status_it_names(models, load_run):
    """The soak's hostile requests, each sent once: every answer is the 4xx the case names."""
    import uvloop

    from fastembed_native.bench.load import run_calls
    from fastembed_native.bench.rerank_models import built_model
    from fastembed_native.bench.serve_rerank import VariedReranks

    make = VariedReranks("ranker", ["One sentence here. And more text after it."] * 20, seed=0)
    cases = make.hostile_cases()
    assert {call.expect for _, call in cases} == {400, 404, 413, 422}
    with Server(model_arg("ranker", built_model("tiny-bert", models).onnx_dir)) as server:
        outcome = uvloop.run(run_calls(server.url, [call for _, call in cases], 2, 120))
        assert server.json("GET", "/health")[0] == 200
    assert outcome["errors"] == 0, outcome["statuses"]
    assert outcome["requests"] == len(cases) and outcome["items"] == 0


@pytest.mark.real_model
def test_embedding_soak_runs_on_the_same_loop(minilm_dir, tmp_path):
    out = tmp_path / "soak"
    result = bench_serve(
        "--model", str(minilm_dir), "--soak", "20", "--soak-warmup", "5", "--soak-clients", "4",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "soak.json").read_text())
    assert results["requests"] == 20 and results["errors"] == 0
    assert results["statuses"] == {"200": 25}
    assert len(results["samples"]) == 21 and results["growth_mb"] >= 0
    assert (out / "soak.png").stat().st_size > 0
