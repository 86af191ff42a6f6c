"""Exporting a BGE-M3 checkpoint: the XLM-R encoder through optimum, then the two heads its
repository ships as ``sparse_linear.pt`` and ``colbert_linear.pt`` appended to the graph, so one
Run gives the token states (dense: [CLS]), one sparse weight per token (relu(sparse_linear(h))) and
one ColBERT vector per token (colbert_linear(h)). Checked against FlagEmbedding's formulas computed
in torch on the same tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..engine.m3 import COLBERT_OUTPUT, DENSE_OUTPUT, HEAD_FILES, SPARSE_OUTPUT
from .data_file import save_graph


def _linear(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(weight (out, in), bias) of a saved ``torch.nn.Linear`` state dict."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state["weight"].numpy(), state["bias"].numpy()


def append_heads(source: Path, model: Path) -> None:
    """Append BGE-M3's sparse and ColBERT heads to ``model``'s ``onnx/model.onnx`` and copy the head
    files beside it (they mark the directory as BGE-M3)."""
    import onnx
    from onnx import helper, numpy_helper

    path = model / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    graph = proto.graph
    hidden = next(o for o in graph.output if o.name == DENSE_OUTPUT)
    batch, tokens = [d.dim_param or d.dim_value for d in hidden.type.tensor_type.shape.dim][:2]

    sparse_w, sparse_b = _linear(source / "sparse_linear.pt")
    colbert_w, colbert_b = _linear(source / "colbert_linear.pt")
    tensors = {
        "m3.sparse.weight": sparse_w.T.copy(),
        "m3.sparse.bias": sparse_b,
        "m3.colbert.weight": colbert_w.T.copy(),
        "m3.colbert.bias": colbert_b,
        "m3.squeeze_axes": np.array([-1], dtype=np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in tensors.items())
    graph.node.extend(
        [
            helper.make_node("MatMul", [DENSE_OUTPUT, "m3.sparse.weight"], ["m3.sparse.mm"]),
            helper.make_node("Add", ["m3.sparse.mm", "m3.sparse.bias"], ["m3.sparse.linear"]),
            helper.make_node("Relu", ["m3.sparse.linear"], ["m3.sparse.relu"]),
            helper.make_node("Squeeze", ["m3.sparse.relu", "m3.squeeze_axes"], [SPARSE_OUTPUT]),
            helper.make_node("MatMul", [DENSE_OUTPUT, "m3.colbert.weight"], ["m3.colbert.mm"]),
            helper.make_node("Add", ["m3.colbert.mm", "m3.colbert.bias"], [COLBERT_OUTPUT]),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info(SPARSE_OUTPUT, onnx.TensorProto.FLOAT, [batch, tokens]),
            helper.make_tensor_value_info(
                COLBERT_OUTPUT, onnx.TensorProto.FLOAT, [batch, tokens, colbert_w.shape[0]]
            ),
        ]
    )
    save_graph(proto, path)  # the weights in a data file beside it (see data_file)
    for name in HEAD_FILES:
        shutil.copy2(source / name, model / name)


def m3_parity(model: Path, source: Path) -> float:
    """Largest |difference| of the three outputs (dense vector, sparse weight, ColBERT vector)
    between the engine on ``model`` and FlagEmbedding's formulas in torch on ``source``, over the
    parity texts."""
    import torch
    from transformers import AutoModel

    from ..engine.m3 import M3Embedder
    from .parity import PARITY_TEXTS

    engine = M3Embedder(model)
    ours = engine.embed(list(PARITY_TEXTS))
    encoder = AutoModel.from_pretrained(str(source)).eval()
    sparse_w, sparse_b = _linear(source / "sparse_linear.pt")
    colbert_w, colbert_b = _linear(source / "colbert_linear.pt")
    worst = 0.0
    encodings = engine.engine.tokenizer.encode(list(PARITY_TEXTS))
    for i, encoding in enumerate(encodings):
        with torch.no_grad():
            h = (
                encoder(input_ids=torch.tensor([encoding.ids]))
                .last_hidden_state[0]
                .numpy()
                .astype(np.float64)
            )
        cls = h[0] / max(np.linalg.norm(h[0]), 1e-12)
        worst = max(worst, float(np.abs(cls - ours.dense[i]).max()))
        weights = np.maximum(h @ sparse_w.T + sparse_b, 0)[:, 0]
        expected: dict[int, float] = {}
        for token, weight in zip(encoding.ids, weights, strict=True):
            if token not in engine.dropped_ids and weight > 0:
                expected[token] = max(expected.get(token, 0.0), float(weight))
        got = ours.sparse[i].as_dict()
        if set(got) != set(expected):
            return float("inf")
        worst = max([worst, *(abs(got[k] - v) for k, v in expected.items())])
        vectors = h[1:] @ colbert_w.T + colbert_b
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        worst = max(worst, float(np.abs(vectors - ours.colbert[i]).max()) if len(vectors) else 0.0)
    return worst
