"""int8 copies of a model directory's ONNX file, with the recipe and its measured quality beside it.

Two methods (``fastembed-native quantize --method``):

``rowwise`` (the default): int8 that keeps retrieval quality.
  * activations: int8 **per token**, scaled at run time by each row's own max |x|
    (``RowQuantize``, then ``MatMulInteger`` and one ``RowDequantize`` pass that applies the row and
    column scales and adds the bias and the residual: models/row_quantize.py, C++ kernels in our
    sessions, standard-ONNX function bodies anywhere else; the weights in a data file beside it).
    ONNX Runtime's dynamic quantization uses one scale for a whole batch, and BERT-family models put
    a few very large values in a few channels of a few tokens ([CLS] reaches 28 where most rows stay
    under 4 in all-MiniLM-L6-v2), so that one scale leaves the ordinary tokens only a few levels;
  * outlier channels: in the inputs shared by several projections (attention's query/key/value),
    the channels whose calibrated max is over ``OUTLIER_RATIO`` x the median stay float32 (their
    rows of the weights in a small float32 MatMul added to the int8 product), LLM.int8()-style;
  * weights: int8 per output channel (symmetric), rounded with GPTQ against the calibration
    activations' covariance instead of to nearest;
  * the word-embedding table: int8 per row (a Gather of int8 rows times their scales), a quarter of
    the memory of the largest tensor of a small model.

  On all-MiniLM-L6-v2 (benchmarks/results/int8.md): worst cosine against fp32 0.9969 over 59,031
  retrieval texts where dynamic quantization falls to 0.9692, MRR within -0.25% of fp32, about
  twice fp32's speed, in a quarter of the fp32 file.

``dynamic``: ONNX Runtime's ``quantize_dynamic`` (MatMul weights per channel), kept for comparison.

Three kinds of model, read from the directory's files (:func:`model_kind`), each calibrated on what
it runs and measured against fp32 by what it outputs:

* **embedding** models: texts; cosine of the vectors.
* **rerankers** (``TextCrossEncoder``: BERT / XLM-R ``*ForSequenceClassification`` cross-encoders and
  Qwen3-style LLM rerankers): (query, document) pairs, an LLM reranker's in its prompt frame; the
  max |logit difference| and the ordering's agreement (NDCG@10 against fp32's order, Spearman:
  :mod:`.agreement`). The per-token MatMuls of the encoder are int8; the *head* stays float32: the
  MatMuls (or Gemms) that read one row per pair (BERT's pooler and classifier, XLM-R's classifier
  dense and out_proj, an LLM reranker's yes-minus-no vector) are found from the calibration run
  (their input has one row per sequence, not per token). They cost one row per pair against a few
  hundred token rows for the encoder, so int8 would buy nothing there, and the classifier's output is
  the score itself, where a per-row int8 rounding would land undamped.
* **sparse** (SPLADE, ``SparseTextEmbedding``): texts; the share of fp32's non-zero indices kept,
  cosine, value differences (:func:`.agreement.sparse_agreement`). The MLM head's vocabulary
  projection (hidden x 30,522 for BERT: a third of a DistilBERT SPLADE's work per token) is int8
  too by default (``vocab_projection``; benchmarks/results/int8_heads.md measures both).

ColBERT and BGE-M3 models are refused (their int8 files would not be measured), as are graphs with
nothing rowwise can quantize (float16 weights, an already quantized graph): never a file that was
not checked. The int8 file is written under a temporary name and moved into place only once it has
loaded, run on the parity inputs and given finite outputs.

Both write ``onnx/model_int8.onnx`` and ``onnx/model_int8.json`` (:data:`RECIPE_SUFFIX`): how the
file was made and what was measured (against fp32 on the parity inputs, speed, and, once
``bench quality --record`` has run, retrieval or ranking against fp32). ``TextEmbedding(model,
quantized=True)`` (``TextCrossEncoder``, ``SparseTextEmbedding`` likewise) loads the int8 file;
``inspect`` prints the recipe. Uses onnxruntime's Python package and ``onnx``:
run it as a tool, not in a process that embeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import INT8_FILE, Embedder, find_onnx
from . import row_quantize
from .data_file import data_files
from .parity import PARITY_TEXTS, cosine_rows

METHODS = ("rowwise", "dynamic")
OUTLIER_INPUTS = ("shared", "all", "none")
DEFAULT_METHOD = "rowwise"
#: What quantize makes int8 files of (:func:`model_kind`).
KINDS = ("embedding", "rerank", "sparse")
#: A SPLADE model's vocabulary projection: int8 like the encoder (default), or kept float32.
VOCAB_PROJECTIONS = ("int8", "float32")
DEFAULT_VOCAB_PROJECTION = "int8"
#: The recipe's keys for ``bench quality --record``'s results: retrieval (embedding, sparse) and
#: ranking (rerankers).
QUALITY_KEYS = ("retrieval", "ranking")
#: Node types of a graph quantized already (refused: quantize its float32 export instead).
QUANTIZED_OPS = (
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
    "QGemm",
    *row_quantize.OPS,
)
#: Calibration pairs for a reranker take a text's first words as the query.
CALIBRATION_QUERY_WORDS = 12
#: The recipe file beside an int8 model: ``onnx/model_int8.onnx`` -> ``onnx/model_int8.json``.
RECIPE_SUFFIX = ".json"
RECIPE_VERSION = 1
#: A channel of a shared input is an outlier when its calibrated max |x| is over this many times
#: the median channel's; at most MAX_OUTLIERS per input stay float32.
OUTLIER_RATIO = 3.0
MAX_OUTLIERS = 16
#: GPTQ's dampening of the covariance diagonal (fraction of its mean) and its column block.
GPTQ_DAMP = 0.01
GPTQ_BLOCK = 128
#: GELU's outputs are >= -0.17 (its minimum, -0.16997, at x = -0.75): their uint8 rows put zero at
#: GELU_ZERO_POINT, with a step of at least GELU_MIN / GELU_ZERO_POINT so the minimum fits.
GELU_MIN = 0.17
GELU_ZERO_POINT = 16
#: Embedding tables with at least this many rows are stored as int8.
MIN_TABLE_ROWS = 1024
#: Past this size a calibration probe keeps its weights in a file beside it (protobuf's 2 GB).
EXTERNAL_BYTES = 1_800_000_000
#: Tensors smaller than this stay inside the int8 .onnx file (biases, scales, shapes).
EXTERNAL_MIN_BYTES = 1024
_EPS = 1e-8


@dataclass(frozen=True)
class QuantizeReport:
    """The int8 file, its cosine against the fp32 model (min and mean over the parity texts; for a
    SPLADE model the cosine of the sparse vectors, for a reranker NaN), the speed-up measured on
    the parity inputs (NaN when not measured), and the recipe written beside it (its ``parity``
    holds each kind's measures; :func:`describe_parity` says them in words)."""

    path: Path
    min_cosine: float
    mean_cosine: float
    speedup: float
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.recipe.get("kind", "embedding"))


def model_kind(model_dir: str | Path) -> str:
    """What the model in ``model_dir`` is, read from its files as the server reads them: "rerank"
    (a cross-encoder or LLM reranker: ``TextCrossEncoder``), "sparse" (SPLADE: ``SparseTextEmbedding``)
    or "embedding" (``TextEmbedding``).

    Raises:
        ValueError: a ColBERT or BGE-M3 model (quantize does not make their int8 files: nothing would
            measure them against fp32).
    """
    from ..engine.m3 import is_m3_model
    from ..engine.multivector import is_colbert
    from ..engine.scores import is_score_model
    from ..engine.sparse import is_sparse_model

    model_dir = Path(model_dir)
    if is_m3_model(model_dir) or is_colbert(model_dir):
        what = "BGE-M3" if is_m3_model(model_dir) else "ColBERT"
        raise ValueError(
            f"{model_dir} is a {what} model: quantize makes int8 files of embedding, reranker and SPLADE "
            f"models only (a {what} model's token vectors are not measured against fp32 here)"
        )
    if is_score_model(model_dir):
        return "rerank"
    if is_sparse_model(model_dir):
        return "sparse"
    return "embedding"


def recipe_path(onnx_path: str | Path) -> Path:
    """The recipe file of an int8 ONNX file (``model_int8.onnx`` -> ``model_int8.json``)."""
    return Path(onnx_path).with_suffix(RECIPE_SUFFIX)


def read_recipe(onnx_path: str | Path) -> dict[str, Any] | None:
    """The recipe written beside ``onnx_path`` by :func:`quantize_model`, or None."""
    path = recipe_path(onnx_path)
    if not path.is_file():
        return None
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def describe_parity(recipe: dict[str, Any]) -> str:
    """What was measured against fp32 when the file was made, in words (by the model's kind)."""
    parity = recipe.get("parity") or {}
    nan = float("nan")
    kind = recipe.get("kind", "embedding")
    if kind == "rerank":
        return (
            f"scores vs fp32 on the parity pairs: max |logit difference| "
            f"{parity.get('max_abs_score_difference', nan):.4f}, NDCG@10 {parity.get('ndcg@10', nan):.4f}, "
            f"Spearman {parity.get('spearman', nan):.4f}"
        )
    if kind == "sparse":
        return (
            f"sparse vectors vs fp32 on the parity texts: cosine min {parity.get('min_cosine', nan):.4f}, "
            f"non-zero indices kept {parity.get('indices_kept', nan):.4f} (min "
            f"{parity.get('min_indices_kept', nan):.4f}, {parity.get('mass_kept', nan):.4f} of the value mass)"
        )
    return f"cosine vs fp32 on the parity texts min {parity.get('min_cosine', nan):.4f}"


def describe_recipe(recipe: dict[str, Any]) -> str:
    """One line on how an int8 file was made and what was measured (what ``inspect`` prints)."""
    method = recipe.get("method", "?")
    kind = recipe.get("kind", "embedding")
    if method == "rowwise":
        outliers = recipe.get("outlier_channels") or {}
        made = (
            f"rowwise: int8 per-token activations, GPTQ int8 weights, {outliers.get('count', 0)} float32 "
            f"outlier channels, {'int8' if 'int8' in str(recipe.get('embedding_table')) else 'float32'} "
            f"embedding table"
        )
        if kind == "rerank":
            head = recipe.get("head") or {}
            made += f", float32 head ({len(head.get('nodes', []))} nodes reading one row per pair)"
        if kind == "sparse":
            made += f", {(recipe.get('vocab_projection') or {}).get('precision', '?')} vocabulary projection"
        made += f"; calibrated on {recipe.get('calibration', '?')}"
    else:
        made = f"{method}: {recipe.get('activations', '?')}; weights {recipe.get('weights', '?')}"
    if kind != "embedding":
        made = f"{kind} model, {made}"
    text = f"{made}; {describe_parity(recipe)}"
    ranking = recipe.get("ranking")
    retrieval = recipe.get("retrieval")
    if kind == "rerank":
        if ranking:
            text += (
                f"; ranking on {ranking['set']}: NDCG@10 {ranking['ndcg@10']:.4f} of fp32's order (min "
                f"{ranking['min_ndcg@10']:.4f}), Spearman {ranking['spearman']:.4f}, top-10 overlap "
                f"{ranking['top10_overlap']:.4f}, max |score difference| {ranking['max_abs_score_difference']:.4f}"
            )
            if ranking.get("note"):
                text += f" ({ranking['note']})"
        else:
            text += "; ranking not measured (fastembed-native bench quality --kind rerank --record)"
    elif kind == "sparse":
        if retrieval:
            text += (
                f"; retrieval on {retrieval['set']}: recall@10 of fp32's top 10 {retrieval['recall@10_of_reference']:.4f}, "
                f"MRR of fp32's top hit {retrieval['mrr_of_reference_top1']:.4f}, labeled MRR {retrieval['mrr']:.4f} vs "
                f"fp32 {retrieval['reference_mrr']:.4f}, non-zero indices kept {retrieval['indices_kept']:.4f}"
            )
            if retrieval.get("note"):
                text += f" ({retrieval['note']})"
        else:
            text += "; retrieval not measured (fastembed-native bench quality --kind sparse --record)"
    elif retrieval:
        low, high = retrieval["mrr_difference_95"]
        text += (
            f"; retrieval on {retrieval['set']}: MRR {retrieval['mrr']:.4f} vs fp32 {retrieval['reference_mrr']:.4f} "
            f"({retrieval['mrr_relative'] * 100:+.2f}%, 95% [{low:+.4f}, {high:+.4f}]), recall@10 "
            f"{retrieval['recall@10']:.4f} vs {retrieval['reference_recall@10']:.4f}, cosine min "
            f"{retrieval['min_cosine']:.4f} p1 {retrieval['p1_cosine']:.4f} over {retrieval['cosine_texts']} texts"
        )
    else:
        text += "; retrieval not measured (fastembed-native bench quality --record)"
    return text


def record_quality(onnx_path: str | Path, quality: dict[str, Any], key: str = "retrieval") -> None:
    """Add ``bench quality --record``'s results to the recipe beside ``onnx_path``, under ``key``
    ("retrieval" for embedding and SPLADE models, "ranking" for rerankers)."""
    if key not in QUALITY_KEYS:
        raise ValueError(f"key must be one of {', '.join(QUALITY_KEYS)}, got {key!r}")
    recipe = read_recipe(onnx_path)
    if recipe is None:
        raise FileNotFoundError(f"{recipe_path(onnx_path)} does not exist: quantize the model first")
    recipe[key] = {**quality, "file_sha256": _digest(Path(onnx_path))}
    _write_json(recipe_path(onnx_path), recipe)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _seconds(call: Any, repeats: int = 3) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _name_data_by_content(onnx_path: Path) -> None:
    """Rename ``onnx_path``'s data file ``<name>_data`` to ``<name>_<digest>_data`` and point the
    graph at it: a new int8 file then never pairs with an old graph's weights (a process loading the
    old graph while ``quantize`` replaces it reads the old file or fails, never mixes the two)."""
    import onnx

    data = onnx_path.with_name(onnx_path.name + "_data")
    h = hashlib.sha256()
    with open(data, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
    named = onnx_path.with_name(f"{onnx_path.name}_{h.hexdigest()[:12]}_data")
    os.replace(data, named)
    named.chmod(onnx_path.stat().st_mode & 0o777)  # onnx creates it owner-only
    proto = onnx.load(str(onnx_path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = named.name
    onnx.save_model(proto, str(onnx_path))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for part in [path, *data_files(path)]:
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def quantize_model(
    model_dir: str | Path,
    output: str = INT8_FILE,
    *,
    method: str = DEFAULT_METHOD,
    calibration: str | Path | None = None,
    calibration_count: int | None = None,
    outliers: str = "shared",
    vocab_projection: str = DEFAULT_VOCAB_PROJECTION,
    measure_speed: bool = True,
) -> QuantizeReport:
    """Write an int8 copy of ``model_dir``'s ONNX file to ``model_dir / output``, its recipe beside
    it, and measure it against the fp32 file (an embedding model, a reranker or a SPLADE model:
    :func:`model_kind`; see the module doc).

    Args:
        method: "rowwise" (per-token activations, GPTQ weights, float32 outlier channels, int8
            embedding table; see the module doc) or "dynamic" (ONNX Runtime's quantize_dynamic).
        calibration: a text file (one text per line) to calibrate on; default: found on this
            machine (:func:`fastembed_native.models.calibration.calibration_texts`). A reranker is
            calibrated on pairs made of these texts (:func:`calibration_pairs`).
        calibration_count: calibration texts to use (default 256).
        outliers: rowwise: which inputs keep their outlier channels in float32: "shared" (those
            several MatMuls read: attention's query/key/value input), "all", or "none".
        vocab_projection: rowwise, SPLADE models: "int8" (default) or "float32" for the MLM head's
            vocabulary projection.
        measure_speed: time fp32 and int8 on the parity inputs (seconds); False skips it.

    Raises:
        ValueError: an unknown method or option; a model or graph quantize cannot handle (ColBERT,
            BGE-M3, float16 weights, a graph quantized already), said by name; an int8 graph whose
            outputs are not finite (nothing is written then).
        ImportError: onnx is not installed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if outliers not in OUTLIER_INPUTS:
        raise ValueError(f"outliers must be one of {', '.join(OUTLIER_INPUTS)}, got {outliers!r}")
    if vocab_projection not in VOCAB_PROJECTIONS:
        raise ValueError(
            f"vocab_projection must be one of {', '.join(VOCAB_PROJECTIONS)}, got {vocab_projection!r}"
        )
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("quantize needs the onnx package: pip install onnx") from None
    model_dir = Path(model_dir)
    kind = model_kind(model_dir)
    source = find_onnx(model_dir)
    _check_quantizable(source)
    target = model_dir / output
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = read_recipe(target) or {}
    started = time.perf_counter()
    # Written and checked in a folder of its own, moved into place only once it has run.
    staging = target.parent / f".{target.stem}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    staged = staging / target.name
    try:
        if method == "dynamic":
            details = _quantize_dynamic(source, staged)
        else:
            from .calibration import DEFAULT_COUNT, calibration_texts

            texts, described = calibration_texts(calibration, calibration_count or DEFAULT_COUNT)
            details = quantize_rowwise(
                source, staged, model_dir, texts, outliers, kind=kind, vocab_projection=vocab_projection
            )
            details["calibration"] = described + (" (as query/document pairs)" if kind == "rerank" else "")
        parity, (low, mean), speedup = _measure(
            model_dir,
            kind,
            str(source.relative_to(model_dir)),
            str(staged.relative_to(model_dir)),
            measure_speed,
        )
        # Weights first, the graph that names them last; then the data files no graph names.
        for part in sorted(staging.iterdir(), key=lambda p: p.name == target.name):
            os.replace(part, target.parent / part.name)
        used = set(data_files(target))
        for part in target.parent.glob(target.name + "*_data"):
            if part not in used:
                part.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    recipe = {
        "version": RECIPE_VERSION,
        "kind": kind,
        "method": method,
        **details,
        "source": str(source.relative_to(model_dir)),
        "source_sha256": _digest(source),
        "seconds": round(time.perf_counter() - started, 1),
        "size_mb": {
            "fp32": round(sum(p.stat().st_size for p in source.parent.glob(source.name + "*")) / 2**20, 1),
            "int8": round(sum(p.stat().st_size for p in target.parent.glob(target.name + "*")) / 2**20, 1),
        },
        "parity": parity,
        "speedup_on_parity_texts": None if np.isnan(speedup) else round(speedup, 2),
    }
    digest = _digest(target)
    for key in QUALITY_KEYS:
        kept = previous.get(key)
        if kept and kept.get("file_sha256") == digest:
            recipe[key] = kept  # the same bytes as the file it was measured on: still true
    _write_json(recipe_path(target), recipe)
    return QuantizeReport(target, low, mean, speedup, recipe)


def _check_quantizable(source: Path) -> None:
    """Refuse a graph quantized already, by name, before anything is written."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    found = sorted({n.op_type for n in proto.graph.node if n.op_type in QUANTIZED_OPS})
    if found:
        raise ValueError(
            f"{source} is quantized already (it has {', '.join(found)} nodes): quantize the float32 export"
        )


def calibration_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """A reranker's calibration input: (query, document) pairs made of calibration texts, every
    other one a match (a text's first :data:`CALIBRATION_QUERY_WORDS` words against the whole text)
    and the rest not (against the next text), as a reranker sees both."""
    pairs = []
    for i, text in enumerate(texts):
        query = " ".join(text.split()[:CALIBRATION_QUERY_WORDS])
        pairs.append((query, text if i % 2 == 0 else texts[(i + 1) % len(texts)]))
    return pairs


def _measure(
    model_dir: Path, kind: str, reference: str, variant: str, measure_speed: bool
) -> tuple[dict[str, Any], tuple[float, float], float]:
    """The variant file against the reference on the parity inputs, by ``kind``: the recipe's
    ``parity`` entry, the min and mean cosine (of the vectors; NaN for a reranker), and the
    speed-up (NaN when not measured).

    Raises:
        ValueError: the variant's outputs are not all finite.
    """
    from .agreement import ranking_agreement, sparse_agreement
    from .parity import parity_pairs

    cosines = (float("nan"), float("nan"))
    if kind == "rerank":
        from ..engine.scores import Scorer

        pairs = parity_pairs()
        fp32, int8 = (Scorer(model_dir, onnx_file=f) for f in (reference, variant))
        a, b = (m.predict(pairs, raw_scores=True)[:, 0] for m in (fp32, int8))
        _check_finite(b, variant)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        by_query = [np.array([i for i, (q, _) in enumerate(pairs) if q == query]) for query in queries]
        agreement = ranking_agreement([a[i] for i in by_query], [b[i] for i in by_query])
        parity = {"inputs": "fastembed_native.models.parity.parity_pairs()", "scores": "logits", **agreement}

        def runs(model: Any) -> Any:
            return lambda: model.predict(pairs * 4, raw_scores=True)
    elif kind == "sparse":
        from ..engine.sparse import SparseEmbedder

        texts = list(PARITY_TEXTS)
        fp32, int8 = (SparseEmbedder(model_dir, onnx_file=f) for f in (reference, variant))
        ref, got = fp32.embed(texts), int8.embed(texts)
        _check_finite(np.concatenate([e.values for e in got] or [np.zeros(0)]), variant)
        agreement = sparse_agreement(ref, got)
        cosines = (agreement["min_cosine"], agreement["mean_cosine"])
        parity = {"inputs": "fastembed_native.models.parity.PARITY_TEXTS", **agreement}

        def runs(model: Any) -> Any:
            return lambda: model.embed(texts * 8)
    else:
        texts = list(PARITY_TEXTS) * 8
        fp32, int8 = (Embedder(model_dir, onnx_file=f, fused=False) for f in (reference, variant))
        got = int8.embed(texts)
        _check_finite(got, variant)
        rows = cosine_rows(fp32.embed(texts), got)
        cosines = (float(rows.min()), float(rows.mean()))
        parity = {
            "texts": "fastembed_native.models.parity.PARITY_TEXTS",
            "min_cosine": round(cosines[0], 6),
            "mean_cosine": round(cosines[1], 6),
        }

        def runs(model: Any) -> Any:
            return lambda: model.embed(texts)

    if kind != "embedding":
        parity = {k: round(v, 6) if isinstance(v, float) else v for k, v in parity.items()}
    speedup = _seconds(runs(fp32)) / _seconds(runs(int8)) if measure_speed else float("nan")
    return parity, cosines, speedup


def _check_finite(values: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the int8 graph ({Path(name).name}) gives non-finite outputs; nothing was written")


def _quantize_dynamic(source: Path, target: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: per-tensor scales lose far more (mean cosine 0.958 against 0.993 on
    # all-MiniLM-L6-v2); the embedding table stays float.
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    return {
        "activations": "int8 (uint8), one scale per tensor per call (DynamicQuantizeLinear)",
        "weights": "int8 per output channel, rounded to nearest (onnxruntime quantize_dynamic)",
        "embedding_table": "float32",
    }


# --- the rowwise recipe ------------------------------------------------------------------------


@dataclass
class _Group:
    """The weight MatMuls that read one activation tensor."""

    input: str
    nodes: list[Any]
    k: int
    outliers: list[int] = field(default_factory=list)


def _consumers(graph: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            counts[name] += 1
    return counts


def _weight_groups(graph: Any, initializers: dict[str, Any]) -> dict[str, _Group]:
    """MatMuls by a float 2-D initializer that nothing else reads, grouped by their input."""
    groups: dict[str, _Group] = {}
    consumers = _consumers(graph)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers or consumers[node.input[1]] != 1:
            continue
        tensor = initializers[node.input[1]]
        if len(tensor.dims) != 2 or tensor.data_type != 1:  # a float 2-D weight
            continue
        group = groups.setdefault(node.input[0], _Group(node.input[0], [], int(tensor.dims[0])))
        group.nodes.append(node)
    return groups


def _feeds(
    model_dir: Path, graph: Any, texts: list[str], kind: str = "embedding", batch: int = 16
) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for ``texts`` in length-sorted batches, tokenized as the engine does for
    a model of ``kind``: a reranker's as :func:`calibration_pairs` (an LLM reranker's framed in
    its prompt), a SPLADE or embedding model's as texts."""
    from ..engine import read_model_dir
    from ..engine.tokens import TextTokenizer

    if kind == "rerank":
        from ..engine.scores import Scorer

        scorer = Scorer(model_dir, lazy_load=True)
        tokens = scorer.engine.tokenizer
        encodings = scorer.encode(calibration_pairs(texts))
    else:
        tokens = TextTokenizer(
            read_model_dir(model_dir, task="fill-mask" if kind == "sparse" else "feature-extraction")
        )
        encodings = tokens.encode(texts)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    kinds = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    names = [name for name, kind in kinds.items() if kind in (6, 7)]  # int32 / int64 inputs
    feeds = []
    for start in range(0, len(order), batch):
        chosen = [encodings[i] for i in order[start : start + batch]]
        lengths = np.array([len(e.ids) for e in chosen])
        ids, mask, types = tokens.pad(chosen, lengths, with_types=True)
        feed: dict[str, np.ndarray] = {}
        for name in names:
            lowered = name.lower()
            if "mask" in lowered:
                feed[name] = mask
            elif "type" in lowered:
                feed[name] = types if types is not None else np.zeros_like(ids)
            elif "position" in lowered:
                feed[name] = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
            else:
                feed[name] = ids
            feed[name] = feed[name].astype(np.int32 if kinds[name] == 6 else np.int64)
        feeds.append(feed)
    return feeds


def _statistics(
    proto: Any, model_dir: Path, texts: list[str], groups: dict[str, _Group], kind: str = "embedding"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set[str]]:
    """Per group input: each channel's max |x| and the covariance X^T X / n over the real tokens
    of ``texts`` (padding left out), from the fp32 graph; and the group inputs that have one row
    per sequence instead of one per token (a classifier head's, read after pooling)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    outputs = {o.name for o in probe.graph.output}
    for name in groups:
        if name not in outputs:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="fastembed-native-quantize.") as scratch:
        if probe.ByteSize() > EXTERNAL_BYTES:  # past protobuf's 2 GB: the weights in a file beside it
            path = Path(scratch) / "probe.onnx"
            onnx.save_model(probe, str(path), save_as_external_data=True, location="probe.onnx_data")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        else:
            session = ort.InferenceSession(
                probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        del probe
        return _run_statistics(session, model_dir, proto.graph, texts, groups, kind)


def _run_statistics(
    session: Any, model_dir: Path, graph: Any, texts: list[str], groups: dict[str, _Group], kind: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set[str]]:
    wanted = {i.name for i in session.get_inputs()}
    names = list(groups)
    amax = {n: np.zeros(groups[n].k) for n in names}
    cov = {n: np.zeros((groups[n].k, groups[n].k)) for n in names}
    per_sequence = set(names)
    count = 0
    for feed in _feeds(model_dir, graph, texts, kind):
        mask = next((v for k, v in feed.items() if "mask" in k.lower()), None)
        batch, width = next(iter(feed.values())).shape
        values = session.run(names, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(names, values, strict=True):
            rows = value.reshape(-1, value.shape[-1])
            if len(rows) != batch or width == 1:  # one row per token (or a batch that cannot tell)
                per_sequence.discard(name)
            if mask is not None and value.ndim == 3 and value.shape[:2] == mask.shape:
                rows = value[mask.astype(bool)]
            rows = rows.astype(np.float64)
            amax[name] = np.maximum(amax[name], np.abs(rows).max(axis=0))
            cov[name] += rows.T @ rows
        count += int(mask.sum()) if mask is not None else len(rows)
    return amax, {n: c / max(count, 1) for n, c in cov.items()}, per_sequence


def gptq_quantize(weight: np.ndarray, cov: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 values of ``weight`` [K, N] at per-column ``scale``, rounded by GPTQ (Frantar et al.,
    2022): rows are rounded one at a time in decreasing order of input energy, each rounding error
    pushed onto the rows not yet rounded through the inverse covariance, so the product with the
    calibration activations moves least. Rows whose input is always zero are zero."""
    k = weight.shape[0]
    w = weight.astype(np.float64).copy()
    h = cov.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[order], h[order][:, order]
    h[np.diag_indices(k)] += GPTQ_DAMP * float(np.mean(np.diag(h)))
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper triangular
    except np.linalg.LinAlgError:
        return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    q = np.zeros_like(w)
    for start in range(0, k, GPTQ_BLOCK):
        end = min(start + GPTQ_BLOCK, k)
        block = w[start:end].copy()
        errors = np.zeros_like(block)
        for i in range(end - start):
            row = block[i]
            q[start + i] = np.clip(np.rint(row / scale), -127, 127)
            err = (row - q[start + i] * scale) / hinv[start + i, start + i]
            block[i + 1 :] -= np.outer(hinv[start + i, start + i + 1 : end], err)
            errors[i] = err
        w[end:] -= hinv[start:end, end:].T @ errors
    out = np.empty_like(q)
    out[order] = q
    return out.astype(np.int8)


def _column_scales(weight: np.ndarray) -> np.ndarray:
    """Symmetric int8 scales of ``weight`` [K, N], one per column (output channel)."""
    scale = np.abs(weight).max(axis=0) / 127.0
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def quantize_rowwise(
    source: Path,
    target: Path,
    model_dir: Path,
    texts: list[str],
    outliers: str = "shared",
    *,
    kind: str = "embedding",
    vocab_projection: str = DEFAULT_VOCAB_PROJECTION,
) -> dict[str, Any]:
    """Write the rowwise int8 graph of ``source`` (see the module doc) to ``target``; returns the
    recipe's details. ``kind``: what the model is (:func:`model_kind`): how it is calibrated, and
    for a SPLADE model whether ``vocab_projection`` applies.

    Raises:
        ValueError: the graph has no MatMul by a float32 weight matrix over its tokens (float16
            weights, or none at all): nothing to quantize.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source))  # with its external weights
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    groups = _weight_groups(graph, inits)
    if not groups:
        half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
        raise ValueError(
            f"{source} has no MatMul by a float32 weight matrix: nothing for int8 to replace"
            + ("; its weights are float16: quantize the float32 export" if half else "")
        )
    amax, cov, per_sequence = _statistics(proto, model_dir, texts, groups, kind)
    # A head reads one row per sequence (pooled): it stays float32 (see the module doc).
    head = [node.name or node.output[0] for name in per_sequence for node in groups.pop(name).nodes]
    head += [n.name or n.output[0] for n in graph.node if n.op_type == "Gemm"]
    vocabulary = []
    if kind == "sparse":
        size = _vocabulary_size(graph, model_dir)
        for name, group in list(groups.items()):
            found = [n for n in group.nodes if int(inits[n.input[1]].dims[1]) == size]
            vocabulary += [n.name or n.output[0] for n in found]
            if found and vocab_projection == "float32":
                group.nodes = [n for n in group.nodes if n not in found]
                if not group.nodes:
                    del groups[name]
    if not groups:
        raise ValueError(
            f"{source}: every MatMul by a weight reads one row per sequence: nothing for int8 to replace"
        )
    for name, group in groups.items():
        if outliers == "all" or (outliers == "shared" and len(group.nodes) >= 2):
            median = float(np.median(amax[name])) or _EPS
            top = np.argsort(-amax[name], kind="stable")[:MAX_OUTLIERS]
            group.outliers = sorted(int(i) for i in top if amax[name][i] > OUTLIER_RATIO * median)

    def const(name: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    prefix = "q8"
    zero_point = const(f"{prefix}/zero_point", np.array(128, np.uint8))
    symmetric = {"zero_point": 128, "inv_range": np.float32(1.0 / 127.0), "floor": _EPS, "symmetric": True}
    # GELU's output is never below -0.17: one-sided rows take the uint8 range from a fixed zero point
    # GELU_ZERO_POINT, twice as fine as symmetric int8; the floor keeps -0.17 inside the range.
    one_sided = {
        "zero_point": GELU_ZERO_POINT,
        "inv_range": np.float32(1.0 / (255 - GELU_ZERO_POINT)),
        "floor": GELU_MIN / GELU_ZERO_POINT * (255 - GELU_ZERO_POINT),
        "symmetric": False,
    }
    replaced: dict[str, list[Any]] = {}  # a node (by its first output) -> the nodes in its place
    dropped: set[str] = set()
    outlier_channels = 0
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for input_name in node.input:
            consumers[input_name].append(node)
    removed: set[str] = set()  # bias and residual Adds folded into RowDequantize
    position = {out: i for i, n in enumerate(graph.node) for out in n.output}
    producers = {out: n for n in graph.node for out in n.output}
    gelu_outputs = {name for name in groups if _is_gelu_output(name, graph)}
    gelu_zero_point = const(f"{prefix}/gelu_zero_point", np.array(GELU_ZERO_POINT, np.uint8))
    for gi, (name, group) in enumerate(groups.items()):
        p = f"{prefix}/g{gi}"
        k, idx = group.k, group.outliers
        outlier_channels += len(idx)
        # One RowQuantize node per input (models/row_quantize.py): the row scales and bytes, and with
        # outlier channels their float32 values beside a column of ones (which carries the bias).
        inputs, outputs = [name], [f"{p}/xq", f"{p}/row_scale"]
        if idx:
            mask = np.ones(k, np.float32)
            mask[idx] = 0.0
            inputs += [const(f"{p}/inlier_mask", mask), const(f"{p}/outlier_idx", np.array(idx, np.int64))]
            outputs.append(f"{p}/x_out1")
        gelu = name in gelu_outputs
        group_zero_point = gelu_zero_point if gelu else zero_point
        pre = [row_quantize.node(inputs, outputs, f"{p}/quantize", **(one_sided if gelu else symmetric))]
        h = cov[name].copy()
        if idx:
            h[idx, :] = 0.0
            h[:, idx] = 0.0
        for ni, node in enumerate(group.nodes):
            q = f"{p}/m{ni}"
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            inlier = weight.copy()
            inlier[idx] = 0.0
            scale = _column_scales(inlier)
            wq = gptq_quantize(inlier, h, scale)
            dropped.add(node.input[1])
            out = node.output[0]
            bias = _bias_add(out, consumers, inits, weight.shape[1], producers)
            if bias is not None:  # the bias joins the product below; its Add goes
                add, bias_values, bias_name = bias
                removed.add(add.output[0])
                out = add.output[0]
                if len(consumers[bias_name]) == 1 and consumers[bias_name][0] is add:  # not via an Identity
                    dropped.add(bias_name)
            else:
                bias_values = np.zeros(weight.shape[1], np.float32)
                bias_name = ""
            # The int32 product, then one RowDequantize pass: * row scale * column scale + addend,
            # where the addend is the bias, or the outlier channels' float32 product (whose ones
            # column carries the bias).
            post = [
                helper.make_node(
                    "MatMulInteger", [f"{p}/xq", const(f"{q}/w_int8", wq), group_zero_point], [f"{q}/acc"]
                ),
            ]
            if idx:
                rows = np.vstack([weight[idx], bias_values[None, :]]).astype(np.float32)
                post.append(
                    helper.make_node(
                        "MatMul", [f"{p}/x_out1", const(f"{q}/w_outliers", rows)], [f"{q}/y_out"]
                    )
                )
                addend = f"{q}/y_out"
            else:
                addend = bias_name or const(f"{q}/bias", bias_values)
                dropped.discard(addend)
            dequantize_inputs = [f"{q}/acc", f"{p}/row_scale", const(f"{q}/w_scale", scale), addend]
            residual = _residual_add(out, consumers, producers, position, position[node.output[0]])
            if residual is not None:  # the residual stream's Add joins the same pass
                add, residual_name = residual
                removed.add(add.output[0])
                out = add.output[0]
                dequantize_inputs.append(residual_name)
            post.append(row_quantize.dequantize_node(dequantize_inputs, [out], f"{q}/dequantize"))
            replaced[node.output[0]] = pre + post
            pre = []
    embedding_tables = _int8_embedding_tables(graph, inits, replaced, dropped, const)
    nodes = []
    for node in graph.node:
        if node.output[0] not in removed:
            nodes += replaced.get(node.output[0], [node])
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"{prefix}/node{i}"
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    proto.opset_import.append(helper.make_opsetid(row_quantize.DOMAIN, row_quantize.VERSION))
    proto.functions.extend(row_quantize.functions(opset))
    # The weights in ``<name>_data`` beside the graph, as in the fp32 export: ONNX Runtime maps
    # that file instead of copying it from a parsed graph, so the embedding table's untouched rows
    # and the weights it repacks stay out of memory (all-MiniLM-L6-v2: 43 -> 21 MB per session).
    target.parent.joinpath(target.name + "_data").unlink(missing_ok=True)
    onnx.save_model(
        proto,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=target.name + "_data",
        size_threshold=EXTERNAL_MIN_BYTES,
    )
    _name_data_by_content(target)
    details: dict[str, Any] = {
        "activations": "int8 per token (row max |x|, symmetric), computed at run time",
        "weights": "int8 per output channel (symmetric), GPTQ-rounded on the calibration activations",
        "outlier_channels": {
            "inputs": outliers,
            "rule": f"channels over {OUTLIER_RATIO}x the median max |x| (at most {MAX_OUTLIERS}) stay float32 "
            "in inputs: " + {"shared": "read by several MatMuls", "all": "all", "none": "none"}[outliers],
            "count": outlier_channels,
        },
        "matmuls": sum(len(g.nodes) for g in groups.values()),
        "embedding_table": f"int8 per row ({embedding_tables} table(s))" if embedding_tables else "float32",
        "calibration_texts": len(texts),
    }
    if kind == "rerank":  # what stays float32, by node name
        details["head"] = {"precision": "float32", "rule": "nodes reading one row per pair", "nodes": head}
    if kind == "sparse":
        details["vocab_projection"] = {
            "precision": vocab_projection if vocabulary else "none found",
            "nodes": vocabulary,
        }
    return details


def _vocabulary_size(graph: Any, model_dir: Path) -> int:
    """A SPLADE graph's vocabulary: its logits' last dimension, else config.json's vocab_size."""
    dims = graph.output[0].type.tensor_type.shape.dim
    if dims and dims[-1].dim_value:
        return int(dims[-1].dim_value)
    config = (
        json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if (model_dir / "config.json").is_file()
        else {}
    )
    return int(config.get("vocab_size") or 0)


def _is_gelu_output(name: str, graph: Any) -> bool:
    """Whether ``name`` is a GELU's output: a Gelu / FastGelu / BiasGelu node's, or the last Mul of
    the erf (or tanh) pattern ``0.5 * x * (1 + erf(x / sqrt(2)))`` within a few nodes of it."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in ("Gelu", "FastGelu", "BiasGelu"):
        return True
    frontier, seen = [node], 0
    while frontier and seen < 6:
        current = frontier.pop()
        seen += 1
        if current.op_type in ("Erf", "Tanh"):
            return True
        if current.op_type in ("Mul", "Add", "Div"):
            frontier += [producers[i] for i in current.input if i in producers]
    return False


def _sole_add(output: str, consumers: dict[str, list[Any]]) -> tuple[Any, str] | None:
    """The Add that is the only reader of ``output``, and its other input; else None."""
    readers = consumers.get(output, [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    return add, add.input[1] if add.input[0] == output else add.input[0]


def _bias_add(
    output: str, consumers: dict[str, list[Any]], inits: dict[str, Any], n: int, producers: dict[str, Any]
) -> tuple[Any, np.ndarray, str] | None:
    """The Add of a constant [n] bias that alone reads ``output``, the bias, and the initializer
    that holds it (also through an Identity, as exports that share tensors write); else None."""
    from onnx import numpy_helper

    found = _sole_add(output, consumers)
    if found is None:
        return None
    add, other = found
    source = producers.get(other)
    if other not in inits and source is not None and source.op_type == "Identity":
        other = source.input[0]
    if other not in inits:
        return None
    values = numpy_helper.to_array(inits[other])
    if values.shape != (n,) or values.dtype != np.float32:
        return None
    return add, values, other


def _residual_add(
    output: str,
    consumers: dict[str, list[Any]],
    producers: dict[str, Any],
    position: dict[str, int],
    before: int,
) -> tuple[Any, str] | None:
    """The residual Add of a post-LayerNorm transformer that alone reads ``output``: it adds the
    output of a LayerNormalization (the residual stream, the same shape) computed before node
    ``before`` (the MatMul whose place the fused pass takes), and feeds a LayerNormalization.
    Returns the Add and the residual; None for any other pattern, which keeps its own Add."""
    found = _sole_add(output, consumers)
    if found is None:
        return None
    add, other = found
    source = producers.get(other)
    after = consumers.get(add.output[0], [])
    if (
        other == output
        or source is None
        or source.op_type != "LayerNormalization"
        or position[other] >= before
        or len(after) != 1
        or after[0].op_type != "LayerNormalization"
    ):
        return None
    return add, other


def _int8_embedding_tables(
    graph: Any, inits: dict[str, Any], replaced: dict[str, list[Any]], dropped: set[str], const: Any
) -> int:
    """Store each token-embedding table (a Gather of a large float initializer by a graph input) as
    int8 rows with a float scale per row; returns how many tables were."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = {i.name for i in graph.input}
    consumers = _consumers(graph)
    done = 0
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) != 2:
            continue
        table, ids = node.input
        if table not in inits or ids not in inputs or consumers[table] != 1:
            continue
        tensor = inits[table]
        if len(tensor.dims) != 2 or tensor.dims[0] < MIN_TABLE_ROWS or tensor.data_type != 1:
            continue
        values = numpy_helper.to_array(tensor).astype(np.float32)
        scale = np.abs(values).max(axis=1, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        rows = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        p = f"q8/table{done}"
        out = node.output[0]
        replaced[node.output[0]] = [
            helper.make_node("Gather", [const(f"{p}/int8", rows), ids], [f"{p}/rows"]),
            helper.make_node("Cast", [f"{p}/rows"], [f"{p}/rows_f"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [const(f"{p}/scale", scale), ids], [f"{p}/scales"]),
            helper.make_node("Mul", [f"{p}/rows_f", f"{p}/scales"], [out]),
        ]
        dropped.add(table)
        done += 1
    return done
