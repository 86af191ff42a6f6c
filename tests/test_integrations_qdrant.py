"""Qdrant (qdrant-client local mode, no server): a collection of named dense and sparse vectors filled
by the adapter, searched plain, fused (RRF) and reranked, in memory and in a folder opened again,
offline, on the real MiniLM, a tiny reranker, the real SparseTextEmbedding on tiny exported SPLADE
models (one inference-free) and a bag-of-words encoder (anything with SparseTextEmbedding's
embed_passage / embed_query and indices / values plugs in the same way)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from integration_models import CORPUS, QUERIES, no_network, tiny_reranker, tiny_splade  # noqa: F401

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (the [qdrant] extra)")

from qdrant_client import QdrantClient, models
from qdrant_client.hybrid.fusion import reciprocal_rank_fusion

from fastembed_native import SparseTextEmbedding, TextCrossEncoder
from fastembed_native.integrations.qdrant import DOCUMENT_KEY, FastembedNativeQdrant, Sparse

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@dataclass
class Encoded:
    indices: np.ndarray
    values: np.ndarray


class WordCounts:
    """A sparse encoder with SparseTextEmbedding's calls: each lower-cased word's CRC32 -> its count."""

    def encode(self, text: str) -> Encoded:
        ids, counts = np.unique(
            [zlib.crc32(w.encode()) % 100_003 for w in re.findall(r"\w+", text.lower())], return_counts=True
        )
        return Encoded(ids.astype(np.int32), counts.astype(np.float32))

    def embed_passage(self, texts):
        return [self.encode(t) for t in texts]

    def embed_query(self, texts):
        return [self.encode(t) for t in ([texts] if isinstance(texts, str) else texts)]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return tiny_reranker(tmp_path_factory.mktemp("reranker"))


@pytest.fixture
def dense(minilm_dir) -> FastembedNativeQdrant:
    store = FastembedNativeQdrant(":memory:", "passages", model_name=minilm_dir)
    assert store.create_collection()
    store.add(CORPUS, metadata=[{"i": i} for i in range(len(CORPUS))], ids=range(len(CORPUS)))
    return store


def test_points_carry_text_embedding_vectors(dense, minilm):
    points = dense.client.retrieve("passages", ids=list(range(len(CORPUS))), with_vectors=True)
    np.testing.assert_allclose(
        [p.vector["dense"] for p in points], minilm.embed_passage(CORPUS), rtol=0, atol=1e-6
    )
    assert [p.payload for p in points] == [{"i": i, DOCUMENT_KEY: t} for i, t in enumerate(CORPUS)]


def test_dense_query_finds_the_passage(dense, minilm):
    for query, expected in QUERIES.items():
        hits = dense.query(query, limit=2)
        assert len(hits) == 2 and hits[0].id == expected, query
        cosine = float(minilm.embed_query(query)[0] @ minilm.embed_passage(CORPUS[expected])[0])
        assert abs(hits[0].score - cosine) < 1e-5
    only_odd = models.Filter(must=[models.FieldCondition(key="i", match=models.MatchAny(any=[1, 3, 5]))])
    assert {h.id for h in dense.query("a tower in Paris", limit=6, query_filter=only_odd)} == {1, 3, 5}


def test_hybrid_query_is_qdrant_rrf_of_dense_and_sparse(minilm_dir):
    store = FastembedNativeQdrant(":memory:", "hybrid", model_name=minilm_dir, sparse=WordCounts())
    store.create_collection()
    store.add(CORPUS, ids=range(len(CORPUS)))
    [point] = store.client.retrieve("hybrid", ids=[2], with_vectors=True)
    expected_sparse = WordCounts().encode(CORPUS[2])
    assert point.vector["sparse"].indices == expected_sparse.indices.tolist()
    assert point.vector["sparse"].values == expected_sparse.values.tolist()

    query = "programming language readability"
    by_name = {
        name: store.client.query_points("hybrid", query=vector, using=name, limit=6).points
        for name, vector in (("dense", store.dense.query(query)), ("sparse", store.sparse[0].query(query)))
    }
    expected = reciprocal_rank_fusion(list(by_name.values()), limit=3)
    hits = store.query(query, limit=3)
    assert [h.id for h in hits] == [p.id for p in expected] and hits[0].id == 2
    assert [h.id for h in store.query(query, limit=3, using=["sparse"])] == [
        p.id for p in by_name["sparse"][:3]
    ]
    with pytest.raises(ValueError, match="no named vectors"):
        store.query(query, using=["colbert"])


def test_rerank_after_fusion(minilm_dir, reranker_dir):
    store = FastembedNativeQdrant(
        ":memory:",
        "reranked",
        model_name=minilm_dir,
        sparse=Sparse(WordCounts(), idf=True),
        reranker=reranker_dir,
    )
    store.create_collection()
    store.add(CORPUS, ids=range(len(CORPUS)))
    query = "how is espresso coffee made"
    candidates = store.query(query, limit=4, rerank=False, candidates=4)
    hits = store.query(query, limit=2, candidates=4)
    texts = [c.payload[DOCUMENT_KEY] for c in candidates]
    scores = TextCrossEncoder(reranker_dir).rerank(query, texts)
    order = np.argsort(-scores, kind="stable")[:2]
    assert [h.id for h in hits] == [candidates[i].id for i in order]
    np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=0, atol=1e-6)
    plain = FastembedNativeQdrant(store.client, "reranked", model=store.dense.model, sparse=WordCounts())
    with pytest.raises(ValueError, match="needs a reranker"):
        plain.query(query, rerank=True)


def test_a_folder_collection_opens_again_and_refuses_a_mismatch(minilm_dir, tmp_path, minilm):
    folder = tmp_path / "qdrant"
    store = FastembedNativeQdrant(folder, "docs", model_name=minilm_dir)
    store.create_collection()
    ids = store.add(CORPUS)
    assert len(set(ids)) == len(CORPUS)
    store.client.close()

    again = FastembedNativeQdrant(QdrantClient(path=str(folder)), "docs", model=minilm)
    assert again.create_collection() is False  # kept, with its points
    assert again.query("how is espresso coffee made", limit=1)[0].payload[DOCUMENT_KEY] == CORPUS[4]
    with pytest.raises(ValueError, match="no sparse vectors"):
        FastembedNativeQdrant(again.client, "docs", model=minilm, sparse=WordCounts()).create_collection()
    with pytest.raises(ValueError, match="not 'text'"):
        FastembedNativeQdrant(again.client, "docs", model=minilm, dense_name="text").create_collection()
    assert FastembedNativeQdrant(again.client, "docs", model=minilm, sparse=WordCounts()).create_collection(
        recreate=True
    )
    again.client.close()


def test_argument_errors(minilm):
    with pytest.raises(ValueError, match="different names"):
        FastembedNativeQdrant(":memory:", "x", model=minilm, sparse=Sparse(WordCounts(), name="dense"))
    store = FastembedNativeQdrant(":memory:", "x", model=minilm)
    with pytest.raises(ValueError, match="differ in length"):
        store.add(["a", "b"], ids=[1])
    with pytest.raises(ValueError, match="limit"):
        store.query("a", limit=0)


# -- the real SparseTextEmbedding (tiny random SPLADE models, exported) -------------------------------


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory):
    pytest.importorskip("sentence_transformers", reason="building a SPLADE model needs the [export] extra")
    return tiny_splade(tmp_path_factory.mktemp("splade"))


def test_splade_named_vector_fused_and_reranked(minilm_dir, splade_dir, reranker_dir, minilm):
    splade = SparseTextEmbedding(splade_dir)
    store = FastembedNativeQdrant(
        ":memory:",
        "splade",
        model_name=minilm_dir,
        sparse=Sparse(splade, name="splade"),
        reranker=reranker_dir,
    )
    store.create_collection()
    assert store.client.get_collection("splade").config.params.sparse_vectors["splade"].modifier is None
    store.add(CORPUS, ids=range(len(CORPUS)))
    points = store.client.retrieve("splade", ids=list(range(len(CORPUS))), with_vectors=True)
    documents = splade.embed_passage(CORPUS)
    assert all(0 < len(e) < splade.vocab_size for e in documents)  # really sparse, never empty
    for point, expected in zip(points, documents, strict=True):
        assert point.vector["splade"].indices == expected.indices.tolist()
        np.testing.assert_allclose(point.vector["splade"].values, expected.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        [p.vector["dense"] for p in points], minilm.embed_passage(CORPUS), rtol=0, atol=1e-6
    )

    query = "a readable programming language"
    [query_vector] = splade.embed_query([query])
    by_splade = store.client.query_points(
        "splade",
        query=models.SparseVector(indices=query_vector.indices.tolist(), values=query_vector.values.tolist()),
        using="splade",
        limit=6,
    ).points
    assert len(by_splade) == len(CORPUS)  # every passage shares a word with the query
    # Qdrant's sparse score is the dot product of the two vectors.
    for hit in by_splade:
        dense_doc = splade.embed_passage([CORPUS[hit.id]])[0].to_dense(splade.vocab_size)
        assert abs(hit.score - float(query_vector.to_dense(splade.vocab_size) @ dense_doc)) < 1e-4
    assert [h.id for h in store.query(query, limit=6, using=["splade"], rerank=False)] == [
        p.id for p in by_splade
    ]
    by_dense = store.client.query_points(
        "splade", query=store.dense.query(query), using="dense", limit=6
    ).points
    fused = store.query(query, limit=4, candidates=6, rerank=False)
    assert [h.id for h in fused] == [p.id for p in reciprocal_rank_fusion([by_dense, by_splade], limit=4)]

    hits = store.query(query, limit=2, candidates=6)  # the fused candidates, reranked
    candidates = store.query(query, limit=6, candidates=6, rerank=False)
    scores = TextCrossEncoder(reranker_dir).rerank(query, [c.payload[DOCUMENT_KEY] for c in candidates])
    order = np.argsort(-scores, kind="stable")[:2]
    assert [h.id for h in hits] == [candidates[i].id for i in order]
    np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=0, atol=1e-6)


def test_inference_free_splade_queries_run_no_model(minilm, tmp_path_factory):
    pytest.importorskip("sentence_transformers", reason="building a SPLADE model needs the [export] extra")
    model_dir = tiny_splade(tmp_path_factory.mktemp("splade-inference-free"), inference_free=True)
    splade = SparseTextEmbedding(model_dir, parallel_runs=1)
    assert splade.static_query is not None
    store = FastembedNativeQdrant(":memory:", "free", model=minilm, sparse=splade)
    store.create_collection()
    store.add(CORPUS, ids=range(len(CORPUS)))
    [point] = store.client.retrieve("free", ids=[4], with_vectors=True)
    [expected_document] = splade.embed_passage([CORPUS[4]])
    assert len(expected_document) > 0
    assert point.vector["sparse"].indices == expected_document.indices.tolist()

    splade.engine.stats(reset=True)
    query = "Espresso is coffee brewed by forcing hot water"  # words of the tiny tokenizer's vocabulary
    hits = store.query(query, limit=3, using=["sparse"])
    assert splade.engine.stats()["runs"] == 0  # the query side is a lookup of static weights
    [expected] = splade.query_embed([query])
    direct = store.client.query_points(
        "free",
        query=models.SparseVector(indices=expected.indices.tolist(), values=expected.values.tolist()),
        using="sparse",
        limit=3,
    ).points
    assert len(expected) > 0 and hits
    assert [h.id for h in hits] == [p.id for p in direct]
