"""Models and helpers shared by the framework adapters' tests (tests/test_integrations_*.py).

- :func:`tiny_reranker`: a tiny random BERT cross-encoder on all-MiniLM-L6-v2's real WordPiece tokenizer,
  built without torch by the package's own BERT builder (about a second), once per test process.
- :func:`tiny_splade`: a tiny random SPLADE (sentence-transformers' ``SparseEncoder``, optionally
  inference-free: a static-weight query side), exported by ``export_model``; needs torch (about 10 s).
- :data:`CORPUS` and :data:`QUERIES`: a few passages with one obvious answer per query, which the real
  MiniLM finds first; the frameworks' retrieval flows are checked on them.
- :func:`no_network`: a fixture that fails any connection off this machine, so an adapter test that
  passes is one that ran offline (telemetry, hub downloads and tokenizer fetches would show here).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import source_checkout

CORPUS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Python is a high-level programming language known for its readability.",
    "The Great Wall of China stretches thousands of kilometres across northern China.",
    "Espresso is coffee brewed by forcing hot water through finely ground beans.",
    "A black hole is a region of spacetime where gravity prevents anything from escaping.",
]
#: query -> the index in CORPUS of its passage (MiniLM ranks it first among the six).
QUERIES = {
    "Which tower stands in Paris?": 0,
    "How do plants make energy from sunlight?": 1,
    "a readable programming language": 2,
    "how is espresso coffee made": 4,
}

_BUILT: dict[str, Path] = {}


def tiny_reranker(root: Path) -> Path:
    """A BertForSequenceClassification (hidden 32, 2 layers, one label) with random weights and
    MiniLM's tokenizer, built under ``root`` by ``build_bert_model`` (parity-checked against numpy).

    Its scores mean nothing; tests compare an adapter's scores and order with TextCrossEncoder's."""
    if "reranker" in _BUILT:
        return _BUILT["reranker"]
    from safetensors.numpy import save_file

    from fastembed_native.models.bert_graph import build_bert_model

    source = source_checkout()
    checkpoint = root / "tiny-reranker-checkpoint"
    checkpoint.mkdir(parents=True)
    hidden, inner, layers, vocab, positions = 32, 64, 2, 30522, 512
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "hidden_size": hidden,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "pad_token_id": 0,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
    }
    (checkpoint / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(source / name, checkpoint / name)
    rng = np.random.default_rng(7)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {
        "bert.embeddings.word_embeddings.weight": weight(vocab, hidden),
        "bert.embeddings.position_embeddings.weight": weight(positions, hidden),
        "bert.embeddings.token_type_embeddings.weight": weight(2, hidden),
        "bert.embeddings.LayerNorm.weight": np.ones(hidden, np.float32),
        "bert.embeddings.LayerNorm.bias": np.zeros(hidden, np.float32),
        "bert.pooler.dense.weight": weight(hidden, hidden),
        "bert.pooler.dense.bias": weight(hidden),
        "classifier.weight": weight(1, hidden, scale=2.0),
        "classifier.bias": np.zeros(1, np.float32),
    }
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors[f"{p}attention.self.{name}.weight"] = weight(hidden, hidden)
            tensors[f"{p}attention.self.{name}.bias"] = weight(hidden)
        tensors |= {
            f"{p}attention.output.dense.weight": weight(hidden, hidden),
            f"{p}attention.output.dense.bias": weight(hidden),
            f"{p}attention.output.LayerNorm.weight": np.ones(hidden, np.float32),
            f"{p}attention.output.LayerNorm.bias": np.zeros(hidden, np.float32),
            f"{p}intermediate.dense.weight": weight(inner, hidden),
            f"{p}intermediate.dense.bias": weight(inner),
            f"{p}output.dense.weight": weight(hidden, inner),
            f"{p}output.dense.bias": weight(hidden),
            f"{p}output.LayerNorm.weight": np.ones(hidden, np.float32),
            f"{p}output.LayerNorm.bias": np.zeros(hidden, np.float32),
        }
    save_file(tensors, str(checkpoint / "model.safetensors"))
    built = build_bert_model(checkpoint, root / "tiny-reranker", reference="numpy").model_dir
    _BUILT["reranker"] = built
    return built


def tiny_splade(root: Path, *, inference_free: bool = False) -> Path:
    """A tiny random SPLADE (max pooling of relu; tests/test_sparse.py's recipe) saved by
    sentence-transformers and exported under ``root``; with ``inference_free`` its query side is
    sentence-transformers' ``SparseStaticEmbedding`` (a lookup of static weights, no model run).

    Its weights are random: tests compare an adapter's vectors and order with SparseTextEmbedding's."""
    key = f"splade-{inference_free}"
    if key in _BUILT:
        return _BUILT[key]
    from test_sparse import _splade

    from fastembed_native.models import export_model

    source = _splade(root, "max", "relu", "Transformer")
    if inference_free:
        import torch
        from sentence_transformers import SparseEncoder
        from sentence_transformers.base.modules import Router
        from sentence_transformers.base.modules.transformer import Transformer
        from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
        torch.manual_seed(3)
        weights = torch.rand(tokenizer.vocab_size) * (torch.rand(tokenizer.vocab_size) > 0.3)
        router = Router.for_query_document(
            query_modules=[SparseStaticEmbedding(tokenizer=tokenizer, weight=weights, frozen=True)],
            document_modules=[Transformer(str(source), transformer_task="fill-mask"), SpladePooling("max")],
        )
        source = root / "inference-free"
        SparseEncoder(modules=[router], device="cpu").save(str(source))
    built = export_model(source, root / "splade-onnx").model_dir
    _BUILT[key] = built
    return built


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that leaves this machine (loopback and Unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address) -> None:  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise AssertionError(f"an adapter test tried to reach {address} (tests run offline)")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
