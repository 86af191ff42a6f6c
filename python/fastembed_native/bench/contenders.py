"""The contenders: each turns (model dir, ONNX file, threads, max length) into a function that
embeds a list of texts at a batch size. Peers are what users write today (plain onnxruntime, naive
and careful), fastembed and sentence-transformers; ours comes with one lever off at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import INT8_FILE

Embed = Callable[[list[str], int], np.ndarray]
CONTENDERS = ("naive_ort", "careful_ort", "fastembed", "st_onnx", "st_torch", "fastembed_native")


def _ort_session(onnx_path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _numpy_mean_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _hf_tokenizer(model_dir: Path, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding()  # to the longest text of each call
    return tokenizer


def _run_ort(session, tokenizer, texts: list[str]) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(["last_hidden_state"], feed)[0]
    return _numpy_mean_normalize(hidden, mask)


def make_naive_ort(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
    """Texts in input order, a fixed batch, padding to each batch's longest, numpy pooling."""
    session, tokenizer = _ort_session(onnx_path, threads), _hf_tokenizer(model_dir, max_length)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.vstack(
            [
                _run_ort(session, tokenizer, texts[i : i + batch_size])
                for i in range(0, len(texts), batch_size)
            ]
        )

    return embed


def make_careful_ort(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
    """As naive, but batches texts of similar token length (sorted) and restores the order."""
    session, tokenizer = _ort_session(onnx_path, threads), _hf_tokenizer(model_dir, max_length)
    counter = _hf_tokenizer(model_dir, max_length)
    counter.no_padding()

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        lengths = [len(e) for e in counter.encode_batch(texts)]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            vectors = _run_ort(session, tokenizer, [texts[j] for j in rows])
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out

    return embed


def make_fastembed(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
    from fastembed import TextEmbedding as FastembedModel
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "local/all-MiniLM-L6-v2-bench"
    with contextlib.suppress(ValueError):  # registered already by an earlier call in this process
        FastembedModel.add_custom_model(
            model=name,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf="local/none"),
            dim=384,
            model_file=str(onnx_path.relative_to(model_dir)),
        )
    model = FastembedModel(name, specific_model_path=str(model_dir), threads=threads)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(list(model.embed(texts, batch_size=batch_size)), dtype=np.float32)

    return embed


def _sentence_transformer(model_dir: Path, threads: int, backend: str):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if backend == "torch":
        from ..models import default_model_source

        return SentenceTransformer(str(default_model_source()), device="cpu")
    return SentenceTransformer(
        str(model_dir),
        device="cpu",
        backend="onnx",
        model_kwargs={"file_name": "onnx/model.onnx", "provider": "CPUExecutionProvider"},
    )


def make_st(backend: str) -> Callable[..., Embed]:
    def factory(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
        model = _sentence_transformer(model_dir, threads, backend)

        def embed(texts: list[str], batch_size: int) -> np.ndarray:
            return model.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False
            )

        return embed

    return factory


def make_fastembed_native_with(**options: Any) -> Callable[..., Embed]:
    """fastembed_native with TextEmbedding ``options``: the levers, one at a time."""

    def factory(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
        from ..text_embedding import TextEmbedding

        model = TextEmbedding(model_dir, threads=threads, **options)

        def embed(texts: list[str], batch_size: int) -> np.ndarray:
            return model.embed(texts, batch_size=batch_size)

        embed.model = model  # type: ignore[attr-defined]  (for the Run-share statistics)
        return embed

    return factory


make_fastembed_native = make_fastembed_native_with()


def make_fastembed_native_int8(model_dir: Path, onnx_path: Path, threads: int, max_length: int) -> Embed:
    """fastembed_native on the int8 copy (``fastembed-native quantize``, made here if missing)."""
    from ..models import quantize_model
    from ..text_embedding import TextEmbedding

    if not (model_dir / INT8_FILE).is_file():
        quantize_model(model_dir)
    model = TextEmbedding(model_dir, onnx_file=INT8_FILE, threads=threads)

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return model.embed(texts, batch_size=batch_size)

    return embed


FACTORIES: dict[str, Callable[..., Embed]] = {
    "naive_ort": make_naive_ort,
    "careful_ort": make_careful_ort,
    "fastembed": make_fastembed,
    "st_onnx": make_st("onnx"),
    "st_torch": make_st("torch"),
    "fastembed_native": make_fastembed_native,
    # Not in the default list; ask with --contenders. int8 trades parity for speed; the others
    # switch one lever off: concurrent runs for several batches, the fused single-batch graph.
    "fastembed_native_int8": make_fastembed_native_int8,
    "fastembed_native_serial": make_fastembed_native_with(parallel_runs=1),
    "fastembed_native_unfused": make_fastembed_native_with(fused=False),
}
