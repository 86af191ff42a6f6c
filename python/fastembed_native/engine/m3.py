"""BGE-M3's three outputs from one forward pass: dense, sparse and multi-vector.

The exported graph (``fastembed-native export`` of a BGE-M3 checkpoint, see models/bge_m3.py) gives
three outputs per batch: the encoder's token states, one sparse weight per token
(relu(sparse_linear(h))) and one ColBERT vector per token (colbert_linear(h)). Each is turned into
its answer by the C++ kernel the other heads use, as FlagEmbedding's ``BGEM3FlagModel`` does:

- dense: the [CLS] state, L2-normalised (``_core.pool``, mode cls);
- sparse: per vocabulary id, its largest weight over the text's tokens; [CLS], [EOS], [PAD] and
  [UNK] and weights <= 0 left out (``_core.token_weights``);
- multi-vector: every real token after [CLS] (the final [EOS] included), L2-normalised
  (``_core.pack_tokens``).

Outputs that are not asked for are not fetched from ONNX Runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from .embedder import TOKENIZE_WINDOW, Embedder
from .sparse import SparseEmbedding

#: The graph's outputs (models/bge_m3.py writes them).
DENSE_OUTPUT = "last_hidden_state"
SPARSE_OUTPUT = "sparse_weights"
COLBERT_OUTPUT = "colbert_vectors"


@dataclass(frozen=True)
class M3Output:
    """What :meth:`M3Embedder.embed` computed, in input order; None for an output not asked for.
    (:meth:`M3Embedder.embed_encodings` fills one: its fields not None say what to compute.)"""

    dense: np.ndarray | None  # float32 (n, dim), unit rows
    sparse: list[SparseEmbedding] | None  # FlagEmbedding's lexical weights
    colbert: list[np.ndarray] | None  # float32 (tokens, dim) per text, unit rows


#: The head weights BGE-M3's repository ships beside the encoder (``export`` keeps them in the
#: exported directory, where they mark it as BGE-M3; the graph already holds them).
HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")


def is_m3_model(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` is a BGE-M3 checkpoint or export: it has BGE-M3's two head files."""
    return all((Path(model_dir) / name).is_file() for name in HEAD_FILES)


class M3Embedder:
    """BGE-M3 on the shared engine: texts in, dense + sparse + multi-vector out of one Run per batch.

    Args:
        model_dir: an exported BGE-M3 directory (``onnx/model.onnx`` with outputs
            ``last_hidden_state``, ``sparse_weights``, ``colbert_vectors``, and ``tokenizer.json``).
        **options: the engine's options (providers, max_length, batch_size, max_batch_tokens,
            threads, parallel_runs, onnx_file, lazy_load, ...): see :class:`Embedder`.
    """

    def __init__(self, model_dir: str | os.PathLike[str], **options: Any):
        for name in ("pooling", "normalize", "include_prompt", "task"):
            if name in options:
                raise TypeError(f"{type(self).__name__}() has no {name!r} option: BGE-M3's heads are fixed")
        self.engine = Embedder(model_dir, normalize=False, task="multi-vector", **options)
        outputs = set(self.engine._session.output_names)
        missing = {DENSE_OUTPUT, SPARSE_OUTPUT, COLBERT_OUTPUT} - outputs
        if missing:
            raise ValueError(
                f"{self.engine.config.onnx_path} lacks the outputs {', '.join(sorted(missing))}: it is not a "
                "BGE-M3 export (make one with `fastembed-native export` from a checkpoint with "
                "colbert_linear.pt and sparse_linear.pt)"
            )
        tokenizer = self.engine.tokenizer.tokenizer
        specials = ("<s>", "</s>", "<pad>", "<unk>")  # FlagEmbedding's unused_tokens: cls, eos, pad, unk
        self.dropped_ids = sorted({i for t in specials if (i := tokenizer.token_to_id(t)) is not None})

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.engine.model_dir)!r}, max_length={self.max_length}, "
            f"providers={self.engine.providers})"
        )

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        dense: bool = True,
        sparse: bool = True,
        colbert: bool = True,
        parallel: int | None = None,
    ) -> M3Output:
        """The outputs asked for, of every text, in input order (one forward pass per batch).

        Raises:
            TypeError: ``texts`` or an item is not a string (the message names the index).
            ValueError: nothing asked for, a bad ``batch_size`` or ``parallel``.
        """
        if not (dense or sparse or colbert):
            raise ValueError("ask for at least one of dense, sparse, colbert")
        items, size, runs = self.engine.call_arguments(texts, batch_size, parallel)
        n = len(items)
        out = M3Output(
            np.zeros((n, self.engine.dim), dtype=np.float32) if dense else None,
            [None] * n if sparse else None,
            [None] * n if colbert else None,
        )
        for start in range(0, n, TOKENIZE_WINDOW):
            encodings = self.engine.tokenizer.encode(items[start : start + TOKENIZE_WINDOW], start)
            self.embed_encodings(encodings, out, size, start=start, parallel_runs=runs)
        return out

    @property
    def colbert_dim(self) -> int:
        """Width of each multi-vector row: the encoder's (``colbert_linear`` maps the hidden size to
        itself, as BGE-M3 ships it and the graph's ``colbert_vectors`` output says)."""
        return self.engine.dim

    @property
    def vocab_size(self) -> int:
        """Width of the sparse vectors: the vocabulary (their indices are token ids)."""
        return self.engine.config.vocab_size or self.engine.tokenizer.tokenizer.get_vocab_size()

    def embed_encodings(
        self,
        encodings: Sequence[Any],
        out: M3Output,
        batch_size: int,
        *,
        start: int = 0,
        normalize: bool = True,
        parallel_runs: int | None = None,
    ) -> None:
        """Embed already tokenized texts (the engine tokenizer's encodings, [CLS] ... [EOS]) into
        ``out`` at ``start + i``, one forward pass per batch: the outputs ``out`` has (fields not
        None: ``dense`` a float32 ``(rows, dim)`` array, ``sparse`` and ``colbert`` lists) are
        computed, the others not fetched. ``normalize`` False leaves the dense rows as the [CLS]
        states (the server normalises per request, after ``dimensions``)."""
        names = [
            name
            for name, field in (
                (DENSE_OUTPUT, out.dense),
                (SPARSE_OUTPUT, out.sparse),
                (COLBERT_OUTPUT, out.colbert),
            )
            if field is not None
        ]
        if not names:
            raise ValueError("ask for at least one of dense, sparse, colbert")
        engine = self.engine
        dense_out, sparse_out, colbert_out = out.dense, out.sparse, out.colbert

        def run_batch(session: _core.Session, rows: np.ndarray) -> None:
            ids, mask, types = engine.pad(encodings, rows)
            results = dict(
                zip(names, session.run(ids, mask, types, names, engine.config.vocab_size or 0), strict=True)
            )
            if dense_out is not None:
                dense_out[start + rows] = _core.pool(results[DENSE_OUTPUT], mask, "cls", normalize)
            if sparse_out is not None:
                offsets, indices, values = _core.token_weights(
                    results[SPARSE_OUTPUT], ids, mask, self.dropped_ids
                )
                for r, row in enumerate(rows):
                    a, b = offsets[r], offsets[r + 1]
                    sparse_out[start + int(row)] = SparseEmbedding(indices[a:b], values[a:b])
            if colbert_out is not None:
                keep = mask.astype(bool)
                keep[:, 0] = False  # every token after [CLS]
                vectors, offsets = _core.pack_tokens(results[COLBERT_OUTPUT], keep, True)
                for r, row in enumerate(rows):
                    colbert_out[start + int(row)] = vectors[offsets[r] : offsets[r + 1]]

        engine.run_batches(encodings, batch_size, run_batch, parallel_runs=parallel_runs)
