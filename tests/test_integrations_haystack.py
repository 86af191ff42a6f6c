"""Haystack (haystack-ai): the embedders and ranker as components of indexing and query Pipelines
over an InMemoryDocumentStore, offline, on the real MiniLM and a tiny reranker; serialised with the
pipeline and loaded back; vectors equal to TextEmbedding's, scores to TextCrossEncoder's."""

from __future__ import annotations

import asyncio
import inspect
import os

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network, tiny_reranker  # noqa: F401

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # before Haystack is imported
pytest.importorskip("haystack", reason="haystack-ai is not installed (the [haystack] extra)")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from fastembed_native import TextCrossEncoder
from fastembed_native.integrations.haystack import (
    FastembedNativeDocumentEmbedder,
    FastembedNativeRanker,
    FastembedNativeTextEmbedder,
)

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return tiny_reranker(tmp_path_factory.mktemp("reranker"))


def documents() -> list[Document]:
    return [Document(content=text, meta={"i": i, "title": f"passage {i}"}) for i, text in enumerate(CORPUS)]


@pytest.fixture(scope="module")
def store(minilm_dir) -> InMemoryDocumentStore:
    """Filled by an indexing pipeline: document embedder -> writer."""
    store = InMemoryDocumentStore()
    indexing = Pipeline()
    indexing.add_component("embedder", FastembedNativeDocumentEmbedder(model_name=minilm_dir))
    indexing.add_component("writer", DocumentWriter(store))
    indexing.connect("embedder.documents", "writer.documents")
    assert indexing.run({"embedder": {"documents": documents()}})["writer"]["documents_written"] == len(
        CORPUS
    )
    return store


def test_document_and_text_vectors_are_text_embeddings(minilm_dir, minilm):
    embedder = FastembedNativeDocumentEmbedder(model_name=minilm_dir)
    embedder.warm_up()
    inputs = documents()
    out = embedder.run(inputs)["documents"]
    assert [d.id for d in out] == [d.id for d in inputs] and all(d.embedding is None for d in inputs)
    np.testing.assert_allclose([d.embedding for d in out], minilm.embed_passage(CORPUS), rtol=0, atol=1e-6)
    text = FastembedNativeTextEmbedder(model_name=minilm_dir).run("espresso")["embedding"]
    assert type(text) is list and type(text[0]) is float
    np.testing.assert_allclose(text, minilm.embed_query("espresso")[0], rtol=0, atol=1e-6)
    assert embedder.run([]) == {"documents": []}
    with pytest.raises(TypeError, match="list of Documents"):
        embedder.run("a string")  # type: ignore[arg-type]


def test_meta_fields_prefix_and_prompts(minilm_dir, minilm):
    embedder = FastembedNativeDocumentEmbedder(
        model_name=minilm_dir, meta_fields_to_embed=["title"], embedding_separator=" | ", suffix="!"
    )
    got = embedder.run(documents()[:2])["documents"]
    expected = minilm.embed([f"passage {i} | {CORPUS[i]}!" for i in range(2)])
    np.testing.assert_allclose([d.embedding for d in got], expected, rtol=0, atol=1e-6)
    prompted = FastembedNativeTextEmbedder(model_name=minilm_dir, prompts={"query": "query: "})
    np.testing.assert_allclose(
        prompted.run("tower")["embedding"], minilm.embed(["query: tower"])[0], rtol=0, atol=1e-6
    )


def test_async_runs(minilm_dir, minilm):
    text = FastembedNativeTextEmbedder(model_name=minilm_dir)
    docs = FastembedNativeDocumentEmbedder(model_name=minilm_dir)

    async def both():
        return await asyncio.gather(text.run_async("espresso"), docs.run_async(documents()))

    query, out = asyncio.run(both())
    np.testing.assert_allclose(query["embedding"], minilm.embed_query("espresso")[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        [d.embedding for d in out["documents"]], minilm.embed_passage(CORPUS), rtol=0, atol=1e-6
    )


def query_pipeline(store, minilm_dir, reranker_dir) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component("embedder", FastembedNativeTextEmbedder(model_name=minilm_dir))
    pipeline.add_component("retriever", InMemoryEmbeddingRetriever(store, top_k=4))
    pipeline.add_component("ranker", FastembedNativeRanker(model_name=reranker_dir, top_k=2, threads=1))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def test_retrieval_finds_the_right_passage(store, minilm_dir):
    pipeline = Pipeline()
    pipeline.add_component("embedder", FastembedNativeTextEmbedder(model_name=minilm_dir))
    pipeline.add_component("retriever", InMemoryEmbeddingRetriever(store, top_k=2))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    for query, expected in QUERIES.items():
        hits = pipeline.run({"embedder": {"text": query}})["retriever"]["documents"]
        assert hits[0].meta["i"] == expected, query


def test_query_pipeline_reranks_and_round_trips(store, minilm_dir, reranker_dir):
    pipeline = query_pipeline(store, minilm_dir, reranker_dir)
    query = "how is espresso coffee made"
    out = pipeline.run(
        {"embedder": {"text": query}, "ranker": {"query": query}}, include_outputs_from={"retriever"}
    )
    candidates = [d.content for d in out["retriever"]["documents"]]
    scores = TextCrossEncoder(reranker_dir).rerank(query, candidates)
    order = np.argsort(-scores, kind="stable")[:2]
    ranked = out["ranker"]["documents"]
    assert [d.content for d in ranked] == [candidates[i] for i in order]
    np.testing.assert_allclose([d.score for d in ranked], scores[order], rtol=0, atol=1e-6)

    # Saved as YAML and loaded back (our module allow-listed, as Haystack 3 asks; 2.x loads any), it
    # runs the same.
    text = pipeline.dumps()
    assert "fastembed_native.integrations.haystack.FastembedNativeRanker" in text
    allow = "allowed_modules" in inspect.signature(Pipeline.loads).parameters
    loaded = Pipeline.loads(text, **({"allowed_modules": ["fastembed_native.*"]} if allow else {}))
    assert loaded.get_component("ranker").to_dict() == pipeline.get_component("ranker").to_dict()
    again = loaded.run({"embedder": {"text": query}, "ranker": {"query": query}})["ranker"]["documents"]
    assert [d.content for d in again] == [d.content for d in ranked]


def test_component_serialisation(minilm_dir, reranker_dir):
    for component in (
        FastembedNativeTextEmbedder(model_name=minilm_dir, prefix="> ", threads=1),
        FastembedNativeDocumentEmbedder(model_name=minilm_dir, meta_fields_to_embed=["title"], batch_size=8),
        FastembedNativeRanker(model_name=reranker_dir, top_k=3, score_threshold=0.1, activation="identity"),
    ):
        data = component.to_dict()
        assert data["type"] == f"fastembed_native.integrations.haystack.{type(component).__name__}"
        assert type(component).from_dict(data).to_dict() == data


def test_ranker_top_k_threshold_and_errors(reranker_dir):
    ranker = FastembedNativeRanker(model_name=reranker_dir, top_k=5)
    query = "Which tower stands in Paris?"
    scores = TextCrossEncoder(reranker_dir).rerank(query, CORPUS)
    assert len(ranker.run(query, documents())["documents"]) == 5
    assert len(ranker.run(query, documents(), top_k=2)["documents"]) == 2
    threshold = float(np.median(scores))
    kept = FastembedNativeRanker(model_name=reranker_dir, score_threshold=threshold).run(query, documents())
    assert all(d.score >= threshold for d in kept["documents"]) and len(kept["documents"]) == 3
    assert ranker.run(query, [])["documents"] == []
    with pytest.raises(ValueError, match="top_k"):
        ranker.run(query, documents(), top_k=0)
    out = asyncio.run(ranker.run_async(query, documents(), top_k=1))["documents"]
    assert out[0].meta["i"] == int(np.argmax(scores))
