"""A BERT-family ONNX graph assembled from safetensors weights with ``onnx``, ``safetensors`` and
numpy alone: no torch, no transformers, no optimum.

all-MiniLM-L6-v2, BGE, E5 and GTE are all ``model_type: "bert"``: word + position + token-type
embeddings and a LayerNorm, then N post-LN encoder layers (self-attention with the additive
extended attention mask, exact-erf GELU feed-forward), and ``last_hidden_state`` out. Writing that
graph directly takes about a second, where exporting it through torch needs a 1.5 GB environment.

The graph uses the standard ONNX ops (opset 17: LayerNormalization is one op) in the classic
BERT export layout, which is what ONNX Runtime's transformer optimizer matches: ``fuse`` turns it
into EmbedLayerNormalization, Attention, SkipLayerNormalization and BiasGelu kernels exactly as it
does for an optimum export. The builder also writes that fused graph itself
(:func:`build_fused_graph`, for single-batch calls): the optimizer took 3-10 s and needed sympy,
writing it takes milliseconds, and ``tests/test_bert_builder.py`` checks that the two are the same
ops with the same outputs. The fused file points into the plain graph's ``model.onnx_data`` for
every tensor the two share, so the cache holds one copy of the weights plus the fused graph's own
concatenated QKV weights (11 MB for all-MiniLM-L6-v2), not two 90 MB files.

Two references prove a build: sentence-transformers in the test suite (min cosine >= 0.9999 on the
parity corpus), and, at build time without torch, :func:`reference_hidden_states`, a float64 numpy
forward pass over the same weights. The numpy reference catches every graph-wiring mistake (a
transposed weight, a wrong mask, a missing residual) but shares this module's reading of the
checkpoint, so it is the test suite's comparison with sentence-transformers that proves that
reading for the family.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import FUSED_FILE, Embedder, read_model_dir
from ..engine.scores import Scorer
from ..errors import ModelLoadError
from .data_file import save_graph
from .export import _CONFIG_FILES as CONFIG_FILES  # the same files an optimum export copies
from .export import ExportReport
from .parity import PARITY_TEXTS, SCORE_TOLERANCE, cosine_rows, parity_check, parity_pairs, score_parity

#: What a checkpoint's config.json must say for this builder (anything else goes through optimum).
SUPPORTED_MODEL_TYPES = ("bert",)
#: Checkpoints saved from BertModel have bare names, from BertFor* a "bert." prefix.
_KEY_PREFIXES = ("", "bert.", "model.")
OPSET = 17
IR_VERSION = 8  # what ONNX Runtime 1.21+ loads; opset 17 needs IR 8


@dataclass(frozen=True)
class BertConfig:
    """The parts of a BERT config.json that shape the graph."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    type_vocab_size: int
    max_position_embeddings: int
    #: Logits of a BertForSequenceClassification (a cross-encoder): its pooler and classifier go
    #: on top of the encoder, and the graph's output is ``logits``. 0: the encoder alone.
    num_labels: int = 0

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


def _read_config(source: Path) -> dict[str, Any]:
    path = source / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face checkpoint directory (no config.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def _weight_files(source: Path) -> list[Path]:
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [source / shard for shard in shards]
    single = source / "model.safetensors"
    return [single] if single.is_file() else []


def unsupported_reason(source: str | Path) -> str | None:
    """Why this builder cannot build ``source`` (a checkpoint directory), or None when it can."""
    source = Path(source)
    try:
        config = _read_config(source)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        return str(exc)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not BERT"
    if not _weight_files(source):
        return "no model.safetensors (only safetensors weights are read without torch)"
    checks = {
        "position_embedding_type": (config.get("position_embedding_type", "absolute"), "absolute"),
        "hidden_act": (config.get("hidden_act", "gelu"), "gelu"),
        "is_decoder": (bool(config.get("is_decoder", False)), False),
        "add_cross_attention": (bool(config.get("add_cross_attention", False)), False),
    }
    for key, (found, expected) in checks.items():
        if found != expected:
            return f"config.json has {key}={found!r}; this builder supports only {expected!r}"
    if config.get("hidden_size", 0) % max(config.get("num_attention_heads", 1), 1):
        return "hidden_size is not a multiple of num_attention_heads"
    return None


def bert_config(source: str | Path) -> BertConfig:
    """The graph-shaping fields of ``source``'s config.json (ValueError when it is not a BERT we build)."""
    source = Path(source)
    reason = unsupported_reason(source)
    if reason:
        raise ValueError(f"cannot build {source} without torch: {reason}")
    config = _read_config(source)
    classifier = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ())
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))  # transformers' default: 2
    return BertConfig(
        num_labels=labels if classifier else 0,
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        intermediate_size=int(config["intermediate_size"]),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        max_position_embeddings=int(config.get("max_position_embeddings", 512)),
    )


def load_weights(source: str | Path, config: BertConfig) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as float32 numpy arrays, keyed without any "bert." prefix.

    Raises:
        ValueError: a tensor the graph needs is missing, or has a shape the config does not imply.
    """
    from safetensors.numpy import load_file

    source = Path(source)
    raw: dict[str, np.ndarray] = {}
    for path in _weight_files(source):
        try:
            raw.update(load_file(str(path)))
        except (TypeError, ValueError) as exc:  # e.g. bfloat16, which numpy cannot hold
            raise ValueError(f"cannot read {path} with numpy: {exc}") from exc
    prefix = next((p for p in _KEY_PREFIXES if f"{p}embeddings.word_embeddings.weight" in raw), None)
    if prefix is None:
        raise ValueError(
            f"{source}: no embeddings.word_embeddings.weight (with or without a 'bert.' prefix) in the weights"
        )
    weights = {
        key[len(prefix) :]: value.astype(np.float32, copy=False)
        for key, value in raw.items()
        if key.startswith(prefix) and value.dtype.kind == "f"
    }
    hidden, inner = config.hidden_size, config.intermediate_size
    if config.num_labels:  # BertForSequenceClassification's head sits outside the "bert." prefix
        weights.update(
            {k: v.astype(np.float32, copy=False) for k, v in raw.items() if k.startswith("classifier.")}
        )
    expected = {
        "embeddings.word_embeddings.weight": (None, hidden),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    if config.type_vocab_size > 0:
        expected["embeddings.token_type_embeddings.weight"] = (config.type_vocab_size, hidden)
    for i in range(config.num_layers):
        layer = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            expected[f"{layer}attention.self.{name}.weight"] = (hidden, hidden)
            expected[f"{layer}attention.self.{name}.bias"] = (hidden,)
        expected.update(
            {
                f"{layer}attention.output.dense.weight": (hidden, hidden),
                f"{layer}attention.output.dense.bias": (hidden,),
                f"{layer}attention.output.LayerNorm.weight": (hidden,),
                f"{layer}attention.output.LayerNorm.bias": (hidden,),
                f"{layer}intermediate.dense.weight": (inner, hidden),
                f"{layer}intermediate.dense.bias": (inner,),
                f"{layer}output.dense.weight": (hidden, inner),
                f"{layer}output.dense.bias": (hidden,),
                f"{layer}output.LayerNorm.weight": (hidden,),
                f"{layer}output.LayerNorm.bias": (hidden,),
            }
        )
    if config.num_labels:
        expected.update(
            {
                "pooler.dense.weight": (hidden, hidden),
                "pooler.dense.bias": (hidden,),
                "classifier.weight": (config.num_labels, hidden),
                "classifier.bias": (config.num_labels,),
            }
        )
    for name, shape in expected.items():
        if name not in weights:
            raise ValueError(f"{source}: tensor {prefix}{name} is missing from the weights")
        found = weights[name].shape
        if len(found) != len(shape) or any(
            s is not None and s != f for s, f in zip(shape, found, strict=False)
        ):
            raise ValueError(f"{source}: tensor {prefix}{name} has shape {found}, expected {shape}")
    return weights


class _GraphBuilder:
    """Accumulates nodes and initializers; each helper returns the name of its output."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self._count += 1
        output = f"{name}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


def build_graph(config: BertConfig, weights: dict[str, np.ndarray]) -> Any:
    """The ONNX ModelProto of a BERT encoder: inputs input_ids, attention_mask, token_type_ids
    (int64, [batch, sequence]); output last_hidden_state (float32, [batch, sequence, hidden]), or
    for a sequence classifier ``logits`` (float32, [batch, num_labels]): the pooler (tanh of a
    linear map of the first token) and the classifier, as BertForSequenceClassification computes them."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    hidden, heads, head_size = config.hidden_size, config.num_heads, config.head_size
    eps = config.layer_norm_eps

    def w(name: str) -> str:  # an initializer under the checkpoint's own name
        return g.constant(name, weights[name])

    def linear(x: str, prefix: str) -> str:
        # torch's Linear keeps weight as [out, in]; MatMul wants [in, out].
        matmul = g.op(
            "MatMul", [x, g.constant(prefix + ".weight_t", weights[prefix + ".weight"].T.copy())], prefix
        )
        return g.op("Add", [matmul, w(prefix + ".bias")], prefix + ".add")

    def layer_norm(x: str, prefix: str) -> str:
        return g.op(
            "LayerNormalization",
            [x, w(prefix + ".weight"), w(prefix + ".bias")],
            prefix,
            axis=-1,
            epsilon=eps,
        )

    # Embeddings. Positions are rows 0..sequence-1 of a constant [1, max_positions] table sliced
    # by the input's length: the layout ORT's EmbedLayerNormalization fusion matches.
    seq_len = g.op(
        "Gather",
        [g.op("Shape", ["input_ids"], "shape"), g.constant("one", np.array(1, np.int64))],
        "seq_len",
        axis=0,
    )
    seq_end = g.op("Unsqueeze", [seq_len, g.constant("axes0", np.array([0], np.int64))], "seq_end")
    positions = g.op(
        "Slice",
        [
            g.constant("position_ids", np.arange(config.max_position_embeddings, dtype=np.int64)[None, :]),
            g.constant("zero_1d", np.array([0], np.int64)),
            seq_end,
            g.constant("axes1", np.array([1], np.int64)),
            g.constant("step1", np.array([1], np.int64)),
        ],
        "position_slice",
    )
    x = g.op("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"], "word_embeddings")
    if config.type_vocab_size > 0:
        token_types = g.op(
            "Gather",
            [w("embeddings.token_type_embeddings.weight"), "token_type_ids"],
            "token_type_embeddings",
        )
        x = g.op("Add", [x, token_types], "embeddings.add")
    x = g.op(
        "Add",
        [x, g.op("Gather", [w("embeddings.position_embeddings.weight"), positions], "position_embeddings")],
        "embeddings.add_positions",
    )
    x = layer_norm(x, "embeddings.LayerNorm")

    # The extended attention mask, (1 - mask) * lowest float, shape [batch, 1, 1, sequence], added
    # to every layer's scores: transformers' BertModel, in the node order ORT's Attention fusion expects.
    mask = g.op(
        "Unsqueeze", ["attention_mask", g.constant("axes1_mask", np.array([1], np.int64))], "mask_unsqueeze"
    )
    mask = g.op("Unsqueeze", [mask, g.constant("axes2_mask", np.array([2], np.int64))], "mask_unsqueeze")
    mask = g.op("Cast", [mask], "mask_cast", to=TensorProto.FLOAT)
    mask = g.op("Sub", [g.constant("one_f", np.array(1.0, np.float32)), mask], "mask_invert")
    mask = g.op(
        "Mul", [mask, g.constant("mask_min", np.array(np.finfo(np.float32).min, np.float32))], "mask_scale"
    )

    split_heads = g.constant("split_heads_shape", np.array([0, 0, heads, head_size], np.int64))
    merge_heads = g.constant("merge_heads_shape", np.array([0, 0, hidden], np.int64))
    scale = g.constant("sqrt_head_size", np.array(math.sqrt(head_size), np.float32))
    sqrt2 = g.constant("sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = g.constant("one_gelu", np.array(1.0, np.float32))
    half = g.constant("half", np.array(0.5, np.float32))

    for i in range(config.num_layers):
        p = f"encoder.layer.{i}."

        def heads_of(name: str, perm: list[int], source: str = x, p: str = p) -> str:
            projected = linear(source, f"{p}attention.self.{name}")
            return g.op(
                "Transpose",
                [g.op("Reshape", [projected, split_heads], f"{p}{name}.split")],
                f"{p}{name}.heads",
                perm=perm,
            )

        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])  # already transposed for Q @ K^T
        v = heads_of("value", [0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k], f"{p}scores"), scale], f"{p}scaled")
        probs = g.op("Softmax", [g.op("Add", [scores, mask], f"{p}masked")], f"{p}probs", axis=-1)
        context = g.op(
            "Transpose", [g.op("MatMul", [probs, v], f"{p}context")], f"{p}context.t", perm=[0, 2, 1, 3]
        )
        context = g.op("Reshape", [context, merge_heads], f"{p}context.merge")
        attended = linear(context, f"{p}attention.output.dense")
        x = layer_norm(g.op("Add", [attended, x], f"{p}attention.residual"), f"{p}attention.output.LayerNorm")

        inner = linear(x, f"{p}intermediate.dense")
        # Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), as BERT computes it (not the tanh approximation).
        erf = g.op("Erf", [g.op("Div", [inner, sqrt2], f"{p}gelu.div")], f"{p}gelu.erf")
        gelu = g.op("Mul", [inner, g.op("Add", [erf, one], f"{p}gelu.add")], f"{p}gelu.mul")
        gelu = g.op("Mul", [gelu, half], f"{p}gelu")
        out = linear(gelu, f"{p}output.dense")
        x = layer_norm(g.op("Add", [out, x], f"{p}output.residual"), f"{p}output.LayerNorm")

    if config.num_labels:
        first = g.op("Gather", [x, g.constant("zero", np.array(0, np.int64))], "first_token", axis=1)
        pooled = g.op("Tanh", [linear(first, "pooler.dense")], "pooler.tanh")
        g.nodes.append(
            helper.make_node("Identity", [linear(pooled, "classifier")], ["logits"], name="logits")
        )
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", config.num_labels])
    else:
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
        output = helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
        )
    token_inputs = ["input_ids", "attention_mask"] + (
        ["token_type_ids"] if config.type_vocab_size > 0 else []
    )
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in token_inputs],
        [output],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fastembed_native.bert_graph"
    )
    model.ir_version = IR_VERSION
    return model


def write_onnx(
    source: str | Path,
    onnx_path: str | Path,
    *,
    external: bool = True,
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """Build ``source``'s graph and write it to ``onnx_path``.

    Args:
        external: keep the weights in ``<onnx_path>_data`` beside it (the default, which lets the
            engine's sessions share them, see :mod:`.data_file`); False: inside the graph file.
        weights: :func:`load_weights`' result, when the caller has it already.
    """
    config = bert_config(source)
    model = build_graph(config, weights if weights is not None else load_weights(source, config))
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    save_graph(model, onnx_path, external=None if external else False)
    return onnx_path


def build_fused_graph(config: BertConfig, weights: dict[str, np.ndarray]) -> Any:
    """The same encoder as :func:`build_graph` in ONNX Runtime's fused kernels (com.microsoft
    EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu): what ORT's offline
    transformer optimizer makes of :func:`build_graph`'s output (the test suite compares the two),
    written directly, in milliseconds, without the optimizer (and its sympy dependency).

    Right padding only (Attention takes each row's token count, as the optimizer's graph does):
    BERT tokenizers pad on the right.
    """
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    eps = config.layer_norm_eps
    ms = "com.microsoft"

    def w(name: str) -> str:
        return g.constant(name, weights[name])

    def w_t(name: str) -> str:  # the same transposed copy (and name) build_graph stores
        return g.constant(name + "_t", weights[name].T.copy())

    ids = g.op("Cast", ["input_ids"], "input_ids_int32", to=TensorProto.INT32)
    mask = g.op("Cast", ["attention_mask"], "attention_mask_int32", to=TensorProto.INT32)
    types = ""
    if config.type_vocab_size > 0:
        types = g.op("Cast", ["token_type_ids"], "token_type_ids_int32", to=TensorProto.INT32)
    embedded, mask_index = "embeddings", "mask_index"
    g.nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                ids,
                types,
                w("embeddings.word_embeddings.weight"),
                w("embeddings.position_embeddings.weight"),
                w("embeddings.token_type_embeddings.weight") if types else "",
                w("embeddings.LayerNorm.weight"),
                w("embeddings.LayerNorm.bias"),
                mask,
            ],
            [embedded, mask_index],
            name="EmbedLayerNormalization",
            domain=ms,
            epsilon=eps,
        )
    )
    x = embedded
    lowest = float(np.finfo(np.float32).min)  # the plain graph's mask value
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}."
        qkv = [f"{p}attention.self.{name}" for name in ("query", "key", "value")]
        qkv_weight = g.constant(
            f"{p}attention.self.qkv_weight", np.concatenate([weights[n + ".weight"].T for n in qkv], 1)
        )
        qkv_bias = g.constant(
            f"{p}attention.self.qkv_bias", np.concatenate([weights[n + ".bias"] for n in qkv])
        )
        context = g.op(
            "Attention",
            [x, qkv_weight, qkv_bias, mask_index],
            f"{p}attention",
            domain=ms,
            num_heads=config.num_heads,
            mask_filter_value=lowest,
        )
        attended = g.op(
            "MatMul", [context, w_t(f"{p}attention.output.dense.weight")], f"{p}attention.output.dense"
        )
        x = g.op(
            "SkipLayerNormalization",
            [
                attended,
                x,
                w(f"{p}attention.output.LayerNorm.weight"),
                w(f"{p}attention.output.LayerNorm.bias"),
                w(f"{p}attention.output.dense.bias"),
            ],
            f"{p}attention.output.LayerNorm",
            domain=ms,
            epsilon=eps,
        )
        inner = g.op("MatMul", [x, w_t(f"{p}intermediate.dense.weight")], f"{p}intermediate.dense")
        gelu = g.op("BiasGelu", [inner, w(f"{p}intermediate.dense.bias")], f"{p}gelu", domain=ms)
        out = g.op("MatMul", [gelu, w_t(f"{p}output.dense.weight")], f"{p}output.dense")
        x = g.op(
            "SkipLayerNormalization",
            [
                out,
                x,
                w(f"{p}output.LayerNorm.weight"),
                w(f"{p}output.LayerNorm.bias"),
                w(f"{p}output.dense.bias"),
            ],
            f"{p}output.LayerNorm",
            domain=ms,
            epsilon=eps,
        )
    g.nodes[-1].output[0] = "last_hidden_state"  # the last SkipLayerNormalization, as the optimizer leaves it
    token_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    graph = helper.make_graph(
        g.nodes,
        "bert_fused",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in token_inputs],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", config.hidden_size]
            )
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(ms, 1)],
        producer_name="fastembed_native.bert_graph",
    )
    model.ir_version = IR_VERSION
    return model


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to a relative error below 1.2e-7 (Numerical Recipes' Chebyshev erfc), vectorised:
    ``math.erf`` element by element costs seconds on a long text; float32 graphs are no closer."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def reference_hidden_states(
    config: BertConfig,
    weights: dict[str, np.ndarray],
    texts_ids: list[np.ndarray],
    texts_types: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """last_hidden_state of each unpadded text (``texts_ids``: 1-D token-id arrays; ``texts_types``
    their token type ids, zeros when None), in float64 numpy.

    An independent path to the graph's output: the build-time parity check without torch.
    """
    f = {k: v.astype(np.float64) for k, v in weights.items()}

    def layer_norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_eps) * f[prefix + ".weight"] + f[prefix + ".bias"]

    def linear(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ f[prefix + ".weight"].T + f[prefix + ".bias"]

    def forward(ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        n = len(ids)
        x = f["embeddings.word_embeddings.weight"][ids] + f["embeddings.position_embeddings.weight"][:n]
        if config.type_vocab_size > 0:
            x = x + f["embeddings.token_type_embeddings.weight"][types]
        x = layer_norm(x, "embeddings.LayerNorm")
        for i in range(config.num_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                linear(x, f"{p}attention.self.{name}")
                .reshape(n, config.num_heads, config.head_size)
                .transpose(1, 0, 2)
                for name in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(config.head_size)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = ((scores / scores.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, -1)
            x = layer_norm(
                linear(context, f"{p}attention.output.dense") + x, f"{p}attention.output.LayerNorm"
            )
            inner = linear(x, f"{p}intermediate.dense")
            gelu = inner * 0.5 * (1.0 + _erf(inner / math.sqrt(2.0)))
            x = layer_norm(linear(gelu, f"{p}output.dense") + x, f"{p}output.LayerNorm")
        return x

    if texts_types is None:
        texts_types = [np.zeros(len(ids), dtype=np.int64) for ids in texts_ids]
    return [
        forward(np.asarray(ids, dtype=np.int64), np.asarray(types, dtype=np.int64))
        for ids, types in zip(texts_ids, texts_types, strict=True)
    ]


def reference_logits(model_dir: Path, source: Path, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The parity pairs' logits by the float64 numpy forward pass over ``source``'s weights, the
    pairs tokenized as ``model_dir``'s tokenizer tokenizes them (shape [pairs, num_labels])."""
    from tokenizers import Tokenizer

    settings = read_model_dir(model_dir, task="sequence-classification")
    tokenizer = Tokenizer.from_file(str(settings.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=settings.max_length)
    config = bert_config(source)
    encodings = tokenizer.encode_batch(parity_pairs())
    states = reference_hidden_states(
        config, weights, [np.array(e.ids) for e in encodings], [np.array(e.type_ids) for e in encodings]
    )
    f = {
        k: weights[k].astype(np.float64)
        for k in ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")
    }
    pooled = np.tanh(np.stack([s[0] for s in states]) @ f["pooler.dense.weight"].T + f["pooler.dense.bias"])
    return pooled @ f["classifier.weight"].T + f["classifier.bias"]


@dataclass(frozen=True)
class BuildReport(ExportReport):
    """An :class:`ExportReport` that also says what the build was checked against."""

    reference: str = "sentence-transformers"


def reference_embeddings(
    model_dir: Path,
    source: Path,
    texts: tuple[str, ...] = PARITY_TEXTS,
    weights: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """``texts`` embedded by the float64 numpy forward pass over ``source``'s weights, tokenized,
    pooled and normalised as ``model_dir``'s config files say (shape [len(texts), hidden])."""
    from tokenizers import Tokenizer

    settings = read_model_dir(model_dir)
    tokenizer = Tokenizer.from_file(str(settings.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=settings.max_length)
    config = bert_config(source)
    ids = [np.array(encoding.ids, dtype=np.int64) for encoding in tokenizer.encode_batch(list(texts))]
    states = reference_hidden_states(config, weights or load_weights(source, config), ids)
    pooled = {"mean": lambda s: s.mean(0), "cls": lambda s: s[0], "last_token": lambda s: s[-1]}[
        settings.pooling
    ]
    rows = np.stack([pooled(s) for s in states])
    if settings.normalize:
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def _require_build_deps() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "safetensors") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"building a BERT model needs {', '.join(missing)}, which is not installed; "
            "run: pip install 'fastembed-native[default-model]'"
        )


def _sentence_transformers_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers"))


#: A fused graph changes the arithmetic order, never the result beyond this.
_FUSED_MIN_COSINE = 0.99999


def write_fused(model_dir: Path, config: BertConfig, weights: dict[str, np.ndarray]) -> Path | None:
    """Add ``FUSED_FILE`` to ``model_dir`` (whose plain graph keeps its weights in
    ``onnx/model.onnx_data``), sharing every tensor it can with the plain graph; kept only if each
    parity text embeds alone (the single-batch path it serves) as the plain graph embeds it.

    Returns its path, or None (and no file) on a mismatch.
    """
    from .fuse import share_weights

    plain_path = model_dir / "onnx" / "model.onnx"
    target = model_dir / FUSED_FILE
    staging = target.with_name(".fusing." + target.name)
    fused = build_fused_graph(config, weights)
    share_weights(fused, plain_path, plain_path.with_name(plain_path.name + "_data"))
    staging.write_bytes(fused.SerializeToString())
    try:
        texts = list(PARITY_TEXTS)
        plain = Embedder(model_dir, fused=False, parallel_runs=1).embed(texts)
        candidate = Embedder(model_dir, onnx_file=str(staging.relative_to(model_dir)))
        alone = np.vstack([candidate.embed([text]) for text in texts])
        if cosine_rows(alone, plain).min() < _FUSED_MIN_COSINE:
            return None
        staging.rename(target)
        return target
    finally:
        staging.unlink(missing_ok=True)


def build_bert_model(
    source: str | Path,
    output: str | Path,
    *,
    min_cosine: float = 0.9999,
    fuse: bool = True,
    reference: str = "auto",
) -> BuildReport:
    """Build a model directory at ``output`` from the BERT checkpoint ``source``, without torch.

    Like :func:`~fastembed_native.models.export.export_model` it writes ``onnx/model.onnx``, the
    tokenizer and sentence-transformers configs into a staging folder beside ``output`` and moves
    it into place only after the parity check passes. The weights go to ``onnx/model.onnx_data``;
    with ``fuse``, ``onnx/model_fused.onnx`` (:func:`build_fused_graph`) shares them.

    Args:
        reference: what the parity check compares with: "sentence-transformers" (needs torch),
            "numpy" (the float64 forward pass of :func:`reference_hidden_states`), or "auto"
            (sentence-transformers when it is installed, else numpy).

    Raises:
        ValueError: ``source`` is not a BERT checkpoint this builder reads (see :func:`unsupported_reason`).
        ModelLoadError: parity below ``min_cosine``, or ``onnx`` / ``safetensors`` missing.
        FileExistsError: ``output`` exists already.
    """
    source, output = Path(source), Path(output)
    config = bert_config(source)  # refuse unsupported checkpoints before any work
    _require_build_deps()
    if reference == "auto":
        reference = "sentence-transformers" if _sentence_transformers_installed() else "numpy"
    if reference not in ("sentence-transformers", "numpy"):
        raise ValueError(f"reference must be 'auto', 'sentence-transformers' or 'numpy', not {reference!r}")
    if output.exists():
        raise FileExistsError(f"{output} exists already")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        model = staging / "model"
        weights = load_weights(source, config)
        write_onnx(source, model / "onnx" / "model.onnx", weights=weights)
        for name in CONFIG_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, model / name)
        for pooling_dir in source.glob("*_Pooling"):
            shutil.copytree(pooling_dir, model / pooling_dir.name)
        if config.num_labels:  # a cross-encoder: logits, checked as scores; no fused graph (yet)
            if reference == "numpy":
                ours = Scorer(model, parallel_runs=1).predict(parity_pairs(), raw_scores=True)
                differences = np.abs(ours - reference_logits(model, source, weights)).max(axis=1)
            else:
                differences = score_parity(model, source).max(axis=1)
            worst_difference = float(differences.max())
            if worst_difference > SCORE_TOLERANCE:
                raise ModelLoadError(
                    f"the graph built from {source} disagrees with {reference}: score difference "
                    f"{worst_difference:.2e} > {SCORE_TOLERANCE} (pair {int(differences.argmax())})"
                )
            model.rename(output)
            return BuildReport(output, float("nan"), (), worst_difference, reference)
        if reference == "numpy":
            ours = Embedder(model, fused=False, parallel_runs=1).embed(list(PARITY_TEXTS))
            cosines = cosine_rows(ours, reference_embeddings(model, source, weights=weights))
        else:
            cosines = parity_check(model, source)
        worst = float(cosines.min())
        if worst < min_cosine:
            raise ModelLoadError(
                f"the graph built from {source} disagrees with {reference}: minimum cosine {worst:.6f} < "
                f"{min_cosine} (text {int(cosines.argmin())} of the parity set)"
            )
        if fuse:
            write_fused(model, config, weights)
        model.rename(output)
        return BuildReport(output, worst, tuple(float(c) for c in cosines), reference=reference)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
