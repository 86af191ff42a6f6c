"""The sparse benchmark's contenders: each turns (model, threads) into a function that encodes a list of
texts and returns one ``(indices, values)`` pair per text (int indices ascending, float32 values > 0).

Each runs as its users run it, at the batch size in :data:`BATCHING`: the peers at 32 texts (the
sentence-transformers default; fastembed's default of 256 would hold 256 x longest text x 30,522
float logits, three times over, 48 GB for one batch of 512-token texts), fastembed_native by its
token and logits budgets. Every ONNX contender runs the model's ``onnx/model.onnx``; only
``fastembed_native_graph_max`` runs ``onnx/model_maxpool.onnx``, the same graph with the pooling
appended (:func:`~.head_models.write_maxpool_graph`): the alternative the sparse benchmark weighs
against pooling the full logits in C++.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .head_models import MAXPOOL_FILE, MAXPOOL_OUTPUT, HeadModel, linked_view

Sparse = tuple[np.ndarray, np.ndarray]
Encode = Callable[[list[str]], list[Sparse]]
PEER_BATCH = 32
CONTENDERS = (
    "naive_ort",
    "fastembed",
    "st_onnx",
    "st_torch",
    "fastembed_native_graph_max",
    "fastembed_native_one_run",
    "fastembed_native",
)
#: Texts per call as each contender is used.
BATCHING = {
    "naive_ort": f"{PEER_BATCH} texts in input order, numpy pooling",
    "fastembed": f"{PEER_BATCH} texts in input order (its default is 256)",
    "st_onnx": f"{PEER_BATCH} texts, length-sorted (SparseEncoder.encode's default)",
    "st_torch": f"{PEER_BATCH} texts, length-sorted (SparseEncoder.encode's default)",
    "fastembed_native_graph_max": "as fastembed_native, pooling in the graph",
    "fastembed_native_one_run": "as fastembed_native, one run at a time (parallel_runs=1: one session, "
    "the weights held once)",
    "fastembed_native": "token and logits budgets, length-sorted (its defaults)",
}


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def make_naive_ort(model: HeadModel, threads: int) -> Encode:
    """The loop a user writes with onnxruntime and tokenizers: texts in input order, batches of 32
    padded to their longest text, the logits pooled in numpy as fastembed's SPLADE does."""
    from tokenizers import Tokenizer

    from ..engine import read_model_dir

    session = _session(model.onnx_path, threads)
    feeds = {i.name for i in session.get_inputs()}
    tokenizer = Tokenizer.from_file(str(model.onnx_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=read_model_dir(model.onnx_dir, task="fill-mask").max_length)
    tokenizer.enable_padding(pad_id=0, pad_token=tokenizer.id_to_token(0))

    def encode(texts: list[str]) -> list[Sparse]:
        out = []
        for start in range(0, len(texts), PEER_BATCH):
            encodings = tokenizer.encode_batch(texts[start : start + PEER_BATCH])
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64), "attention_mask": mask}
            if "token_type_ids" in feeds:
                feed["token_type_ids"] = np.zeros_like(mask)
            (logits,) = session.run(["logits"], feed)
            weights = np.log1p(np.maximum(logits, 0))
            pooled = (weights * mask[..., None].astype(np.float32)).max(axis=1)
            for row in pooled:
                indices = row.nonzero()[0]
                out.append((indices, row[indices]))
        return out

    return encode


def fastembed_dir(model: HeadModel) -> Path:
    """The export as fastembed 0.9 loads a SPLADE model (``model.onnx`` at the top): links to the
    export's files, made once beside it."""
    files = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
    links = {name: model.onnx_dir / name for name in files}
    view = linked_view(
        model.onnx_dir.parent / "fastembed-view", model, {**links, "model.onnx": model.onnx_path}, {}
    )
    return view


def make_fastembed(model: HeadModel, threads: int) -> Encode:
    """fastembed 0.9's ``SparseTextEmbedding`` on the same ONNX file. Its sparse models cannot be
    registered (no ``add_custom_model``): the name of the SPLADE it knows,
    ``prithivida/Splade_PP_en_v1`` (max pooling of log1p(relu), as this model), with
    ``specific_model_path`` pointing at :func:`fastembed_dir`."""
    from fastembed import SparseTextEmbedding as FastembedSparse

    encoder = FastembedSparse(
        "prithivida/Splade_PP_en_v1", specific_model_path=str(fastembed_dir(model)), threads=threads
    )

    def encode(texts: list[str]) -> list[Sparse]:
        return [(e.indices, e.values) for e in encoder.embed(texts, batch_size=PEER_BATCH)]

    return encode


def make_st(backend: str) -> Callable[[HeadModel, int], Encode]:
    """sentence-transformers' ``SparseEncoder``: torch on the checkpoint, or its ONNX backend on the
    export (``model_kwargs["file_name"]``, through optimum)."""

    def factory(model: HeadModel, threads: int) -> Encode:
        import torch
        from sentence_transformers import SparseEncoder

        torch.set_num_threads(threads)
        if backend == "torch":
            encoder = SparseEncoder(str(model.checkpoint), device="cpu")
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            encoder = SparseEncoder(
                str(model.onnx_dir),
                device="cpu",
                backend="onnx",
                model_kwargs={
                    "file_name": "onnx/model.onnx",
                    "provider": "CPUExecutionProvider",
                    "session_options": options,
                },
            )

        def encode(texts: list[str]) -> list[Sparse]:
            matrix = encoder.encode(
                texts, batch_size=PEER_BATCH, convert_to_tensor=True, show_progress_bar=False
            ).coalesce()
            rows, columns = matrix.indices().numpy()
            values = matrix.values().numpy()
            bounds = np.searchsorted(rows, np.arange(len(texts) + 1))
            return [(columns[a:b], values[a:b]) for a, b in itertools.pairwise(bounds)]

        return encode

    return factory


def make_fastembed_native(model: HeadModel, threads: int, parallel_runs: int | None = None) -> Encode:
    from ..sparse_text_embedding import SparseTextEmbedding

    encoder = SparseTextEmbedding(model.onnx_dir, threads=threads, parallel_runs=parallel_runs)

    def encode(texts: list[str]) -> list[Sparse]:
        return [(e.indices, e.values) for e in encoder.embed(texts)]

    encode.encoder = encoder  # type: ignore[attr-defined]  (for the engine's statistics)
    return encode


def make_one_run(model: HeadModel, threads: int) -> Encode:
    """Ours with ``parallel_runs=1``: bulk calls run on the single-batch session, so ONNX Runtime holds
    the weights once (the default's concurrent runs have a second session, with its own copy)."""
    return make_fastembed_native(model, threads, parallel_runs=1)


def make_graph_max(model: HeadModel, threads: int) -> Encode:
    """fastembed_native's engine on ``onnx/model_maxpool.onnx``: the same batches, but ONNX Runtime
    returns (batch, vocabulary) weights, read in numpy (the non-zero entries of each row)."""
    from .. import _core
    from ..sparse_text_embedding import SparseEmbedding, SparseTextEmbedding

    class GraphMax(SparseTextEmbedding):
        def embed_encodings(
            self,
            encodings: Any,
            out: list[Any],
            batch_size: int,
            *,
            start: int = 0,
            max_active_dims: int = 0,
            parallel_runs: int | None = None,
        ) -> None:
            engine = self.engine

            def pool_batch(session: _core.Session, rows: np.ndarray) -> None:
                ids, mask, types = engine.pad(encodings, rows)
                (weights,) = session.run(ids, mask, types, [MAXPOOL_OUTPUT], engine.config.vocab_size or 0)
                for i, row in enumerate(rows):
                    indices = np.flatnonzero(weights[i]).astype(np.int32)
                    out[start + int(row)] = SparseEmbedding(indices, weights[i, indices])

            budget = self.token_budget(batch_size, parallel_runs)  # the same batches as ours
            engine.run_batches(
                encodings, batch_size, pool_batch, parallel_runs=parallel_runs, token_budget=budget
            )

    encoder = GraphMax(model.onnx_dir, threads=threads, onnx_file=MAXPOOL_FILE)

    def encode(texts: list[str]) -> list[Sparse]:
        return [(e.indices, e.values) for e in encoder.embed(texts)]

    return encode


FACTORIES: dict[str, Callable[[HeadModel, int], Encode]] = {
    "naive_ort": make_naive_ort,
    "fastembed": make_fastembed,
    "st_onnx": make_st("onnx"),
    "st_torch": make_st("torch"),
    "fastembed_native_graph_max": make_graph_max,
    "fastembed_native_one_run": make_one_run,
    "fastembed_native": make_fastembed_native,
}
