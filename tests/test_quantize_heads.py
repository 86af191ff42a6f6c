"""int8 rerankers and SPLADE models (fastembed_native.models.quantize on their graphs), the agreement
metrics that judge them (fastembed_native.models.agreement), ``quantized=True`` on TextCrossEncoder and
SparseTextEmbedding, ``serve --quantized``, ``bench quality --kind rerank|sparse`` and the refusals.

Tiny random models of test_cross_encoder.py and test_sparse.py (hidden 32, 2 layers): a BERT
cross-encoder exported by optimum (its pooler and classifier are Gemm nodes) and built by the
torch-free builder (MatMul nodes), a Qwen3-style LLM reranker, and a BERT SPLADE model.

Tolerances. A random cross-encoder scores every pair nearly alike: over these pairs its logits
span 0.03 (BERT) to 1.8 (Qwen3), so int8's rounding, a fraction of a percent of each activation,
is large against that span (measured: 4% of it for BERT, 1% for Qwen3). The scores are held to a
fifth of their span, and the orderings, what int8 must keep, to NDCG@10 >= 0.97 and Spearman >= 0.97
per model (measured: >= 0.99 and >= 0.985). The tiny SPLADE model keeps 150-200 words per text from
logits a random MLM head spreads around zero: int8 flips the few whose max logit sits within its
rounding of zero (measured: 98.9% of fp32's non-zero indices kept, 99.98% of the value mass, cosine
>= 0.9997), held to 95%, 99.9% and 0.999.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from families import MIXED_TEXTS

from fastembed_native import SparseTextEmbedding, TextCrossEncoder
from fastembed_native.engine import INT8_FILE
from fastembed_native.models import inspect_model
from fastembed_native.models.agreement import (
    ndcg_at_k,
    ranking_agreement,
    reference_grades,
    sparse_agreement,
    spearman,
    top_k_overlap,
)
from fastembed_native.models.quantize import model_kind, read_recipe

QUERIES = ("what is the capital of France?", "emoji 🙂 and prose " * 20, "")
CALIBRATION = [
    f"calibration text number {i}:" + " some words of ordinary prose" * (i % 7 + 1) for i in range(48)
]
MIN_NDCG, MIN_SPEARMAN, SPAN_SHARE = 0.97, 0.97, 0.2
MIN_INDICES_KEPT, MIN_MASS_KEPT, MIN_SPARSE_COSINE = 0.95, 0.999, 0.999


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "texts.txt"
    path.write_text("\n".join(CALIBRATION), encoding="utf-8")
    return path


def _quantized_copy(model_dir: Path, calibration: Path, **options) -> Path:
    from fastembed_native.models import quantize_model

    copy = model_dir.parent / f"{model_dir.name}-int8"
    shutil.copytree(model_dir, copy)
    quantize_model(copy, calibration=calibration, measure_speed=False, **options)
    return copy


@pytest.fixture(scope="module")
def rerankers(tmp_path_factory, calibration_file) -> dict[str, tuple[Path, Path]]:
    """(fp32 directory, quantized directory) per reranker: "gemm" (optimum's export of a BERT
    cross-encoder, pooler and classifier as Gemm nodes, made by ``export --dtype int8``), "matmul"
    (the same checkpoint through the torch-free builder: as MatMul) and "llm" (a Qwen3-style yes/no
    reranker); the last two quantized in a copy."""
    from test_cross_encoder import _cross_encoder, _qwen3_reranker

    from fastembed_native.models import build_bert_model, export_model

    root = tmp_path_factory.mktemp("rerankers")
    checkpoint = _cross_encoder(root, "bert")
    exported = export_model(checkpoint, root / "gemm-int8", dtype="int8").model_dir
    fp32 = root / "gemm"
    shutil.copytree(exported, fp32, ignore=shutil.ignore_patterns("model_int8.*"))
    models = {
        "matmul": build_bert_model(checkpoint, root / "matmul", reference="numpy", fuse=False).model_dir,
        "llm": export_model(_qwen3_reranker(root), root / "llm").model_dir,
    }
    return {
        "gemm": (fp32, exported),
        **{name: (path, _quantized_copy(path, calibration_file)) for name, path in models.items()},
    }


def _scores(model: TextCrossEncoder) -> list[np.ndarray]:
    return [model.rerank(q, list(MIXED_TEXTS), raw_scores=True) for q in QUERIES]


@pytest.mark.parametrize("name", ["gemm", "matmul", "llm"])
def test_quantized_reranker_orders_as_fp32_and_keeps_its_head_float32(rerankers, name):
    fp32_dir, int8_dir = rerankers[name]
    recipe = read_recipe(int8_dir / INT8_FILE)
    assert recipe["kind"] == "rerank" and recipe["method"] == "rowwise"
    assert recipe["matmuls"] == (14 if name == "llm" else 12)  # the per-token projections, 2 layers
    # The head reads one row per pair: BERT's pooler + classifier (Gemm or MatMul), the LLM's
    # yes-minus-no vector; it stays float32.
    head = recipe["head"]["nodes"]
    assert len(head) == (1 if name == "llm" else 2), head
    if name == "gemm":
        assert all("Gemm" in node for node in head)
    assert recipe["parity"]["ndcg@10"] >= MIN_NDCG and "pairs" in recipe["calibration"]
    assert not (fp32_dir / INT8_FILE).exists() and not list((int8_dir / "onnx").glob(".*staging*"))
    model = TextCrossEncoder(int8_dir, quantized=True)
    assert model.engine.config.onnx_path.name == "model_int8.onnx"
    reference, scores = _scores(TextCrossEncoder(fp32_dir)), _scores(model)
    span = float(np.ptp(np.concatenate(reference)))
    agreement = ranking_agreement(reference, scores)
    assert agreement["max_abs_score_difference"] <= SPAN_SHARE * span, (agreement, span)
    assert agreement["ndcg@10"] >= MIN_NDCG and agreement["min_spearman"] >= MIN_SPEARMAN, agreement
    described = inspect_model(int8_dir)["int8"]
    assert "rerank model" in described and "NDCG@10" in described and "ranking not measured" in described


@pytest.fixture(scope="module")
def splade(tmp_path_factory, calibration_file) -> tuple[Path, Path]:
    """(fp32 directory, quantized copy) of a tiny BERT SPLADE model (max pooling of log1p(relu)), the
    copy with both vocabulary projections: int8 (the default) and float32 in model_int8_vocab32.onnx."""
    from test_sparse import _splade

    from fastembed_native.models import export_model, quantize_model

    root = tmp_path_factory.mktemp("splade")
    model_dir = export_model(_splade(root, "max", "relu", "Transformer"), root / "onnx-model").model_dir
    copy = _quantized_copy(model_dir, calibration_file)
    quantize_model(
        copy,
        "onnx/model_int8_vocab32.onnx",
        calibration=calibration_file,
        vocab_projection="float32",
        measure_speed=False,
    )
    return model_dir, copy


def test_quantized_splade_keeps_fp32s_words(splade):
    fp32_dir, int8_dir = splade
    recipe = read_recipe(int8_dir / INT8_FILE)
    assert recipe["kind"] == "sparse" and recipe["vocab_projection"]["precision"] == "int8"
    assert recipe["matmuls"] == 14  # 12 in the layers, the MLM transform and the vocabulary projection
    model = SparseTextEmbedding(int8_dir, quantized=True)
    assert model.engine.config.onnx_path.name == "model_int8.onnx"
    reference = SparseTextEmbedding(fp32_dir).embed(list(MIXED_TEXTS))
    agreement = sparse_agreement(reference, model.embed(list(MIXED_TEXTS)))
    assert agreement["indices_kept"] >= MIN_INDICES_KEPT, agreement
    assert agreement["mass_kept"] >= MIN_MASS_KEPT and agreement["min_cosine"] >= MIN_SPARSE_COSINE, agreement
    # The float32 projection: one MatMul fewer in int8, and as close or closer.
    kept = read_recipe(int8_dir / "onnx/model_int8_vocab32.onnx")
    assert kept["vocab_projection"]["precision"] == "float32" and kept["matmuls"] == 13
    float_head = SparseTextEmbedding(int8_dir, onnx_file="onnx/model_int8_vocab32.onnx")
    closer = sparse_agreement(reference, float_head.embed(list(MIXED_TEXTS)))
    assert closer["indices_kept"] >= MIN_INDICES_KEPT and closer["min_cosine"] >= MIN_SPARSE_COSINE
    assert "vocabulary projection" in inspect_model(int8_dir / INT8_FILE)["quantization"]


def test_quantized_true_without_an_int8_file_says_how_to_make_it(rerankers, splade):
    fp32_reranker, int8_reranker = rerankers["gemm"]
    with pytest.raises(FileNotFoundError, match="fastembed-native quantize"):
        TextCrossEncoder(fp32_reranker, quantized=True)
    with pytest.raises(FileNotFoundError, match="fastembed-native quantize"):
        SparseTextEmbedding(splade[0], quantized=True)
    with pytest.raises(ValueError, match="not both"):
        TextCrossEncoder(int8_reranker, quantized=True, onnx_file="onnx/model.onnx")
    with pytest.raises(ValueError, match="not both"):
        SparseTextEmbedding(splade[1], quantized=True, onnx_file="onnx/model.onnx")


def test_serve_quantized_loads_rerankers_and_sparse_models_int8(rerankers, splade):
    from fastembed_native.serve import ModelSpec, ServeConfig
    from fastembed_native.serve.service import EmbeddingService

    specs = (ModelSpec.parse(f"rerank={rerankers['gemm'][1]}"), ModelSpec.parse(f"sparse={splade[1]}"))
    for quantized, name in ((True, "model_int8.onnx"), (False, "model.onnx")):
        service = EmbeddingService.load(ServeConfig(models=specs, quantized=quantized))
        assert {m.embedder.config.onnx_path.name for m in service.models.values()} == {name}
    with pytest.raises(FileNotFoundError, match="fastembed-native quantize"):
        EmbeddingService.load(
            ServeConfig(models=(ModelSpec.parse(str(rerankers["gemm"][0])),), quantized=True)
        )


def test_bench_quality_heads_measure_and_record_agreement(rerankers, splade):
    from fastembed_native.bench import quality_heads
    from fastembed_native.bench.quality import EvalSet

    queries = [f"{t[:40]}" for t in CALIBRATION[:6]] + ["what is the capital of France?"]
    candidates = [*CALIBRATION[:12], *MIXED_TEXTS[:6]]
    eval_set = EvalSet("tiny", queries, np.array([0, 1, 2, 3, 4, 5, 12]), candidates)
    _, int8_reranker = rerankers["gemm"]
    report = quality_heads.evaluate_rerank(int8_reranker, [INT8_FILE], eval_set, queries=7, candidates=5)
    entry = report["variants"][INT8_FILE]
    assert report["kind"] == "rerank" and report["set"]["pairs"] == 35 and entry["queries"] == 7
    assert entry["ndcg@10"] >= MIN_NDCG and entry["spearman"] >= MIN_SPEARMAN
    quality_heads.record(int8_reranker, report)
    described = inspect_model(int8_reranker / INT8_FILE)["quantization"]
    assert "ranking on tiny (7 queries x 5 candidates): NDCG@10" in described
    assert "| onnx/model_int8.onnx |" in quality_heads.markdown(report)

    _, int8_splade = splade
    report = quality_heads.evaluate_sparse(int8_splade, [INT8_FILE], eval_set, queries=7, candidates=12)
    entry = report["variants"][INT8_FILE]
    assert report["kind"] == "sparse" and report["set"]["candidates"] == 12
    assert entry["recall@10_of_reference"] >= 0.9 and entry["indices_kept"] >= MIN_INDICES_KEPT
    low, high = entry["mrr_difference_95"]
    assert low <= entry["mrr_difference"] <= high
    quality_heads.record(int8_splade, report)
    described = inspect_model(int8_splade / INT8_FILE)["quantization"]
    assert "retrieval on tiny (7 queries, 12 candidates): recall@10 of fp32's top 10" in described
    assert report["note"] == ""  # not a benchmark model: nothing said about its weights


def test_rerank_lists_put_the_answer_among_lexical_neighbours():
    from fastembed_native.bench.quality import EvalSet
    from fastembed_native.bench.quality_heads import rerank_lists

    candidates = ["alpha beta gamma", "beta gamma delta", "unrelated words here", "gamma only", "zeta"]
    eval_set = EvalSet("t", ["gamma beta", "zeta"], np.array([0, 4]), candidates)
    (query, texts, answer), (_, texts2, answer2) = rerank_lists(eval_set, queries=2, candidates=2)
    assert query == "gamma beta" and texts[answer] == "alpha beta gamma" and len(texts) == 2
    assert texts2[answer2] == "zeta" and len(texts2) == 2  # no word shared: filled in pool order


def test_ranking_metrics_on_known_numbers():
    reference = np.array([4.0, 3.0, 2.0, 1.0])
    assert reference_grades(reference, k=3).tolist() == [3.0, 2.0, 1.0, 0.0]
    assert ndcg_at_k(reference, reference * 10 - 7) == 1.0  # any monotone map keeps the order
    # Reversed, k = 10: grades 10, 9, 8, 7 met in the order 7, 8, 9, 10.
    discount = 1 / np.log2(np.arange(2, 6))
    expected = (np.array([7, 8, 9, 10]) * discount).sum() / (np.array([10, 9, 8, 7]) * discount).sum()
    assert ndcg_at_k(reference, -reference) == pytest.approx(expected)
    # k = 2: the top two swapped costs (2/1 + 1/log2 3 ... reversed) against the ideal.
    swapped = np.array([3.0, 4.0, 2.0, 1.0])
    assert ndcg_at_k(reference, swapped, k=2) == pytest.approx((1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3)))
    # k = 1: only the top counts; a candidate from outside the reference's top k gains nothing.
    assert ndcg_at_k(reference, np.array([0.0, 0.0, 0.0, 1.0]), k=1) == 0.0
    assert top_k_overlap(reference, np.array([1.0, 0.0, 2.0, 0.5]), k=2) == 0.5
    assert spearman(reference, reference) == 1.0 and spearman(reference, -reference) == -1.0
    # Ties take their average rank: ranks (4, 2.5, 2.5, 1) against (4, 3, 2, 1).
    rho = spearman(reference, np.array([4.0, 2.0, 2.0, 1.0]))
    a, b = np.array([4, 2.5, 2.5, 1]) - 2.5, np.array([4, 3, 2, 1]) - 2.5
    assert rho == pytest.approx((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    agreement = ranking_agreement([reference, reference[:2]], [swapped, reference[:2] + 0.5])
    assert agreement["queries"] == 2 and agreement["pairs"] == 6
    assert agreement["same_top1"] == 0.5 and agreement["max_abs_score_difference"] == 1.0
    assert agreement["min_ndcg@10"] < 1.0 == agreement["top10_overlap"]
    # Within-query error spread over fp32's spread: std(-1, 1, 0, 0) and std(0.5, 0.5) = 0 (a shift)
    # against std(4, 3, 2, 1) and std(4, 3); neighbours in fp32's top 10 are 1 apart.
    expected = np.mean([np.sqrt(0.5), 0.0]) / np.mean([np.std([4, 3, 2, 1]), 0.5])
    assert agreement["noise_to_spread"] == pytest.approx(expected) and agreement["reference_gap"] == 1.0


def test_sparse_agreement_on_known_numbers():
    from fastembed_native import SparseEmbedding

    def vec(indices, values):
        return SparseEmbedding(np.array(indices, np.int32), np.array(values, np.float32))

    reference = [vec([1, 5, 9, 12], [4.0, 3.0, 2.0, 1.0]), vec([], [])]
    other = [vec([1, 5, 9, 20], [4.0, 3.0, 2.5, 0.5]), vec([], [])]
    got = sparse_agreement(reference, other)
    assert got["indices_kept"] == pytest.approx((3 / 4 + 1) / 2) and got["min_indices_kept"] == 0.75
    assert got["mass_kept"] == pytest.approx((9 / 10 + 1) / 2)
    assert got["indices_added"] == pytest.approx((1 / 4 + 0) / 2)
    cosine = (16 + 9 + 5) / (np.sqrt(30) * np.sqrt(16 + 9 + 6.25 + 0.25))
    assert got["min_cosine"] == pytest.approx(cosine, rel=1e-6)
    assert got["max_relative_difference"] == pytest.approx(1.0 / 4.0)  # index 12 lost: 1 of the max 4
    # The words' order over the union 1, 5, 9, 12, 20: (4, 3, 2, 1, 0) against (4, 3, 2.5, 0, 0.5), two
    # ranks swapped: rho = 1 - 6 * 2 / (5 * 24); the empty pair counts 1.
    assert got["term_spearman"] == pytest.approx((0.9 + 1.0) / 2)
    assert got["top10_terms_kept"] == 1.0  # five words, all in both "top 10"


def test_quantize_refuses_what_it_cannot_handle(rerankers, tmp_path, calibration_file):
    from fastembed_native.models import quantize_model

    fp32_dir, int8_dir = rerankers["gemm"]
    # A graph quantized already.
    twice = tmp_path / "twice"
    shutil.copytree(int8_dir, twice)
    shutil.copy2(twice / INT8_FILE, twice / "onnx" / "model.onnx")
    (twice / INT8_FILE).unlink()
    with pytest.raises(ValueError, match="quantized already .*MatMulInteger, RowDequantize"):
        quantize_model(twice, calibration=calibration_file, measure_speed=False)
    assert not (twice / INT8_FILE).exists()
    # float16 weights: nothing for int8 to replace.
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = tmp_path / "half"
    shutil.copytree(fp32_dir, half)
    graph = onnx.load(str(half / "onnx" / "model.onnx"))
    onnx.save(convert_float_to_float16(graph, keep_io_types=True), str(half / "onnx" / "model.onnx"))
    before = sorted(p.name for p in (half / "onnx").iterdir())
    with pytest.raises(ValueError, match="float16: quantize the float32 export"):
        quantize_model(half, calibration=calibration_file, measure_speed=False)
    assert sorted(p.name for p in (half / "onnx").iterdir()) == before  # nothing left behind
    # ColBERT and BGE-M3 are named, not guessed at.
    colbert = tmp_path / "colbert"
    shutil.copytree(fp32_dir, colbert)
    (colbert / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "ColBERT"}))
    with pytest.raises(ValueError, match="is a ColBERT model: quantize makes int8 files of embedding"):
        quantize_model(colbert)
    assert model_kind(fp32_dir) == "rerank" and model_kind(rerankers["llm"][0]) == "rerank"
    with pytest.raises(ValueError, match="vocab_projection"):
        quantize_model(fp32_dir, vocab_projection="int4")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the corpus reads typing.io's docstring
def test_bench_int8_runs_rerankers_and_sparse_models(rerankers, splade, tmp_path):
    """``bench int8`` tells the kind from the files and drives each through its own class: pairs/s
    and a 20-document rerank for a reranker, texts/s for SPLADE, with agreement against fp32."""
    from fastembed_native.bench import int8

    for model_dir, kind, measure_name in [
        (rerankers["gemm"][1], "rerank", "max abs score diff"),
        (splade[1], "sparse", "min cos"),
    ]:
        out = tmp_path / kind
        args = ["--model", str(model_dir), "--corpus-size", "24", "--queries", "4", "--repeats", "1"]
        assert int8.main([*args, "--threads", "1", "--out", str(out)]) == 0
        results = json.loads((out / "int8.json").read_text())
        assert results["kind"] == kind and results["unit"] == ("pairs" if kind == "rerank" else "texts")
        fp32, quantized = results["contenders"]["fp32"], results["contenders"]["int8"]
        assert fp32["agreement_with_fp32"] == {
            "measure": measure_name,
            "value": pytest.approx(0.0 if kind == "rerank" else 1.0, abs=1e-6),
        }
        agreement = quantized["agreement_with_fp32"]["value"]
        assert (agreement < 0.5) if kind == "rerank" else (agreement > 0.9), (kind, agreement)
        assert quantized["size_mb"] < fp32["size_mb"] and quantized["per_s"] > 0
        assert 20 < quantized["runtime_rss_mb"] < quantized["peak_rss_mb"]
        table = (out / "int8.md").read_text()
        assert ("bulk pairs/s" in table) == (kind == "rerank") and f"{measure_name} (corpus)" in table
