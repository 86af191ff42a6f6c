"""Chroma's sparse embedding function on the real SparseTextEmbedding (a tiny exported SPLADE), offline.

Chroma builds sparse indexes and runs ``collection.search`` only on its distributed server and Chroma
Cloud; its local clients refuse a sparse index (asserted below, so a chromadb that starts accepting one
shows up here). So the test goes through everything of Chroma's that runs on this side of the wire:
the registry, a schema that names the function (validated, serialised and rebuilt from its stored
config, as a collection fetched again does), and Chroma's own ``Collection.add`` / ``Collection.search``
client code, which embeds documents and string queries with the function before sending them, against
a stand-in that records what would go to the server.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from integration_models import CORPUS, no_network, tiny_splade  # noqa: F401

pytest.importorskip("chromadb", reason="chromadb is not installed (the [chroma] extra)")
pytest.importorskip("sentence_transformers", reason="building a SPLADE model needs the [export] extra")

from fastembed_native.integrations import chroma as adapter

if not hasattr(adapter, "FastembedNativeSparseEmbeddingFunction"):
    pytest.skip("this chromadb has no SparseEmbeddingFunction protocol (1.5 has)", allow_module_level=True)

import chromadb
from chromadb import Schema, SparseVector, SparseVectorIndexConfig
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings
from chromadb.errors import InvalidArgumentError
from chromadb.execution.expression import K, Knn, Rrf, Search
from chromadb.types import Collection as CollectionModel
from chromadb.utils.embedding_functions import sparse_known_embedding_functions

from fastembed_native import SparseTextEmbedding
from fastembed_native.integrations.chroma import (
    SPARSE_NAME,
    FastembedNativeEmbeddingFunction,
    FastembedNativeSparseEmbeddingFunction,
)

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory):
    return tiny_splade(tmp_path_factory.mktemp("splade"))


@pytest.fixture(scope="module")
def function(splade_dir) -> FastembedNativeSparseEmbeddingFunction:
    return FastembedNativeSparseEmbeddingFunction(model_name=splade_dir, max_active_dims=64)


def _schema(function) -> Schema:
    return Schema().create_index(
        key="splade", config=SparseVectorIndexConfig(source_key=K.DOCUMENT, embedding_function=function)
    )


def _same(chroma_vectors: list[SparseVector], encoded) -> None:
    assert len(chroma_vectors) == len(encoded)
    for vector, expected in zip(chroma_vectors, encoded, strict=True):
        assert isinstance(vector, SparseVector)
        assert vector.indices == expected.indices.tolist()
        np.testing.assert_allclose(vector.values, expected.values, rtol=0, atol=1e-6)


def test_vectors_are_sparse_text_embeddings(function, splade_dir):
    model = SparseTextEmbedding(splade_dir, max_active_dims=64)
    documents = function(CORPUS)
    assert all(0 < len(v.indices) <= 64 for v in documents)
    _same(documents, model.embed_passage(CORPUS))
    _same(function.embed_query(["espresso coffee"]), model.embed_query(["espresso coffee"]))
    assert sparse_known_embedding_functions[SPARSE_NAME] is FastembedNativeSparseEmbeddingFunction
    assert function.get_config() == {"model_name": str(splade_dir), "max_active_dims": 64}


def test_a_schema_stores_the_function_and_builds_it_again(function):
    stored = _schema(function).serialize_to_json()
    config = stored["keys"]["splade"]["sparse_vector"]["sparse_vector_index"]["config"]
    assert config["embedding_function"] == {
        "type": "known",
        "name": SPARSE_NAME,
        "config": function.get_config(),
    }
    rebuilt = Schema.deserialize_from_json(stored).keys["splade"].sparse_vector.sparse_vector_index
    again = rebuilt.config.embedding_function
    assert isinstance(again, FastembedNativeSparseEmbeddingFunction)
    assert again.model is function.model  # the loaded model is shared, not loaded twice
    with pytest.raises(ValueError, match="cannot change"):
        again.validate_config_update(function.get_config(), {"model_name": "other"})


def test_local_chroma_refuses_a_sparse_index(function, tmp_path):
    # a folder of its own: Chroma keeps one ephemeral client per process, and other tests made it
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False)
    )
    with pytest.raises(InvalidArgumentError, match="not enabled in local"):
        client.create_collection("sparse-local", schema=_schema(function))


class RecordingServer:
    """What Chroma's Collection calls on its server, recorded instead of sent."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    def _add(self, **request: Any) -> bool:
        self.calls["add"] = request
        return True

    def _search(self, **request: Any) -> dict[str, Any]:
        self.calls["search"] = request
        return {"ids": [[]]}


def test_collection_add_and_hybrid_search_embed_through_the_functions(function, minilm_dir, minilm):
    server = RecordingServer()
    model = CollectionModel(
        id=uuid.uuid4(),
        name="hybrid",
        configuration_json={},
        serialized_schema=_schema(function).serialize_to_json(),
        metadata=None,
        dimension=None,
        tenant="default_tenant",
        database="default_database",
    )
    dense = FastembedNativeEmbeddingFunction(model_name=minilm_dir)
    collection = Collection(client=server, model=model, embedding_function=dense)  # type: ignore[arg-type]
    collection.add(ids=[str(i) for i in range(len(CORPUS))], documents=CORPUS)
    added = server.calls["add"]
    np.testing.assert_allclose(np.stack(added["embeddings"]), minilm.embed_passage(CORPUS), rtol=0, atol=1e-6)
    _same([m["splade"] for m in added["metadatas"]], function.model.embed_passage(CORPUS))

    query = "how is espresso coffee made"
    collection.search(
        Search().rank(
            Rrf([Knn(query=query, return_rank=True), Knn(key="splade", query=query, return_rank=True)])
        )
    )
    [sent] = server.calls["search"]["searches"]
    dense_knn, sparse_knn = sent._rank.ranks
    np.testing.assert_allclose(dense_knn.query, minilm.embed_query(query)[0], rtol=0, atol=1e-6)
    assert sparse_knn.key == "splade"
    _same([sparse_knn.query], function.model.embed_query([query]))
