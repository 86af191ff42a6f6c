"""The torch-free BERT builder (fastembed_native.models.bert_graph): the graph against transformers'
own BertModel on small random checkpoints, against sentence-transformers on the real
all-MiniLM-L6-v2, its refusals, and the fused variant that shares its weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import VOCAB, build_tokenizer, source_checkout

from fastembed_native import TextEmbedding
from fastembed_native.engine import FUSED_FILE
from fastembed_native.models import PARITY_TEXTS, cosine_rows
from fastembed_native.models.bert_graph import (
    bert_config,
    build_bert_model,
    build_fused_graph,
    build_graph,
    load_weights,
    unsupported_reason,
)
from fastembed_native.models.data_file import data_files

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "", "fox", "dog dog dog dog dog dog"]


def write_checkpoint(root: Path, *, seed: int = 0, prefix: str = "", **config_overrides) -> Path:
    """A random BertModel (transformers, torch) saved as a sentence-transformers checkout."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        layer_norm_eps=1e-7,
        **config_overrides,
    )
    # BertForMaskedLM saves its encoder under "bert.": the prefix fine-tuned checkpoints carry.
    model = (BertForMaskedLM if prefix else BertModel)(config).eval()
    with torch.no_grad():  # random LayerNorm affine too, so a swapped weight/bias shows
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.copy_(torch.randn_like(param) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    model.save_pretrained(root, safe_serialization=True)
    build_tokenizer().save(str(root / "tokenizer.json"))
    special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    (root / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 16, **special})
    )
    (root / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    return root


def torch_hidden_states(checkpoint: Path, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        )
    return out.last_hidden_state.numpy()


def run_graph(checkpoint: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    config = bert_config(checkpoint)
    proto = build_graph(config, load_weights(checkpoint, config))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feeds)[0]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "checkpoint")


PADDED = {
    # Two texts, the second padded (mask 0) and with segment-B tokens: the mask and the
    # token-type table both matter.
    "input_ids": np.array([[2, 4, 5, 6, 7, 3], [2, 8, 3, 0, 0, 0]], np.int64),
    "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int64),
    "token_type_ids": np.array([[0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0]], np.int64),
}


@pytest.mark.parametrize("prefix", ["", "bert."], ids=["BertModel", "bert-prefixed"])
def test_graph_matches_transformers_bert(tmp_path, prefix):
    checkpoint = write_checkpoint(tmp_path / "c", prefix=prefix, seed=1)
    keys = json.loads((checkpoint / "config.json").read_text())
    assert keys["model_type"] == "bert"
    ours = run_graph(checkpoint, PADDED)
    reference = torch_hidden_states(
        checkpoint, PADDED["input_ids"], PADDED["attention_mask"], PADDED["token_type_ids"]
    )
    valid = PADDED["attention_mask"].astype(bool)  # padded positions are free to differ
    np.testing.assert_allclose(ours[valid], reference[valid], atol=2e-5, rtol=1e-4)


def test_graph_interface(checkpoint):
    config = bert_config(checkpoint)
    graph = build_graph(config, load_weights(checkpoint, config)).graph
    onnx.checker.check_model(build_graph(config, load_weights(checkpoint, config)))
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]
    (output,) = graph.output
    assert output.name == "last_hidden_state"
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == [
        "batch",
        "sequence",
        32,
    ]
    ops = {n.op_type for n in graph.node}
    assert {"Erf", "LayerNormalization", "Softmax"} <= ops and not any(n.domain for n in graph.node)


def test_built_model_dir_embeds_like_the_numpy_reference(checkpoint, tmp_path):
    report = build_bert_model(checkpoint, tmp_path / "model", reference="numpy", fuse=False)
    assert report.reference == "numpy" and report.min_cosine >= 0.9999
    model = TextEmbedding(report.model_dir)
    assert model.dim == 32 and model.max_length == 16 and model.pooling == "mean"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "model"]  # no staging left


def test_built_model_dir_matches_sentence_transformers(checkpoint, tmp_path):
    from sentence_transformers import SentenceTransformer

    report = build_bert_model(checkpoint, tmp_path / "model", reference="sentence-transformers", fuse=False)
    assert report.reference == "sentence-transformers" and report.min_cosine >= 0.9999
    reference = SentenceTransformer(str(checkpoint), device="cpu").encode(TEXTS)
    assert cosine_rows(TextEmbedding(report.model_dir).embed(TEXTS), reference).min() >= 0.9999


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model_type": "roberta"}, "model_type 'roberta' is not BERT"),
        ({"hidden_act": "gelu_new"}, "hidden_act='gelu_new'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
        ({"is_decoder": True}, "is_decoder=True"),
    ],
    ids=["roberta", "gelu_new", "relative-positions", "decoder"],
)
def test_refuses_what_it_cannot_build(checkpoint, tmp_path, change, reason):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, **change}))
    assert reason in unsupported_reason(checkpoint)
    with pytest.raises(ValueError, match=f"cannot build {checkpoint} without torch: .*{reason}"):
        build_bert_model(checkpoint, tmp_path / "model", reference="numpy")
    assert not (tmp_path / "model").exists()


def test_refuses_a_checkpoint_without_safetensors(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    assert "no model.safetensors" in unsupported_reason(checkpoint)


def test_names_a_missing_or_misshapen_tensor(checkpoint):
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(checkpoint / "model.safetensors"))
    config = bert_config(checkpoint)
    del weights["encoder.layer.1.output.dense.bias"]
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(ValueError, match=r"encoder\.layer\.1\.output\.dense\.bias is missing"):
        load_weights(checkpoint, config)
    weights["encoder.layer.1.output.dense.bias"] = np.zeros(5, np.float32)
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(ValueError, match=r"output\.dense\.bias has shape \(5,\), expected \(32,\)"):
        load_weights(checkpoint, config)


def test_fp16_weights_are_widened(checkpoint):
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(checkpoint / "model.safetensors"))
    save_file(
        {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in weights.items()},
        str(checkpoint / "model.safetensors"),
    )
    config = bert_config(checkpoint)
    loaded = load_weights(checkpoint, config)
    assert {v.dtype for v in loaded.values()} == {np.dtype(np.float32)}


def op_counts(proto) -> dict[str, int]:
    """Nodes per op type; Identity (a no-op some optimizer levels keep) is left out."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type != "Identity":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_fused_graph_is_what_the_ort_optimizer_makes_and_shares_the_weights(checkpoint, tmp_path):
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    model_dir = build_bert_model(checkpoint, tmp_path / "model", reference="numpy", fuse=True).model_dir
    onnx_dir = model_dir / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.onnx", "model.onnx_data", "model_fused.onnx"]
    fused = onnx.load(str(model_dir / FUSED_FILE), load_external_data=False)
    optimized = optimize_model(str(onnx_dir / "model.onnx"), model_type="bert", num_heads=4, hidden_size=32)
    assert op_counts(fused) == op_counts(optimized.model)
    assert {
        "Attention": 2,
        "SkipLayerNormalization": 4,
        "EmbedLayerNormalization": 1,
        "BiasGelu": 2,
    }.items() <= (op_counts(fused).items())
    assert [p.name for p in data_files(model_dir / FUSED_FILE)] == ["model.onnx_data"]
    # The same numbers as the optimizer's graph and the plain graph, padding included.
    outputs = [
        ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(["last_hidden_state"], PADDED)[0]
        for graph in (
            str(model_dir / FUSED_FILE),
            optimized.model.SerializeToString(),
            str(onnx_dir / "model.onnx"),
        )
    ]
    valid = PADDED["attention_mask"].astype(bool)
    for other in outputs[1:]:
        np.testing.assert_allclose(outputs[0][valid], other[valid], atol=2e-5, rtol=1e-4)
    # Single-batch calls (one text, or a padded batch) run on the fused graph: same vectors.
    model = TextEmbedding(model_dir)
    plain = TextEmbedding(model_dir, fused=False)
    assert model.single_batch_onnx_path.name == "model_fused.onnx"
    alone = np.vstack([model.embed([t]) for t in TEXTS])
    assert cosine_rows(alone, plain.embed(TEXTS)).min() >= 0.99999
    assert cosine_rows(model.embed(TEXTS), plain.embed(TEXTS)).min() >= 0.99999


# -- the real model -------------------------------------------------------------------------------
@pytest.mark.real_model
def test_minilm_without_torch_matches_sentence_transformers(tmp_path, sentence_transformer):
    from test_parity import real_corpus

    report = build_bert_model(source_checkout(), tmp_path / "minilm", reference="numpy")
    assert report.min_cosine >= 0.9999
    texts = list(PARITY_TEXTS) + real_corpus()
    reference = sentence_transformer.encode(texts, batch_size=64)
    model = TextEmbedding(report.model_dir)
    assert cosine_rows(model.embed(texts), reference).min() >= 0.9999
    assert cosine_rows(np.vstack([model.embed([t]) for t in texts[:40]]), reference[:40]).min() >= 0.9999
    sizes = {p.name: p.stat().st_size for p in (report.model_dir / "onnx").iterdir()}
    # One copy of the weights (86 MB) plus the fused graph's own concatenated QKV weights (~11 MB).
    assert sizes["model_fused.onnx"] < 0.15 * sizes["model.onnx_data"], sizes


@pytest.mark.real_model
def test_fused_graph_forms_like_the_optimum_export(tmp_path):
    from onnxruntime.transformers.optimizer import optimize_model

    from fastembed_native.models.bert_graph import write_onnx

    path = write_onnx(source_checkout(), tmp_path / "model.onnx")
    stats = optimize_model(str(path), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    fused = {k: v for k, v in stats.get_fused_operator_statistics().items() if v}
    # What the optimum export of the same checkpoint fuses to (measured: the same four counts).
    assert fused == {
        "EmbedLayerNormalization": 1,
        "Attention": 6,
        "BiasGelu": 6,
        "SkipLayerNormalization": 12,
    }
    # ... and what the builder writes directly as onnx/model_fused.onnx, op for op.
    config = bert_config(source_checkout())
    assert op_counts(build_fused_graph(config, load_weights(source_checkout(), config))) == op_counts(
        stats.model
    )


def test_missing_build_dependency_is_named(checkpoint, tmp_path, monkeypatch):
    import importlib.util

    from fastembed_native.errors import ModelLoadError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "safetensors" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelLoadError, match=r"needs safetensors.*fastembed-native\[default-model\]"):
        build_bert_model(checkpoint, tmp_path / "model", reference="numpy")
    assert not (tmp_path / "model").exists()
