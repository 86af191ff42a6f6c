"""LangChain (langchain-core, and langchain-classic's ContextualCompressionRetriever): the adapter
through LangChain's own vector store, retriever and compression retriever, offline, on the real MiniLM
and a tiny reranker; vectors equal to TextEmbedding's, scores to TextCrossEncoder's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network, tiny_reranker  # noqa: F401

pytest.importorskip("langchain_core", reason="langchain-core is not installed (the [langchain] extra)")

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore

from fastembed_native import TextCrossEncoder, TextEmbedding
from fastembed_native.integrations.langchain import (
    FastembedNativeEmbeddings,
    FastembedNativeRerank,
)

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def embeddings(minilm_dir) -> FastembedNativeEmbeddings:
    return FastembedNativeEmbeddings(model_name=minilm_dir)


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return tiny_reranker(tmp_path_factory.mktemp("reranker"))


def test_vectors_are_text_embeddings(embeddings, minilm):
    assert isinstance(embeddings, Embeddings)
    documents = embeddings.embed_documents(CORPUS)
    assert isinstance(documents, list) and all(type(v) is list and type(v[0]) is float for v in documents)
    np.testing.assert_allclose(documents, minilm.embed_passage(CORPUS), rtol=0, atol=1e-6)
    query = embeddings.embed_query("Which tower stands in Paris?")
    np.testing.assert_allclose(
        query, minilm.embed_query("Which tower stands in Paris?")[0], rtol=0, atol=1e-6
    )


def test_async_forms_give_the_same_vectors(embeddings):
    async def both():
        return await asyncio.gather(embeddings.aembed_documents(CORPUS), embeddings.aembed_query("espresso"))

    documents, query = asyncio.run(both())
    np.testing.assert_allclose(documents, embeddings.embed_documents(CORPUS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(query, embeddings.embed_query("espresso"), rtol=0, atol=1e-6)


def test_query_and_passage_prompts_are_applied(minilm_dir):
    prompted = FastembedNativeEmbeddings(
        model_name=minilm_dir, prompts={"query": "query: ", "passage": "passage: "}
    )
    plain = TextEmbedding(minilm_dir)
    np.testing.assert_allclose(
        prompted.embed_query("tower"), plain.embed(["query: tower"])[0], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        prompted.embed_documents(["tower"]), plain.embed(["passage: tower"]), rtol=0, atol=1e-6
    )


def test_in_memory_vector_store_retrieves_the_right_passage(embeddings):
    store = InMemoryVectorStore(embeddings)
    store.add_texts(CORPUS, metadatas=[{"i": i} for i in range(len(CORPUS))])
    retriever = store.as_retriever(search_kwargs={"k": 2})
    for query, expected in QUERIES.items():
        hits = retriever.invoke(query)
        assert hits[0].metadata["i"] == expected, (query, hits)


def test_one_model_per_configuration(minilm_dir):
    a, b = FastembedNativeEmbeddings(model_name=minilm_dir), FastembedNativeEmbeddings(model_name=minilm_dir)
    assert a.model is b.model
    assert FastembedNativeEmbeddings(model_name=minilm_dir, threads=1).model is not a.model
    loaded = TextEmbedding(minilm_dir)
    assert FastembedNativeEmbeddings(model=loaded).model is loaded
    with pytest.raises(TypeError, match="not both"):
        FastembedNativeEmbeddings(model_name=minilm_dir, model=loaded)


def test_rerank_compressor_orders_by_cross_encoder_scores(reranker_dir):
    rerank = FastembedNativeRerank(model_name=reranker_dir, top_n=3)
    documents = [Document(page_content=text, metadata={"i": i}, id=str(i)) for i, text in enumerate(CORPUS)]
    query = "Which tower stands in Paris?"
    kept = rerank.compress_documents(documents, query)
    scores = TextCrossEncoder(reranker_dir).rerank(query, CORPUS)
    best = np.argsort(-scores, kind="stable")[:3]
    assert [d.metadata["i"] for d in kept] == list(best)
    assert [d.id for d in kept] == [str(i) for i in best]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in kept], scores[best], rtol=0, atol=1e-6)
    assert "relevance_score" not in documents[0].metadata  # the inputs are not changed
    assert asyncio.run(rerank.acompress_documents(documents, query)) == kept
    assert rerank.compress_documents([], query) == []


def test_contextual_compression_retriever(embeddings, reranker_dir):
    retrievers = pytest.importorskip(
        "langchain_classic.retrievers", reason="langchain-classic ([test] extra)"
    )
    store = InMemoryVectorStore(embeddings)
    store.add_texts(CORPUS)
    retriever = retrievers.ContextualCompressionRetriever(
        base_compressor=FastembedNativeRerank(model_name=reranker_dir, top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )
    query = "how is espresso coffee made"
    hits = retriever.invoke(query)
    candidates = [d.page_content for d in store.similarity_search(query, k=4)]
    scores = TextCrossEncoder(reranker_dir).rerank(query, candidates)
    assert [d.page_content for d in hits] == [candidates[i] for i in np.argsort(-scores, kind="stable")[:2]]
