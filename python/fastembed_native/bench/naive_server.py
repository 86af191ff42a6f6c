"""The embedding server users write first, as a benchmark peer: FastAPI + onnxruntime, each request
tokenized, run and pooled on its own (no batching across requests), in FastAPI's thread pool.

Run: ``FASTEMBED_BENCH_MODEL_DIR=<dir> FASTEMBED_BENCH_THREADS=2 uvicorn fastembed_native.bench.naive_server:app``.
It answers ``POST /v1/embeddings`` with OpenAI's response shape (float vectors) and ``GET /health``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

from ..engine import find_onnx

MODEL_DIR = Path(os.environ.get("FASTEMBED_BENCH_MODEL_DIR", "."))
THREADS = int(os.environ.get("FASTEMBED_BENCH_THREADS", "0"))
MAX_LENGTH = int(os.environ.get("FASTEMBED_BENCH_MAX_LENGTH", "256"))


def _load() -> tuple[Any, Any]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(find_onnx(MODEL_DIR)), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding()
    return session, tokenizer


session, tokenizer = _load()
app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/embeddings")
def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(None, feed)[0]
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(pooled)],
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": int(mask.sum()), "total_tokens": int(mask.sum())},
    }
