"""LlamaIndex (llama-index-core): the adapter as a VectorStoreIndex's embed_model and a query
engine's node postprocessor, offline, on the real MiniLM and a tiny reranker; vectors equal to
TextEmbedding's, scores to TextCrossEncoder's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network, tiny_reranker  # noqa: F401

pytest.importorskip("llama_index.core", reason="llama-index-core is not installed (the [llama-index] extra)")

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore, TextNode

from fastembed_native import TextCrossEncoder
from fastembed_native.integrations.llama_index import (
    FastembedNativeEmbedding,
    FastembedNativeRerank,
)

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def embed_model(minilm_dir) -> FastembedNativeEmbedding:
    return FastembedNativeEmbedding(model_name=minilm_dir)


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return tiny_reranker(tmp_path_factory.mktemp("reranker"))


def nodes() -> list[TextNode]:
    return [TextNode(text=text, id_=str(i)) for i, text in enumerate(CORPUS)]


def test_sync_async_and_batch_vectors_are_text_embeddings(embed_model, minilm):
    assert isinstance(embed_model, BaseEmbedding)
    passages = minilm.embed_passage(CORPUS)
    query = minilm.embed_query("espresso")[0]
    np.testing.assert_allclose(embed_model.get_text_embedding(CORPUS[0]), passages[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(embed_model.get_query_embedding("espresso"), query, rtol=0, atol=1e-6)
    batch = embed_model.get_text_embedding_batch(CORPUS)
    np.testing.assert_allclose(batch, passages, rtol=0, atol=1e-6)

    async def all_async():
        return await asyncio.gather(
            embed_model.aget_text_embedding(CORPUS[0]),
            embed_model.aget_query_embedding("espresso"),
            embed_model.aget_text_embedding_batch(CORPUS),
        )

    one, q, many = asyncio.run(all_async())
    np.testing.assert_allclose(one, passages[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(q, query, rtol=0, atol=1e-6)
    np.testing.assert_allclose(many, passages, rtol=0, atol=1e-6)


def test_small_embed_batch_size_gives_the_same_vectors(minilm_dir, minilm):
    chunked = FastembedNativeEmbedding(model_name=minilm_dir, embed_batch_size=2)
    assert chunked.embed_batch_size == 2 and chunked.options == {}
    np.testing.assert_allclose(
        chunked.get_text_embedding_batch(CORPUS), minilm.embed_passage(CORPUS), rtol=0, atol=1e-6
    )


def test_query_prompt_is_applied(minilm_dir, minilm):
    prompted = FastembedNativeEmbedding(model_name=minilm_dir, prompts={"query": "query: "})
    assert prompted.options == {"prompts": {"query": "query: "}}
    np.testing.assert_allclose(
        prompted.get_query_embedding("tower"), minilm.embed(["query: tower"])[0], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        prompted.get_text_embedding("tower"), minilm.embed(["tower"])[0], rtol=0, atol=1e-6
    )


def test_vector_store_index_retrieves_the_right_passage(embed_model):
    index = VectorStoreIndex(nodes(), embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=2)
    for query, expected in QUERIES.items():
        assert retriever.retrieve(query)[0].node.node_id == str(expected), query


def test_from_documents_through_the_default_splitter(embed_model):
    """The usual path: documents split into nodes by LlamaIndex (its bundled tokenizer, offline)."""
    index = VectorStoreIndex.from_documents(
        [Document(text=text, doc_id=str(i)) for i, text in enumerate(CORPUS)], embed_model=embed_model
    )
    hit = index.as_retriever(similarity_top_k=1).retrieve("how is espresso coffee made")[0]
    assert hit.node.ref_doc_id == "4"


def test_serialisation_round_trip(minilm_dir):
    original = FastembedNativeEmbedding(model_name=minilm_dir, embed_batch_size=64, threads=1)
    data = original.to_dict()
    assert data["class_name"] == "FastembedNativeEmbedding" and data["options"] == {"threads": 1}
    restored = FastembedNativeEmbedding.from_dict(data)
    assert restored.embed_batch_size == 64 and restored.model is original.model  # the same loaded model


def test_rerank_postprocessor_in_a_query_engine(embed_model, reranker_dir):
    rerank = FastembedNativeRerank(model_name=reranker_dir, top_n=2)
    index = VectorStoreIndex(nodes(), embed_model=embed_model)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=4, node_postprocessors=[rerank])
    query = "how is espresso coffee made"
    response = engine.query(query)
    candidates = [n.node.get_content() for n in index.as_retriever(similarity_top_k=4).retrieve(query)]
    scores = TextCrossEncoder(reranker_dir).rerank(query, candidates)
    order = np.argsort(-scores, kind="stable")[:2]
    assert [n.node.get_content() for n in response.source_nodes] == [candidates[i] for i in order]
    np.testing.assert_allclose([n.score for n in response.source_nodes], scores[order], rtol=0, atol=1e-6)


def test_rerank_keeps_retrieval_scores_and_async(reranker_dir):
    rerank = FastembedNativeRerank(model_name=reranker_dir, top_n=3, keep_retrieval_score=True)
    retrieved = [NodeWithScore(node=n, score=0.5 - i / 10) for i, n in enumerate(nodes())]
    query = "Which tower stands in Paris?"
    kept = rerank.postprocess_nodes(retrieved, query_str=query)
    scores = TextCrossEncoder(reranker_dir).rerank(query, CORPUS)
    assert [n.node.node_id for n in kept] == [str(i) for i in np.argsort(-scores, kind="stable")[:3]]
    assert [n.node.metadata["retrieval_score"] for n in kept] == [
        retrieved[int(n.node.node_id)].score for n in kept
    ]
    assert all("retrieval_score" not in n.node.metadata for n in retrieved)  # the inputs are unchanged
    again = asyncio.run(rerank.apostprocess_nodes(retrieved, query_str=query))
    assert [n.node.node_id for n in again] == [n.node.node_id for n in kept]
    assert FastembedNativeRerank.from_dict(rerank.to_dict()).top_n == 3
    with pytest.raises(ValueError, match="query"):
        rerank.postprocess_nodes(retrieved)
