"""The reranker benchmark's contenders: each turns (model, threads, max length) into a function that
scores one query against its documents and returns the raw logits, float32 ``(len(documents),)``.

Logits, not sigmoid scores, for every contender: fastembed returns logits and cannot do otherwise, so
the others are asked for theirs (sentence-transformers with ``activation_fn=Identity``,
fastembed_native with ``raw_scores=True``) and all are compared on the same quantity.
Each runs as its users run it, at its own default batch size (:data:`BATCH_SIZES`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import numpy as np

from .rerank_models import RerankerModel

Rerank = Callable[[str, list[str]], np.ndarray]
CONTENDERS = ("naive_ort", "fastembed", "st_onnx", "st_torch", "fastembed_native")
NAIVE_BATCH = 32
#: Pairs per call as each contender is used (its library's default).
BATCH_SIZES = {
    "naive_ort": f"{NAIVE_BATCH} pairs",
    "fastembed": "64 pairs (TextCrossEncoder.rerank's default)",
    "st_onnx": "32 pairs (CrossEncoder.predict's default)",
    "st_torch": "32 pairs (CrossEncoder.predict's default)",
    "fastembed_native": "token budget, length-sorted (its default)",
}


def make_naive_ort(model: RerankerModel, threads: int, max_length: int) -> Rerank:
    """The loop a user writes with onnxruntime and tokenizers: pairs in input order, fixed batches
    of 32, padded to each batch's longest pair, cut longest-first at max length."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name for i in session.get_inputs()}
    tokenizer = Tokenizer.from_file(str(model.onnx_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)  # longest_first, as transformers truncates pairs
    pad_id = int(json.loads((model.onnx_dir / "config.json").read_text())["pad_token_id"])
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id))  # to the longest

    def rerank(query: str, documents: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(documents), NAIVE_BATCH):
            encodings = tokenizer.encode_batch([(query, d) for d in documents[start : start + NAIVE_BATCH]])
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            }
            if "token_type_ids" in feeds:
                feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            out.append(session.run(["logits"], feed)[0][:, 0])
        return np.concatenate(out).astype(np.float32)

    return rerank


def make_fastembed(model: RerankerModel, threads: int, max_length: int) -> Rerank:
    """fastembed 0.9's ``TextCrossEncoder`` on the exported directory: an unknown name must be
    registered first (``add_custom_model``), then ``specific_model_path`` points it at the files."""
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder as FastembedCrossEncoder

    name = f"local/bench-{model.name}"
    with contextlib.suppress(ValueError):  # registered already by an earlier call in this process
        FastembedCrossEncoder.add_custom_model(
            model=name, sources=ModelSource(hf="local/none"), model_file="onnx/model.onnx"
        )
    encoder = FastembedCrossEncoder(name, specific_model_path=str(model.onnx_dir), threads=threads)

    def rerank(query: str, documents: list[str]) -> np.ndarray:
        return np.fromiter(encoder.rerank(query, documents), dtype=np.float32, count=len(documents))

    return rerank


def make_st(backend: str) -> Callable[[RerankerModel, int, int], Rerank]:
    """sentence-transformers' ``CrossEncoder``: torch on the checkpoint, or its ONNX backend on the
    exported directory (5.7 loads ``model_kwargs["file_name"]`` from there through optimum)."""

    def factory(model: RerankerModel, threads: int, max_length: int) -> Rerank:
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        if backend == "torch":
            encoder = CrossEncoder(str(model.checkpoint), device="cpu")
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            encoder = CrossEncoder(
                str(model.onnx_dir),
                device="cpu",
                backend="onnx",
                model_kwargs={
                    "file_name": "onnx/model.onnx",
                    "provider": "CPUExecutionProvider",
                    "session_options": options,
                },
            )
        identity = torch.nn.Identity()

        def rerank(query: str, documents: list[str]) -> np.ndarray:
            scores = encoder.predict(
                [(query, d) for d in documents],
                activation_fn=identity,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.asarray(scores, dtype=np.float32)

        return rerank

    return factory


def make_fastembed_native(model: RerankerModel, threads: int, max_length: int) -> Rerank:
    from ..cross_encoder import TextCrossEncoder

    encoder = TextCrossEncoder(model.onnx_dir, threads=threads)

    def rerank(query: str, documents: list[str]) -> np.ndarray:
        return encoder.rerank(query, documents, raw_scores=True)

    rerank.encoder = encoder  # type: ignore[attr-defined]  (for the bulk call and the engine's statistics)
    return rerank


FACTORIES: dict[str, Callable[[RerankerModel, int, int], Rerank]] = {
    "naive_ort": make_naive_ort,
    "fastembed": make_fastembed,
    "st_onnx": make_st("onnx"),
    "st_torch": make_st("torch"),
    "fastembed_native": make_fastembed_native,
}
