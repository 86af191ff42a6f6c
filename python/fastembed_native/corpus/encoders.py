"""A model of any kind behind one call: texts in, :class:`~.rows.Rows` out.

What kind a model is comes from its files (:func:`model_kind`): a ColBERT model (pylate's
``model_type`` or modules) makes multi-vector rows, a SPLADE model (sentence-transformers'
``SparseEncoder`` or ``SpladePooling``) sparse rows, anything else dense rows. An id the registry
lists as a sparse or ColBERT model counts as one even where its files do not say (fastembed's
layout). BGE-M3 is dense here, as its files say (its Pooling), unless its ``outputs`` are asked for
(``fastembed-native embed --outputs dense,sparse,colbert``): then it runs as ``BGEM3`` and its rows
hold each output asked for, side by side, from one forward pass per batch (:class:`~.rows.M3Rows`).

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
from ..engine.m3 import M3Embedder, M3Output, is_m3_model
from ..engine.multivector import MultiVectorEmbedder, is_colbert
from ..engine.sparse import SparseEmbedder, is_sparse_model
from ..engine.stream import Drivers, Progress, embed_window
from ..engine.tokens import check_utf8
from .rows import KIND_NAMES, M3_OUTPUTS, DenseRows, M3Rows, MultiVectorRows, Rows, SparseRows, m3_kind

Model = Embedder | SparseEmbedder | MultiVectorEmbedder | M3Embedder


def check_outputs(outputs: str | Sequence[str]) -> tuple[str, ...]:
    """BGE-M3 outputs (a comma-separated string or names of :data:`~.rows.M3_OUTPUTS`), in the
    order their columns are written.

    Raises:
        ValueError: none, or a name that is not one of them (the message lists them).
    """
    names = [o.strip() for o in outputs.split(",")] if isinstance(outputs, str) else list(outputs)
    unknown = [o for o in names if o not in M3_OUTPUTS]
    if unknown or not names:
        got = ", ".join(map(repr, unknown)) if unknown else "none"
        raise ValueError(
            f"BGE-M3's outputs are {', '.join(M3_OUTPUTS)} (comma-separated, e.g. dense,sparse,colbert); got {got}"
        )
    return tuple(o for o in M3_OUTPUTS if o in names)


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
        model: a ``TextEmbedding`` (or any engine ``Embedder``), a ``SparseTextEmbedding``, a
            ``LateInteractionTextEmbedding`` or a ``BGEM3``.
        query: encode texts as queries (see the module docstring).
        outputs: a ``BGEM3``'s outputs to write (:func:`check_outputs`; default dense). Its dense
            output alone makes dense rows, as the model as a ``TextEmbedding`` does.

    Raises:
        ValueError: ``outputs`` of a model that is not a ``BGEM3``, or not BGE-M3's outputs.
    """

    def __init__(
        self, model: Model, *, query: bool = False, outputs: str | Sequence[str] | None = None
    ) -> None:
        self.outputs: tuple[str, ...] = ()
        if isinstance(model, M3Embedder):
            self.outputs = check_outputs("dense" if outputs is None else outputs)
            self.kind = "dense" if self.outputs == ("dense",) else m3_kind(self.outputs)
            self.engine = model.engine
        elif outputs is not None:
            raise ValueError(f"outputs are BGE-M3's (a BGEM3 model), not a {type(model).__name__}'s")
        elif isinstance(model, SparseEmbedder):
            self.kind, self.engine = "sparse", model.engine
        elif isinstance(model, MultiVectorEmbedder):
            self.kind, self.engine = "multi-vector", model.engine
        elif isinstance(model, Embedder):
            self.kind, self.engine = "dense", model
        else:
            raise TypeError(
                "expected a TextEmbedding, SparseTextEmbedding, LateInteractionTextEmbedding or BGEM3, "
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
        outputs: str | Sequence[str] | None = None,
        **options: Any,
    ) -> Encoder:
        """Load ``source`` (a directory, a model id, None for the default model) with the class its
        files call for; ``options`` are the engine's (threads, batch_size, providers, ...).
        ``outputs``: a BGE-M3 model's outputs to write (:func:`check_outputs`), loaded as ``BGEM3``.

        Raises:
            ValueError: an option the model's kind does not take (``max_length`` of a ColBERT model,
                whose lengths are its config's; ``outputs`` of a model that is not BGE-M3), naming it.
        """
        from ..bge_m3 import BGEM3
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
        if outputs is not None:
            check_outputs(outputs)
            if not is_m3_model(resolve_model(source)):
                raise ValueError(
                    f"outputs are BGE-M3's: {source} is not a BGE-M3 model (it has no colbert_linear.pt "
                    "and sparse_linear.pt)"
                )
            return cls(BGEM3(source, **options), query=query, outputs=outputs)
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
        if isinstance(self.model, M3Embedder) and self.kind != "dense":
            what = {
                "dense": f"dense {self.dim} dims",
                "sparse": f"sparse over a {self.model.vocab_size}-word vocabulary",
                "colbert": f"colbert {self.model.colbert_dim} dims per token",
            }
            return "BGE-M3 " + ", ".join(what[o] for o in self.outputs)
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
        if isinstance(self.model, M3Embedder):
            return self._embed_m3(texts, prompt, size, first_index, progress)
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

    def _embed_m3(
        self, texts: Sequence[str], prompt: str, size: int, first_index: int, progress: Progress | None
    ) -> Rows:
        """BGE-M3's outputs asked for, as ``BGEM3.embed`` gives them (its tokenize-and-sort windows,
        its batches, one forward pass each), stepping through each window's batches with
        ``progress``."""
        head = self.model
        assert isinstance(head, M3Embedder)
        items = [prompt + text for text in texts] if prompt else list(texts)
        out = _m3_output(self.outputs, len(items), self.dim)
        with Drivers(self.engine) as drivers:
            for start in range(0, len(items), TOKENIZE_WINDOW):
                encodings = head.engine.tokenizer.encode(
                    items[start : start + TOKENIZE_WINDOW], first_index + start
                )
                if progress is None:
                    head.embed_encodings(encodings, out, size, start=start)
                    continue

                def embed_group(rows: np.ndarray, encodings: Any = encodings, start: int = start) -> None:
                    part = _m3_output(self.outputs, len(rows), self.dim)
                    head.embed_encodings([encodings[i] for i in rows], part, size)
                    if out.dense is not None and part.dense is not None:
                        out.dense[start + rows] = part.dense
                    for mine, theirs in ((out.sparse, part.sparse), (out.colbert, part.colbert)):
                        if mine is not None and theirs is not None:
                            for i, row in enumerate(rows):
                                mine[start + int(row)] = theirs[i]

                drivers.run_in_steps(encodings, size, head.engine.token_budget(size), embed_group, progress)
        parts: dict[str, Rows] = {}
        if out.dense is not None:
            parts["dense"] = DenseRows(out.dense)
        if out.sparse is not None:
            parts["sparse"] = SparseRows(out.sparse)
        if out.colbert is not None:
            parts["colbert"] = MultiVectorRows(out.colbert, head.colbert_dim)
        return parts["dense"] if self.kind == "dense" else M3Rows(parts)

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


def _m3_output(outputs: Sequence[str], n: int, dim: int) -> M3Output:
    """Room for ``n`` texts' rows of the BGE-M3 ``outputs`` asked for (None for the others)."""
    return M3Output(
        np.empty((n, dim), dtype=np.float32) if "dense" in outputs else None,
        [None] * n if "sparse" in outputs else None,
        [None] * n if "colbert" in outputs else None,
    )
