"""LanceDB: a registered embedding function a table schema names, and a reranker for its searches.

    import lancedb
    from lancedb.embeddings import get_registry
    from lancedb.pydantic import LanceModel, Vector
    from fastembed_native.integrations import lancedb as _  # registers "fastembed-native"
    from fastembed_native.integrations.lancedb import FastembedNativeReranker

    embed = get_registry().get("fastembed-native").create(model_name="BAAI/bge-small-en-v1.5")

    class Doc(LanceModel):
        text: str = embed.SourceField()
        vector: Vector(embed.ndims()) = embed.VectorField()

    table = lancedb.connect("lance/").create_table("docs", schema=Doc)
    table.add([{"text": "..."}, {"text": "..."}])              # embedded on the way in
    table.search("question").rerank(FastembedNativeReranker(model_name="path/to/reranker")).limit(5).to_pydantic(Doc)

- :class:`FastembedNativeLanceEmbeddings` is registered as ``"fastembed-native"``: LanceDB embeds the
  source column of added rows with the model's passage prompt and a search string with its query
  prompt (``compute_source_embeddings`` / ``compute_query_embeddings``), so the vectors are
  ``TextEmbedding.embed_passage`` / ``embed_query``'s. The table stores the arguments given to
  ``create`` and rebuilds the function from them when it is opened again (in any process that has
  imported this module); they must be JSON values (a path as a string). Retries are off by default
  (``max_retries=0``): LanceDB retries failed API calls with backoff, but a local model that failed
  once fails again.
- :class:`FastembedNativeReranker` (``lancedb.rerankers.Reranker``): vector, full-text and hybrid
  results scored by a :class:`~fastembed_native.TextCrossEncoder` on ``column`` against the query,
  in ``_relevance_score``, best first, as LanceDB's ``CrossEncoderReranker`` (without torch).

Both take ``model_name=`` and TextEmbedding's / TextCrossEncoder's keywords (``threads``, ``batch_size``,
``cache_dir``, ...). Needs ``pip install 'fastembed-native[lancedb]'``.
"""

from __future__ import annotations

import json
import os
from typing import Any

try:
    import pyarrow as pa
    from lancedb.embeddings import TextEmbeddingFunction, register
    from lancedb.rerankers import Reranker
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.lancedb needs lancedb ({exc}); "
        "install it with: pip install 'fastembed-native[lancedb]'"
    ) from exc

from ..cross_encoder import TextCrossEncoder
from ..text_embedding import TextEmbedding
from ._shared import cross_encoder, embedding_model, model_label

__all__ = ["NAME", "FastembedNativeLanceEmbeddings", "FastembedNativeReranker"]

#: The name in LanceDB's embedding registry, stored in a table's schema metadata.
NAME = "fastembed-native"


@register(NAME)
class FastembedNativeLanceEmbeddings(TextEmbeddingFunction):
    """LanceDB embeddings from a :class:`~fastembed_native.TextEmbedding`; make it with
    ``get_registry().get("fastembed-native").create(model_name=..., **options)``.

    Fields: ``model_name`` (None: the default model), ``options`` (TextEmbedding's keywords; any other
    keyword given to ``create`` lands here), ``max_retries`` (LanceDB's; 0 here).
    """

    model_config = ConfigDict(protected_namespaces=())

    model_name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = 0
    _model: TextEmbedding = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        known = {k: v for k, v in kwargs.items() if k in type(self).model_fields}
        extra = {k: v for k, v in kwargs.items() if k not in known}
        if isinstance(known.get("model_name"), os.PathLike):
            known["model_name"] = os.fspath(known["model_name"])
        super().__init__(**known, options={**known.pop("options", {}), **extra})
        self._model = embedding_model(self.model_name, self.options)

    @classmethod
    def create(cls, **kwargs: Any) -> FastembedNativeLanceEmbeddings:
        """LanceDB's constructor (it stores these arguments with a table); paths become strings."""
        return super().create(
            **{k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in kwargs.items()}
        )

    @property
    def model(self) -> TextEmbedding:
        return self._model

    def ndims(self) -> int:
        return self._model.dim

    def generate_embeddings(self, texts: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """Passages' vectors (the model's passage prompt)."""
        return list(self._model.embed_passage(list(texts)))

    def compute_query_embeddings(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        """A search string's vector (the model's query prompt)."""
        return list(self._model.embed_query([query]))

    def __hash__(self) -> int:  # LanceDB hashes functions; the options dict cannot be hashed as is
        return hash(
            (type(self).__name__, self.model_name, json.dumps(self.options, sort_keys=True, default=repr))
        )


class FastembedNativeReranker(Reranker):
    """Reranks LanceDB search results with a :class:`~fastembed_native.TextCrossEncoder`.

    Args:
        model_name: a reranker directory, id or short name.
        column: the text column scored against the query.
        return_score: "relevance" (only ``_relevance_score``) or "all" (the search's scores too).
        model: an already loaded TextCrossEncoder instead of model_name.
        **options: TextCrossEncoder's keywords (activation, threads, batch_size, ...).
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        column: str = "text",
        return_score: str = "relevance",
        model: TextCrossEncoder | None = None,
        **options: Any,
    ) -> None:
        super().__init__(return_score)
        self.model = cross_encoder(model_name, options, model)
        self.model_name = model_label(model_name, self.model)
        self.column = column

    def __str__(self) -> str:
        return f"FastembedNativeReranker(model_name={self.model_name})"

    def _rerank(self, results: pa.Table, query: str) -> pa.Table:
        results = self._handle_empty_results(results)
        if len(results) == 0:
            return results
        scores = self.model.rerank(query, results[self.column].to_pylist())
        return results.append_column("_relevance_score", pa.array(scores, type=pa.float32()))

    def rerank_vector(self, query: str, vector_results: pa.Table) -> pa.Table:
        results = self._rerank(vector_results, query)
        if self.score == "relevance" and "_distance" in results.column_names:
            results = results.drop_columns(["_distance"])
        return results.sort_by([("_relevance_score", "descending")])

    def rerank_fts(self, query: str, fts_results: pa.Table) -> pa.Table:
        results = self._rerank(fts_results, query)
        if self.score == "relevance" and "_score" in results.column_names:
            results = results.drop_columns(["_score"])
        return results.sort_by([("_relevance_score", "descending")])

    def rerank_hybrid(self, query: str, vector_results: pa.Table, fts_results: pa.Table) -> pa.Table:
        if self.score == "all":
            combined = self._merge_and_keep_scores(vector_results, fts_results)
        else:
            combined = self.merge_results(vector_results, fts_results)
        combined = self._keep_relevance_score(self._rerank(combined, query))
        return combined.sort_by([("_relevance_score", "descending")])
