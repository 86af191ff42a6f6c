"""The score head: a sequence-classification model's logits -> relevance scores (cross-encoders).

The engine is the embeddings' own: pairs are tokenized as the model's tokenizer tokenizes pairs
(:meth:`TextTokenizer.encode_pairs`), sorted by length into token-budget batches, run in parallel
sessions by the C++ core with the GIL released, and the graph's one 2-D output (``logits``,
``(pairs, labels)``) is written straight into the rows of one result array (the core's pooled-output
path, with no normalisation). What this head adds is what sentence-transformers' ``CrossEncoder``
does to those logits: its activation, read from the model's files as sentence-transformers 5.7 reads
it, and the labels of a classifier.

Which convention peers use: sentence-transformers' ``CrossEncoder.predict`` applies the model's
activation (Sigmoid for one label unless the files say otherwise), as :meth:`Scorer.score` does;
fastembed's ``TextCrossEncoder.rerank`` and TEI's ``/rerank`` with ``raw_scores: true`` return the
logits, which ``raw_scores=True`` gives here; infinity and TEI's default return the sigmoid.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import _optional_json
from .embedder import TOKENIZE_WINDOW, Embedder, check_positive

#: An LLM reranker's prompt frame (written by ``export`` beside the graph; see models/llm_reranker.py):
#: prefix, template with {instruction} {query} {document}, suffix, default instruction, max_length.
PROMPT_FILE = "reranker_prompt.json"

#: Activations sentence-transformers may name (by their dotted torch paths, any generation), and
#: the function each is here. Anything else is refused by name: guessing would change every score.
ACTIVATIONS = {
    "Sigmoid": "sigmoid",
    "Identity": "identity",
    "Tanh": "tanh",
    "Softmax": "softmax",
}


@dataclass(frozen=True)
class ScoreConfig:
    """What a cross-encoder's files say about turning its logits into scores."""

    activation: str  # one of ACTIVATIONS' values
    labels: tuple[str, ...]  # one name per logit, from config.json's id2label
    source: str  # where the activation came from, for inspect and messages


def read_score_config(model_dir: str | os.PathLike[str]) -> ScoreConfig:
    """The activation and labels of the cross-encoder in ``model_dir``, read as sentence-transformers
    5.7 reads them: ``config_sentence_transformers.json``'s ``activation_fn`` (5.7+), else
    ``config.json``'s ``sentence_transformers.activation_fn`` (4.x), else its
    ``sbert_ce_default_activation_function`` (before 4), else Sigmoid for one label and Identity
    for several.

    Raises:
        ValueError: the files name an activation this package does not know.
    """
    model_dir = Path(model_dir)
    hf_config = _optional_json(model_dir / "config.json")
    st_config = _optional_json(model_dir / "config_sentence_transformers.json")
    id2label = hf_config.get("id2label") or {}
    if isinstance(id2label, dict) and id2label:
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    else:
        labels = tuple(f"LABEL_{i}" for i in range(int(hf_config.get("num_labels", 1))))
    candidates = [
        ("config_sentence_transformers.json activation_fn", st_config.get("activation_fn")),
        (
            "config.json sentence_transformers.activation_fn",
            (hf_config.get("sentence_transformers") or {}).get("activation_fn"),
        ),
        (
            "config.json sbert_ce_default_activation_function",
            hf_config.get("sbert_ce_default_activation_function"),
        ),
    ]
    for source, path in candidates:
        if path:
            name = str(path).rsplit(".", 1)[-1]
            if name not in ACTIVATIONS:
                raise ValueError(
                    f"{model_dir}: {source} is {path!r}; supported: {', '.join(ACTIVATIONS)} (torch.nn)"
                )
            return ScoreConfig(ACTIVATIONS[name], labels, source)
    default = "sigmoid" if len(labels) == 1 else "identity"
    return ScoreConfig(default, labels, f"default for {len(labels)} label(s)")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``activation`` applied to float32 ``logits`` of shape ``(n, labels)``, in place; returned."""
    if activation == "sigmoid":
        # 1 / (1 + exp(-x)) without overflow warnings for large |x|.
        np.negative(logits, out=logits)
        np.exp(logits, out=logits)
        logits += 1
        np.reciprocal(logits, out=logits)
    elif activation == "tanh":
        np.tanh(logits, out=logits)
    elif activation == "softmax":
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
    elif activation != "identity":
        raise ValueError(f"unknown activation {activation!r}")
    return logits


class Scorer:
    """A cross-encoder on the shared engine: (query, document) pairs in, scores out.

    Args:
        model_dir: a model directory with a sequence-classification ONNX graph (output ``logits``,
            ``(batch, labels)``) and its ``tokenizer.json``; exported by ``fastembed-native export``.
        activation: override the activation the files name: "sigmoid", "identity", "tanh" or
            "softmax" (see :func:`read_score_config`).
        **options: the engine's options (providers, max_length, batch_size, max_batch_tokens,
            threads, parallel_runs, onnx_file, lazy_load, ...): see :class:`Embedder`.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, activation: str | None = None, **options: Any):
        for name in ("pooling", "normalize", "prompts", "include_prompt", "task"):
            if name in options:
                raise TypeError(
                    f"{type(self).__name__}() has no {name!r} option: a cross-encoder scores pairs"
                )
        self.score_config = read_score_config(model_dir)
        if activation is not None and activation not in ACTIVATIONS.values():
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS.values())}, got {activation!r}"
            )
        self.activation = activation or self.score_config.activation
        self.engine = Embedder(model_dir, normalize=False, task="sequence-classification", **options)
        #: An LLM reranker's prompt frame, or None for a cross-encoder (pairs tokenized as pairs).
        self.prompt: dict[str, Any] | None = _optional_json(Path(model_dir) / PROMPT_FILE) or None
        self._frame: tuple[list[int], list[int]] | None = None
        if self.prompt is not None:
            tokens = self.engine.tokenizer.tokenizer
            self._frame = (
                tokens.encode(self.prompt["prefix"], add_special_tokens=False).ids,
                tokens.encode(self.prompt["suffix"], add_special_tokens=False).ids,
            )
        if self.engine.pooling != "pooled":
            raise ValueError(
                f"{self.engine.config.onnx_path} outputs token vectors, not one row of logits per "
                "pair: it is an embedding model (load it with TextEmbedding)"
            )
        if self.engine.dim != len(self.score_config.labels):
            warnings.warn(
                f"{model_dir}: the graph gives {self.engine.dim} logits per pair but config.json names "
                f"{len(self.score_config.labels)} labels; the labels are numbered instead",
                RuntimeWarning,
                stacklevel=2,
            )
            self.score_config = ScoreConfig(
                self.score_config.activation,
                tuple(f"LABEL_{i}" for i in range(self.engine.dim)),
                self.score_config.source,
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """One name per logit (``("LABEL_0",)`` for a reranker)."""
        return self.score_config.labels

    @property
    def max_length(self) -> int:
        """Tokens per pair, special tokens included; longer pairs are cut longest-first."""
        return self.engine.max_length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.engine.model_dir)!r}, labels={len(self.labels)}, "
            f"activation={self.activation!r}, max_length={self.max_length}, providers={self.engine.providers})"
        )

    def predict(
        self,
        pairs: Iterable[Sequence[str]],
        batch_size: int | None = None,
        *,
        raw_scores: bool = False,
        instruction: str | None = None,
    ) -> np.ndarray:
        """Scores of ``pairs``: float32 ``(len(pairs), labels)``, in input order; the activation
        applied unless ``raw_scores`` (the logits). ``instruction``: an LLM reranker's task
        instruction, instead of its default.

        Raises:
            TypeError: a pair is not two strings (the message names its index).
            ValueError: ``batch_size`` not a positive int, or a text not encodable as UTF-8.
        """
        items = check_pairs(pairs)
        size = self.engine.batch_size if batch_size is None else batch_size
        check_positive(size)
        out = np.empty((len(items), len(self.labels)), dtype=np.float32)
        for start in range(0, len(items), TOKENIZE_WINDOW):
            encodings = self.encode(items[start : start + TOKENIZE_WINDOW], instruction, start)
            self.engine.embed_encodings(encodings, out[start : start + len(encodings)], size, normalize=False)
        return out if raw_scores else activate(out, self.activation)

    def encode(
        self, pairs: list[tuple[str, str]], instruction: str | None = None, offset: int = 0
    ) -> list[Any]:
        """The token sequences the engine runs for ``pairs``: the pair tokenized as a pair, or an LLM
        reranker's framed prompt (``instruction`` instead of its default). ``offset`` numbers the
        pairs in error messages.

        Raises:
            ValueError: ``instruction`` for a cross-encoder, or a text not encodable as UTF-8.
        """
        if self._frame is None:
            if instruction is not None:
                raise ValueError("instruction= is for LLM rerankers; this model is a cross-encoder")
            return self.engine.tokenizer.encode_pairs(pairs, offset)
        return self.engine.tokenizer.encode_framed(
            self._prompts(pairs, instruction), *self._frame, offset=offset
        )

    def pair_tokens(self, query: str, document: str, instruction: str | None = None) -> tuple[int, bool]:
        """Tokens the pair has before it is cut to :attr:`max_length` (the framed prompt's, for an
        LLM reranker), and whether that count is exact: a side past ``count_chars`` characters is
        counted only that far, a lower bound (for messages that state how far over a pair is)."""
        tokenizer = self.engine.tokenizer
        exact = max(len(query), len(document)) <= tokenizer.count_chars
        if self._frame is None:
            return tokenizer.count_pair(query, document), exact
        prefix, suffix = self._frame
        (text,) = self._prompts([(query, document)], instruction)
        exact = len(text) <= tokenizer.count_chars
        return len(prefix) + tokenizer.count(text, special=False) + len(suffix), exact

    def _prompts(self, pairs: list[tuple[str, str]], instruction: str | None) -> list[str]:
        """An LLM reranker's prompt text per pair (its frame's prefix and suffix come as token ids)."""
        assert self.prompt is not None
        template, default = self.prompt["template"], self.prompt["instruction"]
        task = default if instruction is None else instruction
        return [template.format(instruction=task, query=q, document=d) for q, d in pairs]


def is_score_model(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` holds a reranker (scores pairs) rather than an embedding model: an LLM
    reranker's prompt frame, a sentence-transformers sequence-classification config, or a
    ``*ForSequenceClassification`` architecture."""
    model_dir = Path(model_dir)
    if (model_dir / PROMPT_FILE).is_file():
        return True
    st_config = _optional_json(model_dir / "sentence_bert_config.json")
    if st_config.get("transformer_task") == "sequence-classification":
        return True
    architectures = _optional_json(model_dir / "config.json").get("architectures") or ()
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def check_pairs(pairs: Any) -> list[tuple[str, str]]:
    """``pairs`` as a list of (str, str): each item a 2-sequence of strings (checked by index)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError(f"pairs must be a sequence of (query, document) pairs, not {type(pairs).__name__}")
    items = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a (query, document) pair of two strings, got {pair!r:.80}")
        for side, text in zip(("query", "document"), pair, strict=True):
            if not isinstance(text, str):
                raise TypeError(f"pairs[{i}] {side} must be str, not {type(text).__name__}")
        items.append((pair[0], pair[1]))
    return items
