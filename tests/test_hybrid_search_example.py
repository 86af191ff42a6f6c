"""examples/hybrid_search.py: Python's docstrings into an embedded Qdrant, searched dense + BM25 (+ SPLADE),
fused and reranked, run as a reader runs it (a subprocess, offline) on a slice of the standard library.

- The corpus: the docstrings it reads are the ones in the files, named and located.
- BM25: its vectors with Qdrant's IDF modifier score documents exactly as BM25's formula does.
- Known queries: each public function's docstring summary in the slice, asked as a query, finds that
  function in the top 10 (and the demo queries find their answers).
- The optional stages: a SPLADE model and a reranker given by directory (tiny random ones: the check
  is that each stage runs and reports, not search quality), and a folder index reused by a second run.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (the [qdrant] extra)")

from integration_models import tiny_reranker, tiny_splade
from qdrant_client import QdrantClient, models

from fastembed_native import TextCrossEncoder

pytestmark = pytest.mark.real_model

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hybrid_search.py"
#: A slice of the standard library: a few hundred docstrings, indexed in seconds.
MODULES = "textwrap,shutil,json,shlex,glob,fnmatch,math,heapq,bisect,statistics"
#: The example's demo queries and the passage each must find.
DEMO_ANSWERS = {
    "remove the common indentation from every line of a text block": "textwrap.dedent",
    "copy a file together with its permission bits": "shutil.copy",
    "greatest common divisor of integers": "math.gcd",
    "split a command line into words the way a shell does": "shlex.split",
    "find the files whose names match a wildcard pattern": "glob.glob",
}


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hybrid_search", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hybrid_search"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["hybrid_search"]


@pytest.fixture(scope="module")
def env(model_cache, minilm_dir) -> dict[str, str]:
    return {**os.environ, "FASTEMBED_NATIVE_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"}


def run(env: dict[str, str], *args: str) -> tuple[list[dict], str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--modules", MODULES, "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_the_corpus_is_the_docstrings_in_the_files(example):
    import textwrap

    passages = example.gather(["stdlib"], MODULES.split(","))
    by_name = {p.name: p for p in passages}
    dedent = by_name["textwrap.dedent"]
    assert dedent.kind == "function" and dedent.signature == "(text)"
    assert dedent.doc.startswith(textwrap.dedent.__doc__.strip().splitlines()[0])
    file, line = dedent.where.rsplit(":", 1)
    assert (
        file == "textwrap.py"
        and "def dedent" in Path(textwrap.__file__).read_text().splitlines()[int(line) - 1]
    )
    assert by_name["textwrap.TextWrapper.wrap"].kind == "method"
    assert by_name["textwrap.TextWrapper.wrap"].signature == "(text)"  # self dropped
    assert by_name["math.gcd"].where == "math (built-in)"  # a C module, read by importing it
    assert by_name["json.decoder.JSONDecoder"].kind == "class"
    assert all(not part.startswith("_") for p in passages for part in p.name.split("."))
    assert len({p.text for p in passages}) == len(passages) > 150
    assert all(p.name.split(".")[0] in MODULES.split(",") for p in passages)
    sample = example.gather(["stdlib"], MODULES.split(","), max_passages=40)
    assert len(sample) == 40 and sample == example.gather(["stdlib"], MODULES.split(","), max_passages=40)


def test_bm25_with_qdrant_idf_is_the_bm25_score(example):
    texts = [
        "Copy data and mode bits of a file.",
        "Copy a file, its data, its metadata and its mode bits to a directory.",
        "Return the greatest common divisor of the integers.",
        "Split a string using shell-like syntax.",
        "copy copy copy",
    ]
    bm25 = example.Bm25().fit(texts)
    client = QdrantClient(":memory:")
    client.create_collection(
        "bm25",
        vectors_config={},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    client.upsert(
        "bm25",
        points=[
            models.PointStruct(
                id=i,
                vector={"bm25": models.SparseVector(indices=v.indices.tolist(), values=v.values.tolist())},
            )
            for i, v in enumerate(bm25.embed_passage(texts))
        ],
    )
    query = "copy the mode bits of files"
    [q] = bm25.embed_query([query])
    hits = client.query_points(
        "bm25", query=models.SparseVector(indices=q.indices.tolist(), values=q.values.tolist()), using="bm25"
    ).points

    docs = [bm25.words(t) for t in texts]
    avg = sum(map(len, docs)) / len(docs)
    assert bm25.words(query) == ["copy", "mode", "bit", "file"]  # stop words out, plural s dropped

    def score(doc: list[str]) -> float:  # Okapi BM25, with Qdrant's idf
        total = 0.0
        for word in set(bm25.words(query)):
            tf, n = doc.count(word), sum(word in d for d in docs)
            if tf:
                idf = math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
                total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(doc) / avg))
        return total

    expected = sorted(((score(d), i) for i, d in enumerate(docs) if score(d) > 0), reverse=True)
    assert [h.id for h in hits] == [i for _, i in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], rtol=1e-5)


def test_known_queries_find_their_passage(example, env):
    """A function's docstring summary, asked as a query, finds that function in the top 10."""
    passages = example.gather(["stdlib"], MODULES.split(","))
    count = collections.Counter(p.summary for p in passages)
    known = [
        p
        for p in passages
        if p.kind in ("function", "method") and len(p.summary.split()) >= 6 and count[p.summary] == 1
    ]
    assert len(known) >= 50
    queries = [p.summary for p in known] + list(DEMO_ANSWERS)
    results, stderr = run(env, "--top", "10", *(a for q in queries for a in ("--query", q)))
    assert "dense  : default model" in stderr and "bm25 (lexical" in stderr
    assert (
        "splade : none: no --sparse-model given" in stderr and "rerank : none: no --reranker given" in stderr
    )
    assert f"indexed {len(passages)} passages" in stderr
    assert [r["query"] for r in results] == queries
    expected = [p.name for p in known] + list(DEMO_ANSWERS.values())
    ranks = {}
    for result, name in zip(results, expected, strict=True):
        names = [h["name"] for h in result["hits"]]
        assert name in names, f"{result['query']!r} did not find {name} in the top 10: {names}"
        ranks[name] = names.index(name) + 1
        assert not result["reranked"] and set(result["hits"][0]["ranks"]) == {"dense", "bm25"}
    first = sum(r == 1 for r in ranks.values()) / len(ranks)
    assert first >= 0.8, f"only {first:.0%} of the known queries found their passage first"


def test_splade_and_reranker_stages_and_a_reused_folder(env, tmp_path_factory):
    pytest.importorskip("sentence_transformers", reason="building a SPLADE model needs the [export] extra")
    splade = tiny_splade(tmp_path_factory.mktemp("splade"))
    reranker = tiny_reranker(tmp_path_factory.mktemp("reranker"))
    db = tmp_path_factory.mktemp("db") / "pydocs.qdrant"
    query = "greatest common divisor of integers"
    args = ["--sparse-model", str(splade), "--reranker", str(reranker), "--db", str(db), "--query", query]
    [result], stderr = run(env, *args)
    assert f"splade : {splade}" in stderr and f"rerank : {reranker}" in stderr
    assert "reciprocal rank fusion of dense + bm25 + splade" in stderr
    hits = result["hits"]
    assert result["reranked"] and len(hits) == 5 and set(hits[0]["ranks"]) == {"dense", "bm25", "splade"}
    # The reranker's scores, best first (its weights are random: the order is its, not a good one).
    scores = TextCrossEncoder(reranker).rerank(query, [h["document"] for h in hits])
    np.testing.assert_allclose([h["score"] for h in hits], scores, rtol=0, atol=1e-5)
    assert np.all(np.diff(scores) <= 0)

    [again], stderr = run(env, *args)
    assert "reusing" in stderr and "indexed" not in stderr
    assert [h["id"] for h in again["hits"]] == [h["id"] for h in hits]


def test_a_model_it_cannot_get_stops_it_saying_so(env):
    """Offline, a reranker named by hub id is not there: the example stops and says what it tried,
    rather than running without the stage the reader asked for."""
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--modules",
            "textwrap",
            "--reranker",
            "cross-encoder/ms-marco-MiniLM-L-6-v2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and not done.stdout
    assert (
        "hybrid_search: cannot load a model: model 'cross-encoder/ms-marco-MiniLM-L-6-v2' not found"
        in done.stderr
    )
    assert "HF_HUB_OFFLINE is set" in done.stderr and "Traceback" not in done.stderr
