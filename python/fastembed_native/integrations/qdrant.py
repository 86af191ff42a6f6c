"""Qdrant: a collection of named vectors filled and searched by this package's models, in qdrant-client's
local mode (``":memory:"`` or a folder; no server) or against any Qdrant client.

    from fastembed_native.integrations.qdrant import FastembedNativeQdrant

    docs = FastembedNativeQdrant(":memory:", "docs", model_name="BAAI/bge-small-en-v1.5",
                                 reranker="path/to/reranker")
    docs.create_collection()
    docs.add(["...", "..."], metadata=[{"source": "a"}, {"source": "b"}])
    for hit in docs.query("question", limit=5):
        print(hit.score, hit.payload["document"])

One :class:`FastembedNativeQdrant` owns one collection whose points carry one named vector per
encoder: the dense one (:class:`Dense`, a :class:`~fastembed_native.TextEmbedding`, named ``"dense"``)
and any sparse ones (:class:`Sparse`: any encoder whose ``embed_passage`` / ``embed_query`` give
objects with ``indices`` and ``values``, as a SPLADE ``SparseTextEmbedding`` or fastembed's sparse
models do), plus the text in the payload (``"document"``). Documents are embedded with the models'
passage prompts, queries with their query prompts.

``query`` asks Qdrant (``query_points``) for the ``candidates`` best by each named vector and fuses the
lists (reciprocal rank fusion, or DBSF) when there is more than one; with one vector it is a plain
nearest-neighbour search. With a reranker (a :class:`~fastembed_native.TextCrossEncoder`), the
candidates are then scored against the query and the ``limit`` best returned, best first, their
``score`` the reranker's. Hits are Qdrant's own ``ScoredPoint`` objects.

``model_name=`` and TextEmbedding's keywords (``threads``, ``batch_size``, ``cache_dir``, ...) choose the
dense model, or ``model=`` a loaded one; ``reranker=`` a reranker's name or directory, or a loaded
TextCrossEncoder. Needs ``pip install 'fastembed-native[qdrant]'`` (``qdrant-client``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    from qdrant_client import QdrantClient, models
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.qdrant needs qdrant-client ({exc}); "
        "install it with: pip install 'fastembed-native[qdrant]'"
    ) from exc

from ..cross_encoder import TextCrossEncoder
from ..text_embedding import TextEmbedding
from ._shared import cross_encoder, embedding_model

__all__ = ["DOCUMENT_KEY", "Dense", "FastembedNativeQdrant", "Sparse"]

#: The payload key the text of each point is stored under.
DOCUMENT_KEY = "document"


@dataclass(frozen=True)
class Dense:
    """A dense named vector from a :class:`~fastembed_native.TextEmbedding`."""

    model: TextEmbedding
    name: str = "dense"
    distance: models.Distance = models.Distance.COSINE

    def params(self) -> models.VectorParams:
        return models.VectorParams(size=self.model.dim, distance=self.distance)

    def documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.embed_passage(texts).tolist()

    def query(self, text: str) -> list[float]:
        return self.model.embed_query(text)[0].tolist()


def _sparse_vector(encoded: Any) -> models.SparseVector:
    return models.SparseVector(
        indices=[int(i) for i in encoded.indices], values=[float(v) for v in encoded.values]
    )


@dataclass(frozen=True)
class Sparse:
    """A sparse named vector from an encoder whose ``embed_passage(texts)`` and ``embed_query(texts)``
    give one object with ``indices`` and ``values`` per text (a SPLADE ``SparseTextEmbedding``).
    ``idf``: let Qdrant weight the query's terms by their inverse document frequency in the collection
    (for BM25-style term-count vectors; SPLADE weights are learned and need none)."""

    model: Any
    name: str = "sparse"
    idf: bool = False

    def params(self) -> models.SparseVectorParams:
        return models.SparseVectorParams(modifier=models.Modifier.IDF if self.idf else None)

    def documents(self, texts: list[str]) -> list[models.SparseVector]:
        return [_sparse_vector(e) for e in self.model.embed_passage(texts)]

    def query(self, text: str) -> models.SparseVector:
        [encoded] = list(self.model.embed_query([text]))
        return _sparse_vector(encoded)


class FastembedNativeQdrant:
    """A Qdrant collection of named dense (and sparse) vectors, with fused queries and reranking.

    Args:
        client: a ``QdrantClient``, or a location for a local-mode one: ``":memory:"`` or a folder.
        collection_name: the collection this object fills and searches.
        model_name: the dense model (a directory, an id, a short name; None for the default model).
        model: an already loaded TextEmbedding instead of model_name and its options.
        dense_name: the dense vector's name in the collection.
        distance: the dense vector's distance (cosine by default).
        sparse: sparse vectors too: a :class:`Sparse`, a list of them, or an encoder (named "sparse").
        reranker: a reranker's name or directory, or a loaded TextCrossEncoder, to rerank query results.
        fusion: how lists from several named vectors are merged: ``models.Fusion.RRF`` or ``DBSF``.
        **options: TextEmbedding's keywords (threads, batch_size, cache_dir, providers, ...).
    """

    def __init__(
        self,
        client: QdrantClient | str | os.PathLike[str],
        collection_name: str,
        model_name: str | os.PathLike[str] | None = None,
        *,
        model: TextEmbedding | None = None,
        dense_name: str = "dense",
        distance: models.Distance = models.Distance.COSINE,
        sparse: Sparse | Sequence[Sparse] | Any = None,
        reranker: str | os.PathLike[str] | TextCrossEncoder | None = None,
        fusion: models.Fusion = models.Fusion.RRF,
        **options: Any,
    ) -> None:
        if not isinstance(client, QdrantClient):
            location = os.fspath(client)
            client = QdrantClient(":memory:") if location == ":memory:" else QdrantClient(path=location)
        self.client = client
        self.collection_name = collection_name
        self.dense = Dense(embedding_model(model_name, options, model), dense_name, distance)
        if sparse is None:
            sparse_vectors: list[Sparse] = []
        elif isinstance(sparse, Sparse):
            sparse_vectors = [sparse]
        elif isinstance(sparse, Sequence):
            sparse_vectors = list(sparse)
        else:
            sparse_vectors = [Sparse(sparse)]
        self.sparse = sparse_vectors
        names = [self.dense.name, *(s.name for s in self.sparse)]
        if len(set(names)) != len(names):
            raise ValueError(f"named vectors must have different names, got {names}")
        if isinstance(reranker, TextCrossEncoder):
            self.reranker: TextCrossEncoder | None = cross_encoder(None, {}, reranker)
        else:
            self.reranker = cross_encoder(reranker, {}) if reranker is not None else None
        self.fusion = fusion

    @property
    def vector_names(self) -> list[str]:
        return [self.dense.name, *(s.name for s in self.sparse)]

    # -- the collection ---------------------------------------------------------------------------
    def create_collection(self, *, recreate: bool = False, **kwargs: Any) -> bool:
        """Create the collection with this object's named vectors; True when it made one.

        An existing collection is kept (``recreate=True`` deletes it first) if its vectors fit: a
        dense vector of another size or a missing name is an error, not a silent mismatch.
        ``kwargs`` go to ``QdrantClient.create_collection`` (``on_disk_payload``, ``hnsw_config``, ...).
        """
        exists = self.client.collection_exists(self.collection_name)
        if exists and recreate:
            self.client.delete_collection(self.collection_name)
        elif exists:
            self._check_existing()
            return False
        self.client.create_collection(
            self.collection_name,
            vectors_config={self.dense.name: self.dense.params()},
            sparse_vectors_config={s.name: s.params() for s in self.sparse} or None,
            **kwargs,
        )
        return True

    def _check_existing(self) -> None:
        params = self.client.get_collection(self.collection_name).config.params
        dense = params.vectors if isinstance(params.vectors, Mapping) else {}
        found = dense.get(self.dense.name)
        if found is None or found.size != self.dense.model.dim:
            raise ValueError(
                f"collection {self.collection_name!r} has dense vectors {dict(dense)}, not "
                f"{self.dense.name!r} of size {self.dense.model.dim}: recreate it or use another name"
            )
        missing = [s.name for s in self.sparse if s.name not in (params.sparse_vectors or {})]
        if missing:
            raise ValueError(f"collection {self.collection_name!r} has no sparse vectors named {missing}")

    # -- writing ----------------------------------------------------------------------------------
    def add(
        self,
        texts: Iterable[str],
        metadata: Iterable[Mapping[str, Any]] | None = None,
        ids: Iterable[int | str] | None = None,
        *,
        batch_size: int = 256,
    ) -> list[int | str]:
        """Embed ``texts`` (every named vector) and upsert them, ``batch_size`` points per request.

        Each point's payload is its metadata plus the text under ``"document"``; ids default to new
        UUIDs. Returns the ids in input order."""
        texts = list(texts)
        metas = [dict(m) for m in metadata] if metadata is not None else [{} for _ in texts]
        point_ids = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in texts]
        if not (len(texts) == len(metas) == len(point_ids)):
            raise ValueError(
                f"texts, metadata and ids differ in length: {len(texts)}, {len(metas)}, {len(point_ids)}"
            )
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            vectors: dict[str, list[Any]] = {self.dense.name: self.dense.documents(chunk)}
            for sparse in self.sparse:
                vectors[sparse.name] = sparse.documents(chunk)
            points = [
                models.PointStruct(
                    id=point_ids[start + i],
                    vector={name: column[i] for name, column in vectors.items()},
                    payload={**metas[start + i], DOCUMENT_KEY: text},
                )
                for i, text in enumerate(chunk)
            ]
            self.client.upsert(self.collection_name, points=points, wait=True)
        return point_ids

    # -- searching --------------------------------------------------------------------------------
    def query(
        self,
        text: str,
        *,
        limit: int = 10,
        candidates: int | None = None,
        query_filter: models.Filter | None = None,
        rerank: bool | None = None,
        using: Sequence[str] | None = None,
    ) -> list[models.ScoredPoint]:
        """The ``limit`` best points for ``text``, best first.

        Args:
            candidates: how many points each named vector contributes to the fusion and the reranker
                sees (default: ``max(limit, 50)`` with a reranker or fusion, else ``limit``).
            query_filter: a Qdrant filter on the payload, applied inside every search.
            rerank: rerank with the reranker (default: when there is one).
            using: the named vectors to search (default: all of this object's).
        """
        if limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit}")
        rerank = self.reranker is not None if rerank is None else rerank
        if rerank and self.reranker is None:
            raise ValueError("rerank=True needs a reranker (FastembedNativeQdrant(..., reranker=...))")
        heads = [self.dense, *self.sparse]
        if using is not None:
            unknown = set(using) - set(self.vector_names)
            if unknown:
                raise ValueError(
                    f"no named vectors {sorted(unknown)}; this collection has {self.vector_names}"
                )
            heads = [h for h in heads if h.name in using]
        fused = len(heads) > 1
        if candidates is None:
            candidates = max(limit, 50) if (rerank or fused) else limit
        first = candidates if rerank else limit
        if fused:
            points = self.client.query_points(
                self.collection_name,
                prefetch=[
                    models.Prefetch(query=h.query(text), using=h.name, limit=candidates, filter=query_filter)
                    for h in heads
                ],
                query=models.FusionQuery(fusion=self.fusion),
                limit=first,
                query_filter=query_filter,
                with_payload=True,
            ).points
        else:
            points = self.client.query_points(
                self.collection_name,
                query=heads[0].query(text),
                using=heads[0].name,
                limit=first,
                query_filter=query_filter,
                with_payload=True,
            ).points
        if not rerank or not points:
            return points[:limit]
        assert self.reranker is not None
        ranked = self.reranker.rank(text, [p.payload[DOCUMENT_KEY] for p in points], top_k=limit)
        return [points[h["corpus_id"]].model_copy(update={"score": h["score"]}) for h in ranked]
