"""int8 variants (fastembed_native.models.quantize): the rowwise recipe on a tiny random BERT, the
recipe file beside it, ``quantized=True``, ``inspect``, calibration sources and ``bench quality``.

The tiny model (hidden 32, 2 layers, MiniLM's tokenizer, built by the torch-free BERT builder) has
one LayerNorm channel scaled up, so the query/key/value input has an outlier channel as real BERTs
do and the float32 outlier path is exercised."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import source_checkout

from fastembed_native import TextEmbedding
from fastembed_native.engine import INT8_FILE, Embedder
from fastembed_native.models import cosine_rows, inspect_model
from fastembed_native.models.quantize import read_recipe, recipe_path

TEXTS = [
    "hello world",
    "int8 keeps retrieval quality when activations are scaled per token",
    "",
    "A longer paragraph about embeddings, retrieval, calibration and the virtues of measuring. " * 4,
]
CALIBRATION = [
    f"calibration text number {i}:" + " some words of ordinary prose" * (i % 7 + 1) for i in range(48)
]
HIDDEN, INNER, LAYERS, VOCAB, POSITIONS = 32, 64, 2, 30522, 512


def tiny_checkpoint(root: Path) -> Path:
    """A BertModel checkpoint with random weights, MiniLM's tokenizer and mean pooling + Normalize."""
    from safetensors.numpy import save_file

    source = source_checkout()
    checkpoint = root / "tiny-bert-checkpoint"
    checkpoint.mkdir(parents=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "intermediate_size": INNER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 2,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    }
    (checkpoint / "config.json").write_text(json.dumps(config))
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
    ):
        shutil.copy2(source / name, checkpoint / name)
    shutil.copytree(source / "1_Pooling", checkpoint / "1_Pooling")
    (checkpoint / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": True})
    )
    rng = np.random.default_rng(20)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    gamma = np.ones(HIDDEN, np.float32)
    gamma[3] = 12.0  # an outlier channel in what the first layer's query/key/value read
    tensors = {
        "embeddings.word_embeddings.weight": weight(VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": weight(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": weight(2, HIDDEN),
        "embeddings.LayerNorm.weight": gamma,
        "embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors[f"{p}attention.self.{name}.weight"] = weight(HIDDEN, HIDDEN)
            tensors[f"{p}attention.self.{name}.bias"] = weight(HIDDEN)
        tensors |= {
            f"{p}attention.output.dense.weight": weight(HIDDEN, HIDDEN),
            f"{p}attention.output.dense.bias": weight(HIDDEN),
            f"{p}attention.output.LayerNorm.weight": np.ones(HIDDEN, np.float32),
            f"{p}attention.output.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
            f"{p}intermediate.dense.weight": weight(INNER, HIDDEN),
            f"{p}intermediate.dense.bias": weight(INNER),
            f"{p}output.dense.weight": weight(HIDDEN, INNER),
            f"{p}output.dense.bias": weight(HIDDEN),
            f"{p}output.LayerNorm.weight": np.ones(HIDDEN, np.float32),
            f"{p}output.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
        }
    save_file(tensors, str(checkpoint / "model.safetensors"))
    return checkpoint


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastembed_native.models import build_bert_model

    root = tmp_path_factory.mktemp("quantize")
    return build_bert_model(
        tiny_checkpoint(root), root / "tiny-bert", reference="numpy", fuse=False
    ).model_dir


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "texts.txt"
    path.write_text("\n".join(CALIBRATION), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def quantized(tiny_bert: Path, calibration_file: Path) -> Path:
    """A copy of the tiny model with its rowwise int8 file."""
    from fastembed_native.models import quantize_model

    model = tiny_bert.parent / "tiny-bert-int8"
    shutil.copytree(tiny_bert, model)
    quantize_model(model, calibration=calibration_file, measure_speed=False)
    return model


def test_rowwise_int8_is_close_to_fp32_smaller_and_says_how_it_was_made(quantized, tiny_bert):
    recipe = read_recipe(quantized / INT8_FILE)
    assert recipe is not None and recipe_path(quantized / INT8_FILE).name == "model_int8.json"
    assert recipe["method"] == "rowwise" and recipe["matmuls"] == 6 * LAYERS
    assert recipe["outlier_channels"]["count"] >= 1  # the scaled LayerNorm channel stays float32
    assert recipe["embedding_table"].startswith("int8") and "texts.txt" in recipe["calibration"]
    assert recipe["size_mb"]["int8"] < 0.35 * recipe["size_mb"]["fp32"]  # the table is most of it
    cos = cosine_rows(
        TextEmbedding(tiny_bert).embed(TEXTS), TextEmbedding(quantized, quantized=True).embed(TEXTS)
    )
    assert cos.min() > 0.99, cos
    assert recipe["parity"]["min_cosine"] > 0.99


def test_rowwise_vectors_do_not_depend_on_the_rest_of_the_batch(quantized):
    """Each token's activations are scaled by their own row: a text's int8 vector is the same alone
    or batched with much longer texts (ONNX Runtime's dynamic quantization scales per batch)."""
    model = TextEmbedding(quantized, quantized=True)
    alone = np.vstack([model.embed([text]) for text in TEXTS])
    together = model.embed(TEXTS * 3, batch_size=len(TEXTS) * 3)[: len(TEXTS)]
    np.testing.assert_allclose(alone, together, atol=2e-5)


def test_any_onnx_runtime_runs_the_int8_file_and_our_kernels_match_it(quantized):
    """The int8 graph's row ops are model-local functions: plain onnxruntime inlines their standard
    bodies, our sessions run the C++ kernels (models/row_quantize.py), and the two agree bit for bit."""
    import onnx
    import onnxruntime as ort

    from fastembed_native import _core
    from fastembed_native.models import row_quantize

    path = quantized / INT8_FILE
    assert set(row_quantize.OPS) <= {n.op_type for n in onnx.load(str(path)).graph.node}
    ids = np.array([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], np.int64)
    mask = (ids != 0).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = plain.run(["last_hidden_state"], {i.name: feeds[i.name] for i in plain.get_inputs()})[0]
    ours = _core.Session(str(path)).run(ids, mask, np.zeros_like(ids), ["last_hidden_state"])[0]
    np.testing.assert_array_equal(np.array(ours)[mask == 1], want[mask == 1])


def test_quantized_true_picks_the_int8_file_or_says_how_to_make_it(quantized, tiny_bert):
    np.testing.assert_array_equal(
        TextEmbedding(quantized, quantized=True).embed(TEXTS),
        TextEmbedding(quantized, onnx_file=INT8_FILE).embed(TEXTS),
    )
    with pytest.raises(FileNotFoundError, match="fastembed-native quantize"):
        TextEmbedding(tiny_bert, quantized=True)
    with pytest.raises(ValueError, match="not both"):
        TextEmbedding(quantized, quantized=True, onnx_file="onnx/model.onnx")


def test_dynamic_method_is_kept_for_comparison(tiny_bert, tmp_path):
    from fastembed_native.models import quantize_model

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    report = quantize_model(model, method="dynamic", measure_speed=False)
    assert report.recipe["method"] == "dynamic" and read_recipe(report.path)["method"] == "dynamic"
    assert (
        cosine_rows(Embedder(model).embed(TEXTS), Embedder(model, onnx_file=INT8_FILE).embed(TEXTS)).min()
        > 0.9
    )
    with pytest.raises(ValueError, match="method"):
        quantize_model(model, method="static")


def test_inspect_says_how_a_file_was_quantized(quantized, tiny_bert):
    report = inspect_model(quantized / INT8_FILE)
    assert report["quantization"].startswith("rowwise: int8 per-token activations")
    assert "retrieval not measured" in report["quantization"]
    assert inspect_model(quantized)["int8"].startswith(f"{INT8_FILE}: rowwise")
    assert "fastembed-native quantize" in inspect_model(tiny_bert)["int8"]
    assert "quantization" not in inspect_model(tiny_bert)


def test_calibration_sources(tmp_path, monkeypatch, calibration_file):
    from fastembed_native.models import calibration

    texts, source = calibration.calibration_texts(calibration_file, count=10)
    assert len(texts) == 10 and set(texts) <= set(CALIBRATION) and "texts.txt" in source
    assert calibration.calibration_texts(calibration_file, count=10)[0] == texts  # seeded
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no text"):
        calibration.calibration_texts(empty)
    monkeypatch.setattr(calibration, "APT_PACKAGES", str(tmp_path / "none-*.lz4"))
    texts, source = calibration.calibration_texts(count=5)
    assert source.startswith("licence files") and len(texts) == 5 and all(len(t) >= 40 for t in texts)


def test_bench_quality_quick_run_records_retrieval_in_the_recipe(quantized, tmp_path):
    from fastembed_native.bench import quality

    eval_set = quality.load_eval_set(quick=True, queries=50, cache=tmp_path)
    assert len(eval_set.queries) == 50 and len(eval_set.candidates) > 100
    assert all(0 <= a < len(eval_set.candidates) for a in eval_set.answers)
    report = quality.evaluate(quantized, [INT8_FILE], eval_set, cache=tmp_path)
    entry = report["variants"][INT8_FILE]
    assert entry["cosine_texts"] == 50 + len(eval_set.candidates) and entry["min_cosine"] > 0.95
    low, high = entry["mrr_difference_95"]
    assert low <= entry["mrr_difference"] <= high
    again = quality.load_eval_set(quick=True, queries=50, cache=tmp_path)  # from the cache file
    assert again.queries == eval_set.queries and again.digest() == eval_set.digest()
    quality.record(quantized, report)
    assert (
        "retrieval on docstrings-v1-quick (50 queries" in inspect_model(quantized / INT8_FILE)["quantization"]
    )
    # Quantizing again keeps the record only while the file is byte for byte the one it was measured on.
    from fastembed_native.models import quantize_model

    copy = tmp_path / "copy"
    shutil.copytree(quantized, copy)
    calibration_file = tmp_path / "calibration.txt"
    calibration_file.write_text("\n".join(CALIBRATION), encoding="utf-8")
    quantize_model(copy, calibration=calibration_file, measure_speed=False)
    assert read_recipe(copy / INT8_FILE)["retrieval"] == read_recipe(quantized / INT8_FILE)["retrieval"]
    quantize_model(copy, calibration=calibration_file, outliers="none", measure_speed=False)
    assert "retrieval" not in read_recipe(copy / INT8_FILE)


def test_metrics_and_bootstrap():
    from fastembed_native.bench.quality import paired_bootstrap, ranks, retrieval

    candidates = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0.2, 1]], dtype=np.float32)
    rank = ranks(queries, candidates, np.array([0, 1, 2]))
    assert rank.tolist() == [1, 2, 2]
    assert retrieval(rank) == {"recall@1": 1 / 3, "recall@10": 1.0, "mrr": (1 + 0.5 + 0.5) / 3}
    same = np.array([1.0, 0.5, 0.25, 1.0])
    assert paired_bootstrap(same, same) == (0.0, 0.0)
    low, high = paired_bootstrap(same, same - 0.1)
    assert low == pytest.approx(-0.1) and high == pytest.approx(-0.1)


def test_quantize_and_embed_quantized_on_the_command_line(tiny_bert, calibration_file, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    run = [sys.executable, "-m", "fastembed_native.cli"]
    done = subprocess.run(
        [*run, "quantize", str(model), "--calibration", str(calibration_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "(rowwise): cosine vs fp32 min" in done.stdout and "model_int8.json" in done.stdout
    embedded = subprocess.run(
        [*run, "embed", "--model", str(model), "--quantized", "-q"],
        input="hello world\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert embedded.returncode == 0, embedded.stderr
    vector = np.array(json.loads(embedded.stdout.splitlines()[0])["embedding"], dtype=np.float32)
    np.testing.assert_allclose(
        vector, TextEmbedding(model, quantized=True).embed(["hello world"])[0], atol=1e-6
    )
    missing = subprocess.run(
        [*run, "embed", "--model", str(tiny_bert), "--quantized", "-q"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1 and "fastembed-native quantize" in missing.stderr


def test_serve_quantized_loads_the_int8_file(quantized):
    from fastembed_native.serve import ModelSpec, ServeConfig
    from fastembed_native.serve.service import EmbeddingService

    service = EmbeddingService.load(ServeConfig(models=(ModelSpec.parse(str(quantized)),), quantized=True))
    engine = service.models[service.default_model].embedder
    assert engine.config.onnx_path.name == "model_int8.onnx"
    plain = EmbeddingService.load(ServeConfig(models=(ModelSpec.parse(str(quantized)),)))
    assert plain.models[plain.default_model].embedder.config.onnx_path.name == "model.onnx"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the corpus reads typing.io's docstring
def test_bench_int8_small_run(quantized, tmp_path):
    from fastembed_native.bench import int8

    out = tmp_path / "out"
    args = ["--model", str(quantized), "--corpus-size", "24", "--queries", "4", "--repeats", "1"]
    assert int8.main([*args, "--dynamic", "--no-memory", "--out", str(out)]) == 0
    results = json.loads((out / "int8.json").read_text())
    assert set(results["contenders"]) == {"fp32", "int8", "int8_dynamic"}
    assert results["contenders"]["int8"]["size_mb"] < results["contenders"]["fp32"]["size_mb"]
    assert results["contenders"]["int8"]["recipe"]["method"] == "rowwise"
    table = (out / "int8.md").read_text()
    assert "| int8 |" in table and "| int8_dynamic |" in table


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the corpus reads typing.io's docstring
def test_bench_int8_on_a_random_shape_reports_the_models_own_rss(tmp_path):
    """``--shape`` builds a dense model at a named shape (here the tiny one) that embeds as
    sentence-transformers does, and the memory columns split the peak into runtime and model."""
    from sentence_transformers import SentenceTransformer

    from fastembed_native.bench import int8
    from fastembed_native.bench.head_models import ensure_model

    model = ensure_model("tiny-dense", tmp_path / "models", [])
    ours = TextEmbedding(model.onnx_dir).embed(TEXTS)
    reference = SentenceTransformer(str(model.checkpoint), device="cpu").encode(TEXTS)
    assert cosine_rows(ours, reference).min() > 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)  # CLS pooling, then Normalize

    out = tmp_path / "out"
    args = ["--shape", "tiny-dense", "--models-dir", str(tmp_path / "models"), "--corpus-size", "24"]
    assert int8.main([*args, "--queries", "4", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    results = json.loads((out / "int8.json").read_text())
    assert results["random_weights"] == "tiny-dense"
    for name in ("fp32", "int8"):
        entry = results["contenders"][name]
        assert 20 < entry["runtime_rss_mb"] < entry["peak_rss_mb"], name
    table = (out / "int8.md").read_text()
    assert "model's RSS MB (vs fp32)" in table and "Random weights at tiny-dense's shape" in table
