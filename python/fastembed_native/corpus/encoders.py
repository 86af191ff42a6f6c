"""A model of any kind behind one call: texts in, :class:`~.rows.Rows` out.

What kind a model is comes from its files (:func:`model_kind`): a ColBERT model (pylate's
``model_type`` or modules) makes multi-vector rows, a SPLADE model (sentence-transformers'
``SparseEncoder`` or ``SpladePooling``) sparse rows, anything else dense rows. An id the registry
lists as a sparse or ColBERT model counts as one even where its files do not say (fastembed's
layout). BGE-M3 is dense here, as its files say (its Pooling); its other outputs are ``BGEM3``'s.

:class:`Encoder` embeds a few thousand texts exactly as the model's own ``embed`` would (the same
tokenize-and-sort windows, the same batches, the same sessions), calling ``progress`` every few
batches: the dense path is the engine's :func:`~..engine.stream.embed_window`, the other heads
step through :meth:`~..engine.stream.Drivers.run_in_steps` with their own token budget.

``query`` selects the model's query side: a ColBERT model's query marker and [MASK] expansion, an
inference-free sparse model's static weights (no model run), else the model's "query" prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.embedder import TOKENIZE_WINDOW, Embedder, check_positive
from ..engine.multivector import MultiVectorEmbedder, is_colbert
from ..engine.sparse import SparseEmbedder, is_sparse_model
from ..engine.stream import Drivers, Progress, embed_window
from ..engine.tokens import check_utf8
from .rows import KIND_NAMES, DenseRows, MultiVectorRows, Rows, SparseRows

Model = Embedder | SparseEmbedder | MultiVectorEmbedder


def model_kind(model_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> str:
    """ "dense", "sparse" or "multi-vector": what the model in ``model_dir`` makes, from its files
    (or, where they do not say, from the registry entry of ``source``, the id it was resolved from)."""
    if is_colbert(model_dir):
        return "multi-vector"
    if is_sparse_model(model_dir):
        return "sparse"
    if source is not None:
        from ..models.registry import (
            SUPPORTED_LATE_INTERACTION_MODELS,
            SUPPORTED_SPARSE_MODELS,
            canonical_model_name,
        )

        name = canonical_model_name(os.fspath(source))
        if any(m.model == name for m in SUPPORTED_SPARSE_MODELS):
            return "sparse"
        if any(m.model == name and "bge-m3" not in name.lower() for m in SUPPORTED_LATE_INTERACTION_MODELS):
            return "multi-vector"
    return "dense"


class Encoder:
    """A loaded model of any kind, embedding lists of texts into :class:`Rows`.

    Args:
        model: a ``TextEmbedding`` (or any engine ``Embedder``), a ``SparseTextEmbedding`` or a
            ``LateInteractionTextEmbedding``.
        query: encode texts as queries (see the module docstring).
    """

    def __init__(self, model: Model, *, query: bool = False) -> None:
        if isinstance(model, SparseEmbedder):
            self.kind, self.engine = "sparse", model.engine
        elif isinstance(model, MultiVectorEmbedder):
            self.kind, self.engine = "multi-vector", model.engine
        elif isinstance(model, Embedder):
            self.kind, self.engine = "dense", model
        else:
            raise TypeError(
                "expected a TextEmbedding, SparseTextEmbedding or LateInteractionTextEmbedding, "
                f"not {type(model).__name__}"
            )
        self.model = model
        self.query = query

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | None = None,
        *,
        query: bool = False,
        kind: str | None = None,
        **options: Any,
    ) -> Encoder:
        """Load ``source`` (a directory, a model id, None for the default model) with the class its
        files call for; ``options`` are the engine's (threads, batch_size, providers, ...).

        Raises:
            ValueError: an option the model's kind does not take (``max_length`` of a ColBERT model,
                whose lengths are its config's), naming it.
        """
        from ..late_interaction import LateInteractionTextEmbedding
        from ..models import resolve_model
        from ..sparse_text_embedding import SparseTextEmbedding
        from ..text_embedding import TextEmbedding

        if kind is None:
            kind = model_kind(resolve_model(source), source)
        if kind == "multi-vector" and options.get("max_length") is not None:
            raise ValueError(
                "a multi-vector (ColBERT) model takes no max_length: its query_length and "
                "document_length come from its config_sentence_transformers.json"
            )
        options = {k: v for k, v in options.items() if not (k == "max_length" and v is None)}
        model: Model
        if kind == "sparse":
            model = SparseTextEmbedding(source, **options)
        elif kind == "multi-vector":
            model = LateInteractionTextEmbedding(source, **options)
        else:  # by its source, not its directory: the registry adds what only it knows (prompts)
            model = TextEmbedding(source, **options)
        return cls(model, query=query)

    @property
    def dim(self) -> int:
        """The dense width, the sparse vectors' width (the vocabulary) or each token vector's width."""
        return self.engine.dim

    @property
    def prompts(self) -> dict[str, str]:
        """The model's named prompts (none for a ColBERT model, whose markers are its config's)."""
        return {} if self.kind == "multi-vector" else dict(self.engine.prompts)

    def describe(self) -> str:
        """What one row holds, for messages: "384 dims", "sparse over 30522 words", ..."""
        if self.kind == "sparse":
            return f"sparse over a {self.dim}-word vocabulary"
        if self.kind == "multi-vector":
            return f"multi-vector, {self.dim} dims per token"
        return f"{self.dim} dims"

    def check_prompt(self, prompt: str) -> str:
        """The prompt texts get: ``prompt``, else the query prompt when encoding queries.

        Raises:
            ValueError: a prompt for a ColBERT model (its markers are its config's).
        """
        if prompt and self.kind == "multi-vector":
            raise ValueError(
                f"{KIND_NAMES['multi-vector']} takes no prompt: its query and document markers come "
                "from its config; encode queries with the query side instead"
            )
        if not prompt and self.query:
            return self.prompts.get("query", "")
        return prompt

    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        prompt: str = "",
        progress: Progress | None = None,
        first_index: int = 0,
    ) -> Rows:
        """One row per text, equal to the model's own ``embed`` (``query_embed`` with ``query``).

        ``first_index`` is the texts' position in a longer stream, for error messages; ``progress``
        is called with a number of texts every few batches.
        """
        prompt = self.check_prompt(prompt)
        size = self.engine.batch_size if batch_size is None else batch_size
        check_positive(size)
        if self.kind == "dense":
            vectors = embed_window(
                self.engine, texts, batch_size=size, prompt=prompt, progress=progress, first_index=first_index
            )
            return DenseRows(vectors)
        items = [prompt + text for text in texts] if prompt else list(texts)
        out: list[Any] = [None] * len(items)
        with Drivers(self.engine) as drivers:
            for start in range(0, len(items), TOKENIZE_WINDOW):
                part = items[start : start + TOKENIZE_WINDOW]
                self._embed_part(part, out, start, size, first_index + start, drivers, progress)
        if self.kind == "sparse":
            return SparseRows(out)
        return MultiVectorRows(out, self.dim)

    def _embed_part(
        self,
        texts: list[str],
        out: list[Any],
        start: int,
        size: int,
        first_index: int,
        drivers: Drivers,
        progress: Progress | None,
    ) -> None:
        """Embed one tokenize-and-sort window into ``out[start:]``, as the head's ``embed`` does."""
        head = self.model
        if isinstance(head, SparseEmbedder):
            active = head.max_active_dims or 0
            if self.query and head.static_query is not None:  # inference-free: a lookup, no model run
                check_utf8(texts, first_index)
                out[start : start + len(texts)] = head.static_query.embed(texts, active)
                if progress is not None:
                    progress(len(texts))
                return
            encodings: Any = head.engine.tokenizer.encode(texts, first_index)

            def embed_group(rows: np.ndarray) -> None:
                got: list[Any] = [None] * len(rows)
                head.embed_encodings([encodings[i] for i in rows], got, size, max_active_dims=active)
                for i, row in enumerate(rows):
                    out[start + int(row)] = got[i]

            if progress is None:
                head.embed_encodings(encodings, out, size, start=start, max_active_dims=active)
            else:
                drivers.run_in_steps(encodings, size, head.token_budget(size), embed_group, progress)
            return
        assert isinstance(head, MultiVectorEmbedder)
        query = self.query
        encodings = head.encode(texts, is_query=query, offset=first_index)

        def embed_tokens(rows: np.ndarray) -> None:
            got: list[Any] = [None] * len(rows)
            head.embed_encodings([encodings[i] for i in rows], got, size, is_query=query)
            for i, row in enumerate(rows):
                out[start + int(row)] = got[i]

        if progress is None:
            head.embed_encodings(encodings, out, size, start=start, is_query=query)
        else:
            drivers.run_in_steps(encodings, size, head.token_budget(size), embed_tokens, progress)
