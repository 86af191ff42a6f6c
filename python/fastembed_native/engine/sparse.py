"""The sparse head: a SPLADE model's vocabulary logits -> one sparse vector per text.

The engine is the embeddings' own (tokenization, length-sorted token-budget batches, parallel
sessions, the C++ Run with the GIL released). What differs is the output: ``(batch, tokens,
vocabulary)`` float logits, 1 GB for 32 x 256 x 30,522. It is never held for more than one batch:
each batch's logits are pooled by the C++ core (``_core.splade``: masked max of the raw logits with
one SIMD pass per token, then the activation once per vocabulary entry) as soon as that batch's Run
returns, and batches are sized by a memory budget that counts the vocabulary
(:data:`LOGITS_BUDGET_BYTES`).

The rules are sentence-transformers' ``SparseEncoder`` (5.7): ``SpladePooling`` with
``pooling_strategy`` max or sum over the real tokens of ``activation_function`` "relu"
(log1p(relu(x)), SPLADE's saturation) or "log1p_relu" (log1p applied once more), then
``max_active_dims`` keeps a text's largest values. A directory without those files (fastembed's
SPLADE exports) is read as max + "relu", which is what fastembed computes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .. import _core
from .config import _optional_json, read_modules
from .embedder import TOKENIZE_WINDOW, Embedder, check_positive, check_texts
from .tokens import check_utf8

#: Most bytes of logits held at once, all concurrent Runs together (each Run's batch x longest text x
#: vocabulary x 4): 32 texts of 256 tokens over BERT's 30,522 words would be 1 GB for one Run; this
#: allows about 2,200 tokens per Run there, or 1,100 for each of two concurrent Runs.
LOGITS_BUDGET_BYTES = 256 * 2**20

#: sentence-transformers' SpladePooling activation names -> what the C++ core computes.
SPLADE_ACTIVATIONS = {"relu": "log1p_relu", "log1p_relu": "log1p_log1p_relu"}


@dataclass(frozen=True, eq=False)
class SparseEmbedding:
    """One text's sparse vector: ``indices`` (int32, ascending) and ``values`` (float32, > 0), as
    fastembed's ``SparseEmbedding``. Both are views into the batch's arrays, not copies."""

    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def as_dict(self) -> dict[int, float]:
        """``{index: value}``."""
        return dict(zip(self.indices.tolist(), self.values.tolist(), strict=True))

    def as_object(self) -> dict[str, np.ndarray]:
        """``{"indices": ..., "values": ...}`` (fastembed's form)."""
        return {"indices": self.indices, "values": self.values}

    def to_dense(self, size: int) -> np.ndarray:
        """The vector as a dense float32 array of ``size`` (the vocabulary size)."""
        dense = np.zeros(size, dtype=np.float32)
        dense[self.indices] = self.values
        return dense


@dataclass(frozen=True)
class SpladeConfig:
    """What a SPLADE model's files say about pooling its logits."""

    pooling: str  # "max" or "sum"
    activation: str  # sentence-transformers' name: "relu" or "log1p_relu"
    source: str  # where it came from, for messages and inspect


def read_splade_config(model_dir: str | os.PathLike[str]) -> SpladeConfig:
    """The pooling of the SPLADE model in ``model_dir``: its ``SpladePooling`` module's config, or
    max + "relu" when the directory has no modules.json (fastembed's layout).

    Raises:
        ValueError: modules.json names modules this head cannot reproduce, or an unknown pooling
            strategy or activation.
    """
    model_dir = Path(model_dir)
    modules = read_modules(model_dir).modules
    if not modules:
        return SpladeConfig("max", "relu", "default (no modules.json): max pooling of log1p(relu)")
    if modules[0] not in ("Transformer", "MLMTransformer") or "SpladePooling" not in modules:
        raise ValueError(
            f"{model_dir}/modules.json has {', '.join(modules)}; a SPLADE model is a Transformer "
            "(fill-mask) followed by SpladePooling"
        )
    extra = [m for m in modules[1:] if m != "SpladePooling"]
    if extra:
        raise ValueError(f"{model_dir}/modules.json: {', '.join(extra)} after SpladePooling is not supported")
    entries = _optional_json(model_dir / "modules.json")
    path = next(e.get("path", "") for e in entries if str(e.get("type", "")).endswith("SpladePooling"))
    config = _optional_json(model_dir / path / "config.json")
    pooling = config.get("pooling_strategy", "max")
    activation = config.get("activation_function", "relu")
    if pooling not in ("max", "sum"):
        raise ValueError(f"{model_dir}/{path}: pooling_strategy {pooling!r}; supported: max, sum")
    if activation not in SPLADE_ACTIVATIONS:
        raise ValueError(
            f"{model_dir}/{path}: activation_function {activation!r}; supported: {', '.join(SPLADE_ACTIVATIONS)}"
        )
    return SpladeConfig(pooling, activation, f"{path}/config.json")


def is_sparse_model(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` holds a SPLADE model: sentence-transformers' ``SparseEncoder`` in its
    ``config_sentence_transformers.json``, a ``SpladePooling`` / ``MLMTransformer`` module, or (no
    ``modules.json`` at all, fastembed's layout) a ``*ForMaskedLM`` architecture."""
    model_dir = Path(model_dir)
    if _optional_json(model_dir / "config_sentence_transformers.json").get("model_type") == "SparseEncoder":
        return True
    modules = read_modules(model_dir).modules
    if not modules:  # fastembed's SPLADE layout: a masked LM's graph and no sentence-transformers modules
        architectures = _optional_json(model_dir / "config.json").get("architectures") or ()
        return any(str(a).endswith("ForMaskedLM") for a in architectures)
    return any(m in ("SpladePooling", "MLMTransformer") for m in modules)


class SparseEmbedder:
    """A SPLADE model on the shared engine: texts in, :class:`SparseEmbedding` per text out.

    Args:
        model_dir: a model directory with a fill-mask ONNX graph (output ``logits``, ``(batch,
            tokens, vocabulary)``) and its ``tokenizer.json``; exported by ``fastembed-native export``.
        max_active_dims: keep only this many of each text's largest values (default: the model's
            ``config_sentence_transformers.json``, else all).
        logits_budget_bytes: most bytes of logits held at once, shared by the concurrent Runs
            (:data:`LOGITS_BUDGET_BYTES`).
        **options: the engine's options (providers, max_length, batch_size, max_batch_tokens,
            threads, parallel_runs, onnx_file, lazy_load, ...): see :class:`Embedder`.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        max_active_dims: int | None = None,
        logits_budget_bytes: int = LOGITS_BUDGET_BYTES,
        **options: Any,
    ):
        for name in ("pooling", "normalize", "include_prompt", "task"):
            if name in options:
                raise TypeError(
                    f"{type(self).__name__}() has no {name!r} option: SPLADE pools by its own rule"
                )
        self.splade = read_splade_config(model_dir)
        st_config = _optional_json(Path(model_dir) / "config_sentence_transformers.json")
        self.max_active_dims = _check_active_dims(
            max_active_dims if max_active_dims is not None else st_config.get("max_active_dims")
        )
        check_positive(logits_budget_bytes, "logits_budget_bytes")
        self.logits_budget_bytes = logits_budget_bytes
        self.engine = Embedder(model_dir, normalize=False, task="fill-mask", **options)
        self.prompts = self.engine.prompts
        static = find_static_query(Path(model_dir))
        #: The inference-free query side, when the model has one (queries then run no model).
        self.static_query = StaticQueryEncoder(static) if static is not None else None

    @property
    def vocab_size(self) -> int:
        """Width of the sparse vectors (the model's vocabulary)."""
        return self.engine.dim

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.engine.model_dir)!r}, vocab_size={self.vocab_size}, "
            f"pooling={self.splade.pooling!r}, activation={self.splade.activation!r}, "
            f"max_length={self.max_length}, providers={self.engine.providers})"
        )

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        max_active_dims: int | None = None,
        prompt: str = "",
        parallel: int | None = None,
    ) -> list[SparseEmbedding]:
        """One :class:`SparseEmbedding` per text, in input order.

        Args:
            texts: a list (or other sequence) of strings, or one string.
            batch_size: texts per ONNX Runtime call at most (the logits budget may cut it further).
            max_active_dims: keep only this many of each text's largest values (default: the
                model's setting, else all).
            prompt: text prepended to every input.
            parallel: as :meth:`Embedder.embed`.

        Raises:
            TypeError: ``texts`` or an item is not a string (the message names the index).
            ValueError: a bad ``batch_size``, ``max_active_dims`` or ``parallel``.
        """
        items, size, runs = self.engine.call_arguments(texts, batch_size, parallel, prompt)
        active = _check_active_dims(max_active_dims) or self.max_active_dims or 0
        out: list[SparseEmbedding | None] = [None] * len(items)
        for start in range(0, len(items), TOKENIZE_WINDOW):
            encodings = self.engine.tokenizer.encode(items[start : start + TOKENIZE_WINDOW], start)
            self.embed_encodings(
                encodings, out, size, start=start, max_active_dims=active, parallel_runs=runs
            )
        return out  # type: ignore[return-value]  # every row is filled

    def embed_query(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        *,
        max_active_dims: int | None = None,
        parallel: int | None = None,
    ) -> list[SparseEmbedding]:
        """Queries' sparse vectors: with the model's query prompt, or, for an inference-free model,
        its static query weights (no model run; sentence-transformers' ``encode_query``)."""
        prompt = self.prompts.get("query", "")
        if self.static_query is None:
            return self.embed(
                texts, batch_size, max_active_dims=max_active_dims, prompt=prompt, parallel=parallel
            )
        items = check_texts(texts)
        active = _check_active_dims(max_active_dims) or self.max_active_dims or 0
        check_utf8(items)  # names an unencodable text by its index
        return self.static_query.embed([prompt + text for text in items], active)

    def embed_passage(self, texts: str | Sequence[str], batch_size: int | None = None, **kwargs: Any):
        """:meth:`embed` with the model's document prompt, if it has one."""
        prompt = self.prompts.get("document", self.prompts.get("passage", ""))
        return self.embed(texts, batch_size, prompt=prompt, **kwargs)

    # fastembed's names
    query_embed = embed_query
    passage_embed = embed_passage

    def embed_encodings(
        self,
        encodings: Sequence[Any],
        out: list[SparseEmbedding | None],
        batch_size: int,
        *,
        start: int = 0,
        max_active_dims: int = 0,
        parallel_runs: int | None = None,
    ) -> None:
        """Pool already tokenized texts into ``out[start + i]``, one batch of logits at a time."""
        engine = self.engine
        pooling = self.splade.pooling
        activation = SPLADE_ACTIVATIONS[self.splade.activation]
        logits_name = engine._session.output_name

        def pool_batch(session: _core.Session, rows: np.ndarray) -> None:
            ids, mask, types = engine.pad(encodings, rows)
            (logits,) = session.run(ids, mask, types, [logits_name], engine.config.vocab_size or 0)
            offsets, indices, values = _core.splade(logits, mask, pooling, activation, max_active_dims)
            del logits  # this batch's logits go back to ONNX Runtime before the next batch is pooled
            for i, row in enumerate(rows):
                a, b = offsets[i], offsets[i + 1]
                out[start + int(row)] = SparseEmbedding(indices[a:b], values[a:b])

        engine.run_batches(
            encodings,
            batch_size,
            pool_batch,
            parallel_runs=parallel_runs,
            token_budget=self.token_budget(batch_size, parallel_runs),
        )

    def token_budget(self, batch_size: int, parallel_runs: int | None = None) -> int:
        """Most tokens one Run takes: the engine's budget, cut further so that the logits of the
        concurrent Runs (``parallel_runs``, default the engine's; tokens x vocabulary floats each)
        stay within ``logits_budget_bytes`` together."""
        runs = parallel_runs or self.engine.parallel_runs
        tokens_per_run = max(1, self.logits_budget_bytes // (4 * self.vocab_size * runs))
        return min(self.engine.token_budget(batch_size), tokens_per_run)


#: An inference-free model's routes (sentence-transformers' Router, kept by ``export``): which module
#: encodes queries. Only a SparseStaticEmbedding query side is read; documents run the SPLADE graph.
ROUTER_FILE = "router_config.json"


class StaticQueryEncoder:
    """The query side of an inference-free sparse model (sentence-transformers'
    ``SparseStaticEmbedding``, fastembed's IfSplade): no model run, each distinct token of the query
    (its own tokenizer, no special tokens, cut at its ``model_max_length``) weighs its static
    weight (an IDF). Read with numpy alone."""

    def __init__(self, module_dir: Path) -> None:
        self.module_dir = module_dir
        self.weight = read_safetensors(module_dir / "model.safetensors")["weight"].astype(np.float32)
        self.tokenizer = Tokenizer.from_file(str(module_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        limit = _optional_json(module_dir / "tokenizer_config.json").get("model_max_length")
        if isinstance(limit, int) and 0 < limit < 1_000_000:  # HF's "no limit" sentinel is ~1e30
            self.tokenizer.enable_truncation(limit)
        else:
            self.tokenizer.no_truncation()

    def embed(self, texts: list[str], max_active_dims: int = 0) -> list[SparseEmbedding]:
        out = []
        for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False):
            ids = np.unique(np.asarray(encoding.ids, dtype=np.int64))
            ids = ids[ids < len(self.weight)]
            values = self.weight[ids]
            nonzero = values != 0
            ids, values = ids[nonzero], values[nonzero]
            if 0 < max_active_dims < len(ids):  # the largest |value|s, back in index order
                top = np.sort(np.argsort(-np.abs(values), kind="stable")[:max_active_dims])
                ids, values = ids[top], values[top]
            out.append(SparseEmbedding(ids.astype(np.int32), values))
        return out


def find_static_query(model_dir: Path) -> Path | None:
    """The SparseStaticEmbedding module directory of an inference-free model's query route, if any."""
    router = _optional_json(model_dir / ROUTER_FILE)
    query = (router.get("structure") or {}).get("query") or []
    types = router.get("types") or {}
    if len(query) == 1 and str(types.get(query[0], "")).endswith("SparseStaticEmbedding"):
        return model_dir / query[0]
    return None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays (the format is an 8-byte header length, a JSON
    header of dtypes, shapes and byte offsets, then the raw little-endian data)."""
    import json

    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "BF16": None}
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = dtypes.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which is not read here")
        begin, end = info["data_offsets"]
        raw = data[8 + size + begin : 8 + size + end]
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(info["shape"]).copy()
    return tensors


def _check_active_dims(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"max_active_dims must be a positive int or None, got {value!r}")
    return value
