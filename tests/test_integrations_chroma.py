"""Chroma (chromadb): the embedding function behind an in-memory and a persistent collection,
offline, on the real MiniLM: vectors equal to TextEmbedding's, queries through the query prompt, and
a collection that finds its function again by the name and config it stored."""

from __future__ import annotations

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network  # noqa: F401

pytest.importorskip("chromadb", reason="chromadb is not installed (the [chroma] extra)")

import chromadb
from chromadb.config import Settings

from fastembed_native.integrations.chroma import NAME, FastembedNativeEmbeddingFunction

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]

OFFLINE = Settings(anonymized_telemetry=False)


@pytest.fixture(scope="module")
def function(minilm_dir) -> FastembedNativeEmbeddingFunction:
    return FastembedNativeEmbeddingFunction(model_name=minilm_dir)


def test_vectors_are_text_embeddings(function, minilm):
    documents = function(CORPUS)
    assert len(documents) == len(CORPUS) and documents[0].dtype == np.float32
    np.testing.assert_allclose(np.stack(documents), minilm.embed_passage(CORPUS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.stack(function.embed_query(["espresso"])), minilm.embed_query(["espresso"]), rtol=0, atol=1e-6
    )
    assert not function.is_legacy() and function.default_space() == "cosine"


def test_query_prompt_reaches_the_query(minilm_dir, minilm):
    prompted = FastembedNativeEmbeddingFunction(model_name=minilm_dir, prompts={"query": "query: "})
    np.testing.assert_allclose(
        np.stack(prompted.embed_query(["tower"])), minilm.embed(["query: tower"]), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(np.stack(prompted(["tower"])), minilm.embed(["tower"]), rtol=0, atol=1e-6)


def test_in_memory_collection_add_and_query(function, minilm):
    client = chromadb.EphemeralClient(settings=OFFLINE)
    collection = client.create_collection("adapter-test", embedding_function=function)
    collection.add(ids=[str(i) for i in range(len(CORPUS))], documents=CORPUS)
    stored = collection.get(ids=["0", "3"], include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(stored, minilm.embed_passage([CORPUS[0], CORPUS[3]]), rtol=0, atol=1e-6)
    result = collection.query(query_texts=list(QUERIES), n_results=2)
    assert [ids[0] for ids in result["ids"]] == [str(i) for i in QUERIES.values()]
    # cosine distances: 1 - the cosine of the query and passage vectors
    query = minilm.embed_query(next(iter(QUERIES)))[0]
    best = minilm.embed_passage(CORPUS[next(iter(QUERIES.values()))])[0]
    assert abs(result["distances"][0][0] - (1 - float(query @ best))) < 1e-5
    client.delete_collection("adapter-test")


def test_persistent_collection_rebuilds_the_function_from_its_config(minilm_dir, tmp_path, minilm):
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=OFFLINE)
    function = FastembedNativeEmbeddingFunction(model_name=minilm_dir, threads=1)
    client.create_collection("docs", embedding_function=function).add(
        ids=[str(i) for i in range(len(CORPUS))], documents=CORPUS
    )
    again = client.get_collection("docs")  # no embedding_function given: Chroma builds it from the config
    assert again.configuration["embedding_function"].name() == NAME
    assert again.configuration["embedding_function"].get_config() == {
        "model_name": str(minilm_dir),
        "threads": 1,
    }
    assert again.configuration["embedding_function"].model is function.model  # not loaded twice
    hits = again.query(query_texts=["how is espresso coffee made"], n_results=1)
    assert hits["ids"] == [["4"]]


def test_the_model_cannot_change_under_a_collection(function):
    with pytest.raises(ValueError, match="cannot change"):
        function.validate_config_update({"model_name": "a"}, {"model_name": "b"})
    function.validate_config_update({"model_name": "a"}, {"model_name": "a", "threads": 2})
