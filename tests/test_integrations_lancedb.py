"""LanceDB: the registered embedding function named by a table schema (rows embedded on add, searches
on the query prompt, the function rebuilt from the table when it is opened again) and the reranker on
vector and hybrid searches, offline, on the real MiniLM and a tiny reranker."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network, tiny_reranker  # noqa: F401

pytest.importorskip("lancedb", reason="lancedb is not installed (the [lancedb] extra)")

import lancedb
from lancedb.embeddings import get_registry
from lancedb.index import FTS
from lancedb.pydantic import LanceModel, Vector

from fastembed_native import TextCrossEncoder
from fastembed_native.integrations.lancedb import (
    NAME,
    FastembedNativeLanceEmbeddings,
    FastembedNativeReranker,
)

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def embed(minilm_dir) -> FastembedNativeLanceEmbeddings:
    return get_registry().get(NAME).create(model_name=minilm_dir, threads=2)


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return tiny_reranker(tmp_path_factory.mktemp("reranker"))


def schema(embed: FastembedNativeLanceEmbeddings) -> type[LanceModel]:
    class Passage(LanceModel):
        text: str = embed.SourceField()
        vector: Vector(embed.ndims()) = embed.VectorField()  # type: ignore[valid-type]
        i: int

    return Passage


@pytest.fixture
def table(embed, tmp_path):
    db = lancedb.connect(tmp_path / "lance")
    table = db.create_table("passages", schema=schema(embed))
    table.add([{"text": text, "i": i} for i, text in enumerate(CORPUS)])
    return table


def test_registry_create_and_options(embed, minilm_dir):
    assert isinstance(embed, FastembedNativeLanceEmbeddings)
    assert embed.model_name == str(minilm_dir) and embed.options == {"threads": 2}
    assert embed.safe_model_dump() == {"model_name": str(minilm_dir), "threads": 2}  # JSON for the table
    assert embed.ndims() == 384 and embed.max_retries == 0
    assert hash(embed) == hash(get_registry().get(NAME).create(model_name=minilm_dir, threads=2))


def test_rows_are_embedded_on_add_as_text_embedding_does(table, minilm):
    rows = table.to_arrow().sort_by("i")
    np.testing.assert_allclose(
        np.stack(rows["vector"].to_numpy(zero_copy_only=False)),
        minilm.embed_passage(CORPUS),
        rtol=0,
        atol=1e-6,
    )


def test_search_embeds_the_query_and_finds_the_passage(table, embed):
    for query, expected in QUERIES.items():
        hits = table.search(query).limit(2).to_pydantic(schema(embed))
        assert hits[0].i == expected, query


def test_query_prompt_is_applied(minilm_dir, minilm):
    prompted = get_registry().get(NAME).create(model_name=minilm_dir, prompts={"query": "query: "})
    np.testing.assert_allclose(
        prompted.compute_query_embeddings("tower")[0], minilm.embed(["query: tower"])[0], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        prompted.compute_source_embeddings(["tower"])[0], minilm.embed(["tower"])[0], rtol=0, atol=1e-6
    )


def test_reopened_table_rebuilds_the_function_from_its_schema(table, embed, tmp_path):
    reopened = lancedb.connect(tmp_path / "lance").open_table("passages")
    [config] = reopened.embedding_functions.values()
    assert isinstance(config.function, FastembedNativeLanceEmbeddings)
    assert config.function.options == {"threads": 2} and config.function.model is embed.model
    assert reopened.search("how is espresso coffee made").limit(1).to_list()[0]["i"] == 4
    reopened.add([{"text": "Tea is brewed by steeping leaves in hot water.", "i": 6}])
    assert reopened.search("how do you brew tea").limit(1).to_list()[0]["i"] == 6


def test_reranker_on_vector_and_hybrid_search(table, reranker_dir):
    reranker = FastembedNativeReranker(model_name=reranker_dir)
    query = "how is espresso coffee made"
    candidates = [row["text"] for row in table.search(query).limit(4).to_list()]
    reranked = table.search(query).limit(4).rerank(reranker=reranker).to_list()
    scores = TextCrossEncoder(reranker_dir).rerank(query, candidates)
    assert [row["text"] for row in reranked] == [candidates[i] for i in np.argsort(-scores, kind="stable")]
    np.testing.assert_allclose(
        [row["_relevance_score"] for row in reranked], np.sort(scores)[::-1], atol=1e-6
    )

    if "config" in inspect.signature(table.create_index).parameters:  # full-text index for the hybrid search
        table.create_index("text", config=FTS())
    else:  # lancedb < 0.26
        table.create_fts_index("text")
    hybrid = table.search(query, query_type="hybrid").limit(3).rerank(reranker=reranker).to_list()
    texts = [row["text"] for row in hybrid]
    assert len(texts) == 3 and len(set(texts)) == 3
    expected = TextCrossEncoder(reranker_dir).rerank(query, texts)
    np.testing.assert_allclose([row["_relevance_score"] for row in hybrid], expected, atol=1e-6)
    assert list(expected) == sorted(expected, reverse=True)
