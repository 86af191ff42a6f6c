"""Exporting a pylate ColBERT checkpoint: the encoder through optimum, then pylate's Dense projection
appended to the graph (a MatMul, plus its bias), so ONNX Runtime gives one projected vector per token
and the engine's multi-vector head only selects and normalises. Checked against the checkpoint's own
computation in torch on the same token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data_file import save_graph

#: The graph output the multi-vector head reads.
TOKEN_OUTPUT = "token_embeddings"


def _dense_modules(source: Path) -> list[Path]:
    """The Dense modules of ``source``'s modules.json, in order."""
    entries = json.loads((source / "modules.json").read_text(encoding="utf-8"))
    return [source / e["path"] for e in entries if str(e.get("type", "")).endswith("Dense")]


def _dense_weights(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight (out, in), bias or None) of one Dense module, refusing what it cannot reproduce."""
    from safetensors.numpy import load_file

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    if not activation.endswith("Identity") or config.get("use_residual"):
        raise ValueError(f"{path}: only a linear projection is supported (activation {activation!r})")
    tensors = load_file(str(path / "model.safetensors"))
    return tensors["linear.weight"], tensors.get("linear.bias")


def append_projection(source: Path, model: Path) -> None:
    """Append ``source``'s Dense projections to ``model``'s ``onnx/model.onnx`` (output
    :data:`TOKEN_OUTPUT`) and keep modules.json's Transformer alone (the rest is in the graph)."""
    import onnx
    from onnx import helper, numpy_helper

    path = model / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    graph = proto.graph
    hidden = next(o for o in graph.output if o.name == "last_hidden_state")
    current = hidden.name
    width = None
    for n, dense in enumerate(_dense_modules(source)):
        weight, bias = _dense_weights(dense)
        name = f"colbert_dense_{n}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), f"{name}.weight"))
        out = f"{name}.out"
        graph.node.append(
            helper.make_node("MatMul", [current, f"{name}.weight"], [out], name=f"{name}.matmul")
        )
        if bias is not None:
            graph.initializer.append(numpy_helper.from_array(bias, f"{name}.bias"))
            graph.node.append(helper.make_node("Add", [out, f"{name}.bias"], [f"{out}.biased"]))
            out = f"{out}.biased"
        current, width = out, weight.shape[0]
    graph.node.append(helper.make_node("Identity", [current], [TOKEN_OUTPUT]))
    dims = [d.dim_param or d.dim_value for d in hidden.type.tensor_type.shape.dim][:2]
    graph.output.remove(hidden)
    graph.output.append(helper.make_tensor_value_info(TOKEN_OUTPUT, onnx.TensorProto.FLOAT, [*dims, width]))
    save_graph(proto, path)  # the weights in a data file beside it (see data_file)
    entries = json.loads((source / "modules.json").read_text(encoding="utf-8"))
    (model / "modules.json").write_text(json.dumps(entries[:1], indent=2), encoding="utf-8")


def colbert_parity(model: Path, source: Path) -> float:
    """Largest |difference| between the engine's unit token vectors of ``model`` and the checkpoint's
    computation in torch (encoder, Dense, L2 normalisation) on the same token ids, over the parity
    texts as documents and as queries."""
    import torch
    from transformers import AutoModel

    from ..engine.multivector import MultiVectorEmbedder
    from .parity import PARITY_TEXTS

    engine = MultiVectorEmbedder(model)
    encoder = AutoModel.from_pretrained(str(source)).eval()
    denses = [_dense_weights(d) for d in _dense_modules(source)]
    worst = 0.0
    for is_query in (False, True):
        ours = engine.embed(list(PARITY_TEXTS), is_query=is_query)
        for tokens, vectors in zip(engine.encode(list(PARITY_TEXTS), is_query=is_query), ours, strict=True):
            ids = list(tokens.ids)
            attention = [1] * len(ids)
            keep = np.ones(len(ids), dtype=bool)
            if is_query and engine.colbert.do_query_expansion:
                pad = engine.colbert.query_length - len(ids)
                ids += [engine.mask_id] * pad
                attention += [int(engine.colbert.attend_to_expansion_tokens)] * pad
                keep = np.ones(len(ids), dtype=bool)
            elif not is_query:
                keep = ~np.isin(ids, engine.skiplist_ids)
            with torch.no_grad():
                hidden = (
                    encoder(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention]))
                    .last_hidden_state[0]
                    .numpy()
                )
            for weight, bias in denses:
                hidden = hidden @ weight.T + (0 if bias is None else bias)
            hidden = hidden[keep]
            hidden /= np.maximum(np.linalg.norm(hidden, axis=1, keepdims=True), 1e-12)
            worst = max(worst, float(np.abs(hidden - vectors).max()) if len(hidden) else 0.0)
    return worst
