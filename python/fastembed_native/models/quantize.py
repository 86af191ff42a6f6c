"""int8 copies of a model directory's ONNX file, with the recipe and its measured quality beside it.

Two methods (``fastembed-native quantize --method``):

``rowwise`` (the default): int8 that keeps retrieval quality.
  * activations: int8 **per token**, scaled at run time by each row's own max |x|
    (QuantizeLinear along the rows, then ONNX Runtime's MatMulIntegerToFloat with the row scales).
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

  On all-MiniLM-L6-v2 (benchmarks/results/int8.md): cosine against fp32 >= 0.998 where dynamic
  quantization falls to 0.969, at about dynamic's speed, in a quarter of the fp32 file.

``dynamic``: ONNX Runtime's ``quantize_dynamic`` (MatMul weights per channel), kept for comparison.

Both write ``onnx/model_int8.onnx`` and ``onnx/model_int8.json`` (:data:`RECIPE_SUFFIX`): how the
file was made and what was measured (cosine against fp32 on the parity texts, speed, and, once
``bench quality --record`` has run, retrieval against fp32). ``TextEmbedding(model, quantized=True)``
loads the int8 file; ``inspect`` prints the recipe. Uses onnxruntime's Python package and ``onnx``:
run it as a tool, not in a process that embeds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import INT8_FILE, Embedder, find_onnx
from .parity import PARITY_TEXTS, cosine_rows

METHODS = ("rowwise", "dynamic")
OUTLIER_INPUTS = ("shared", "all", "none")
DEFAULT_METHOD = "rowwise"
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
#: Past this size the int8 graph keeps its weights in ``<name>_data`` beside it (protobuf's 2 GB).
EXTERNAL_BYTES = 1_800_000_000
_EPS = 1e-8


@dataclass(frozen=True)
class QuantizeReport:
    """The int8 file, its cosine against the fp32 model (min and mean over the parity texts), the
    speed-up measured on those texts (NaN when not measured), and the recipe written beside it."""

    path: Path
    min_cosine: float
    mean_cosine: float
    speedup: float
    recipe: dict[str, Any] = field(default_factory=dict)


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


def describe_recipe(recipe: dict[str, Any]) -> str:
    """One line on how an int8 file was made and what was measured (what ``inspect`` prints)."""
    method = recipe.get("method", "?")
    if method == "rowwise":
        outliers = recipe.get("outlier_channels") or {}
        made = (
            f"rowwise: int8 per-token activations, GPTQ int8 weights, {outliers.get('count', 0)} float32 "
            f"outlier channels, {'int8' if 'int8' in str(recipe.get('embedding_table')) else 'float32'} "
            f"embedding table; calibrated on {recipe.get('calibration', '?')}"
        )
    else:
        made = f"{method}: {recipe.get('activations', '?')}; weights {recipe.get('weights', '?')}"
    parity = recipe.get("parity") or {}
    text = f"{made}; cosine vs fp32 on the parity texts min {parity.get('min_cosine', float('nan')):.4f}"
    retrieval = recipe.get("retrieval")
    if retrieval:
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


def record_quality(onnx_path: str | Path, quality: dict[str, Any]) -> None:
    """Add retrieval results (``bench quality --record``) to the recipe beside ``onnx_path``."""
    recipe = read_recipe(onnx_path)
    if recipe is None:
        raise FileNotFoundError(f"{recipe_path(onnx_path)} does not exist: quantize the model first")
    recipe["retrieval"] = {**quality, "file_sha256": _digest(Path(onnx_path))}
    _write_json(recipe_path(onnx_path), recipe)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _seconds(model: Embedder, texts: list[str], repeats: int = 3) -> float:
    model.embed(texts)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.embed(texts)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for part in sorted([path, *path.parent.glob(path.name + "_data")]):
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
    measure_speed: bool = True,
) -> QuantizeReport:
    """Write an int8 copy of ``model_dir``'s ONNX file to ``model_dir / output``, its recipe beside
    it, and measure it against the fp32 file.

    Args:
        method: "rowwise" (per-token activations, GPTQ weights, float32 outlier channels, int8
            embedding table; see the module doc) or "dynamic" (ONNX Runtime's quantize_dynamic).
        calibration: a text file (one text per line) to calibrate on; default: found on this
            machine (:func:`fastembed_native.models.calibration.calibration_texts`).
        calibration_count: calibration texts to use (default 256).
        outliers: rowwise: which inputs keep their outlier channels in float32: "shared" (those
            several MatMuls read: attention's query/key/value input), "all", or "none".
        measure_speed: time fp32 and int8 on the parity texts (seconds); False skips it.

    Raises:
        ValueError: an unknown method.
        ImportError: onnx is not installed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if outliers not in OUTLIER_INPUTS:
        raise ValueError(f"outliers must be one of {', '.join(OUTLIER_INPUTS)}, got {outliers!r}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("quantize needs the onnx package: pip install onnx") from None
    model_dir = Path(model_dir)
    source = find_onnx(model_dir)
    target = model_dir / output
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = (read_recipe(target) or {}).get("retrieval")
    started = time.perf_counter()
    if method == "dynamic":
        details = _quantize_dynamic(source, target)
    else:
        from .calibration import DEFAULT_COUNT, calibration_texts

        texts, described = calibration_texts(calibration, calibration_count or DEFAULT_COUNT)
        details = quantize_rowwise(source, target, model_dir, texts, outliers)
        details["calibration"] = described
    fp32 = Embedder(model_dir, onnx_file=str(source.relative_to(model_dir)), fused=False)
    int8 = Embedder(model_dir, onnx_file=output, fused=False)
    texts = list(PARITY_TEXTS) * 8
    cosines = cosine_rows(fp32.embed(texts), int8.embed(texts))
    speedup = _seconds(fp32, texts) / _seconds(int8, texts) if measure_speed else float("nan")
    recipe = {
        "version": RECIPE_VERSION,
        "method": method,
        **details,
        "source": str(source.relative_to(model_dir)),
        "source_sha256": _digest(source),
        "seconds": round(time.perf_counter() - started, 1),
        "size_mb": {
            "fp32": round(sum(p.stat().st_size for p in source.parent.glob(source.name + "*")) / 2**20, 1),
            "int8": round(sum(p.stat().st_size for p in target.parent.glob(target.name + "*")) / 2**20, 1),
        },
        "parity": {
            "texts": "fastembed_native.models.parity.PARITY_TEXTS",
            "min_cosine": round(float(cosines.min()), 6),
            "mean_cosine": round(float(cosines.mean()), 6),
        },
        "speedup_on_parity_texts": None if np.isnan(speedup) else round(speedup, 2),
    }
    if previous and previous.get("file_sha256") == _digest(target):
        recipe["retrieval"] = previous  # the same bytes as the file it was measured on: still true
    _write_json(recipe_path(target), recipe)
    return QuantizeReport(target, float(cosines.min()), float(cosines.mean()), speedup, recipe)


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


def _feeds(model_dir: Path, graph: Any, texts: list[str], batch: int = 16) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for ``texts`` in length-sorted batches, tokenized as the engine does."""
    from ..engine import read_model_dir
    from ..engine.tokens import TextTokenizer

    tokens = TextTokenizer(read_model_dir(model_dir))
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
    proto: Any, model_dir: Path, texts: list[str], groups: dict[str, _Group]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per group input: each channel's max |x| and the covariance X^T X / n over the real tokens
    of ``texts`` (padding left out), from the fp32 graph."""
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
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = list(groups)
    amax = {n: np.zeros(groups[n].k) for n in names}
    cov = {n: np.zeros((groups[n].k, groups[n].k)) for n in names}
    count = 0
    for feed in _feeds(model_dir, proto.graph, texts):
        mask = next((v for k, v in feed.items() if "mask" in k.lower()), None)
        values = session.run(names, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(names, values, strict=True):
            rows = value.reshape(-1, value.shape[-1])
            if mask is not None and value.ndim == 3 and value.shape[:2] == mask.shape:
                rows = value[mask.astype(bool)]
            rows = rows.astype(np.float64)
            amax[name] = np.maximum(amax[name], np.abs(rows).max(axis=0))
            cov[name] += rows.T @ rows
        count += int(mask.sum()) if mask is not None else len(rows)
    return amax, {n: c / max(count, 1) for n, c in cov.items()}


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
    source: Path, target: Path, model_dir: Path, texts: list[str], outliers: str = "shared"
) -> dict[str, Any]:
    """Write the rowwise int8 graph of ``source`` (see the module doc) to ``target``; returns the
    recipe's details."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source))  # with its external weights
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    groups = _weight_groups(graph, inits)
    amax, cov = _statistics(proto, model_dir, texts, groups) if groups else ({}, {})
    for name, group in groups.items():
        if outliers == "all" or (outliers == "shared" and len(group.nodes) >= 2):
            median = float(np.median(amax[name])) or _EPS
            top = np.argsort(-amax[name], kind="stable")[:MAX_OUTLIERS]
            group.outliers = sorted(int(i) for i in top if amax[name][i] > OUTLIER_RATIO * median)

    def const(name: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    prefix = "q8"
    eps = const(f"{prefix}/eps", np.array(_EPS, np.float32))
    inv127 = const(f"{prefix}/inv127", np.array(1.0 / 127.0, np.float32))
    zero_point = const(f"{prefix}/zero_point", np.array(128, np.uint8))
    start0 = const(f"{prefix}/start0", np.array([0], np.int64))
    end_last = const(f"{prefix}/end_last", np.array([-1], np.int64))
    replaced: dict[str, list[Any]] = {}  # a node (by its first output) -> the nodes in its place
    dropped: set[str] = set()
    outlier_channels = 0
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for input_name in node.input:
            consumers[input_name].append(node)
    removed: set[str] = set()  # bias Adds folded into the float32 outlier product
    gelu_outputs = {name for name in groups if _is_gelu_output(name, graph)}
    gelu_zero_point = const(f"{prefix}/gelu_zero_point", np.array(GELU_ZERO_POINT, np.uint8))
    gelu_inv_range = const(f"{prefix}/gelu_inv_range", np.array(1.0 / (255 - GELU_ZERO_POINT), np.float32))
    gelu_min_scale = const(f"{prefix}/gelu_min_scale", np.array(GELU_MIN / GELU_ZERO_POINT, np.float32))
    one = const(f"{prefix}/one", np.array([1], np.int64))
    for gi, (name, group) in enumerate(groups.items()):
        p = f"{prefix}/g{gi}"
        k, idx = group.k, group.outliers
        outlier_channels += len(idx)
        # Rows are quantized as a 2-D [tokens, K] matrix (QuantizeLinear's per-axis scales), then
        # put back in the input's shape, so every node after the MatMul sees the shapes it saw
        # before and ONNX Runtime still fuses bias + residual + LayerNorm and bias + GELU.
        pre = [
            helper.make_node("Shape", [name], [f"{p}/shape"]),
            helper.make_node("Slice", [f"{p}/shape", start0, end_last], [f"{p}/lead"]),
        ]
        x = name
        if idx:
            mask = np.ones(k, np.float32)
            mask[idx] = 0.0
            pre += [
                helper.make_node("Mul", [name, const(f"{p}/inlier_mask", mask)], [f"{p}/x_in"]),
                helper.make_node(
                    "Gather",
                    [name, const(f"{p}/outlier_idx", np.array(idx, np.int64))],
                    [f"{p}/x_out"],
                    axis=-1,
                ),
                # A column of ones, so that the outlier product adds the bias too.
                helper.make_node("Concat", [f"{p}/lead", one], [f"{p}/ones_shape"], axis=0),
                helper.make_node(
                    "ConstantOfShape",
                    [f"{p}/ones_shape"],
                    [f"{p}/ones"],
                    value=numpy_helper.from_array(np.array([1.0], np.float32)),
                ),
                helper.make_node("Concat", [f"{p}/x_out", f"{p}/ones"], [f"{p}/x_out1"], axis=-1),
            ]
            x = f"{p}/x_in"
        pre += [
            helper.make_node(
                "Reshape", [x, const(f"{p}/rows_shape", np.array([-1, k], np.int64))], [f"{p}/rows"]
            ),
        ]
        if name in gelu_outputs:
            # GELU's output is never below -0.17: one-sided rows take the uint8 range from a fixed
            # zero point GELU_ZERO_POINT, twice as fine as symmetric int8, and need no ReduceMin.
            group_zero_point = gelu_zero_point
            pre += [
                helper.make_node("ReduceMax", [f"{p}/rows"], [f"{p}/max"], axes=[1], keepdims=0),
                helper.make_node("Mul", [f"{p}/max", gelu_inv_range], [f"{p}/scale_max"]),
                helper.make_node("Max", [f"{p}/scale_max", gelu_min_scale], [f"{p}/scale"]),
            ]
        else:
            group_zero_point = zero_point
            pre += [
                helper.make_node("ReduceMax", [f"{p}/rows"], [f"{p}/max"], axes=[1], keepdims=0),
                helper.make_node("ReduceMin", [f"{p}/rows"], [f"{p}/min"], axes=[1], keepdims=0),
                helper.make_node("Neg", [f"{p}/min"], [f"{p}/neg_min"]),
                helper.make_node("Max", [f"{p}/max", f"{p}/neg_min", eps], [f"{p}/absmax"]),
                helper.make_node("Mul", [f"{p}/absmax", inv127], [f"{p}/scale"]),
            ]
        pre += [
            helper.make_node("Shape", [f"{p}/scale"], [f"{p}/count"]),
            # uint8 with zero point 128 elsewhere: symmetric int8 in the u8 x s8 form VNNI multiplies.
            helper.make_node("Expand", [group_zero_point, f"{p}/count"], [f"{p}/zero_points"]),
            helper.make_node(
                "QuantizeLinear", [f"{p}/rows", f"{p}/scale", f"{p}/zero_points"], [f"{p}/rows_q"], axis=0
            ),
            helper.make_node("Reshape", [f"{p}/rows_q", f"{p}/shape"], [f"{p}/xq"]),
            helper.make_node("Concat", [f"{p}/lead", one], [f"{p}/scale_shape"], axis=0),
            helper.make_node("Reshape", [f"{p}/scale", f"{p}/scale_shape"], [f"{p}/row_scale"]),
        ]
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
            bias = _bias_add(out, consumers, inits, weight.shape[1]) if idx else None
            # A per-row a_scale ([..., 1]) multiplies the output after the integer product (and
            # after a bias, so the bias stays a separate Add, fused downstream by ONNX Runtime).
            post = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [
                        f"{p}/xq",
                        const(f"{q}/w_int8", wq),
                        f"{p}/row_scale",
                        const(f"{q}/w_scale", scale),
                        group_zero_point,
                    ],
                    [f"{q}/y" if idx else out],
                    domain="com.microsoft",
                ),
            ]
            if idx:
                rows = weight[idx]
                if bias is not None:  # the bias as the ones column's weights; its Add goes
                    add, bias_values = bias
                    removed.add(add.output[0])
                    out = add.output[0]
                else:
                    bias_values = np.zeros(weight.shape[1], np.float32)
                rows = np.vstack([rows, bias_values[None, :]]).astype(np.float32)
                post += [
                    helper.make_node(
                        "MatMul", [f"{p}/x_out1", const(f"{q}/w_outliers", rows)], [f"{q}/y_out"]
                    ),
                    helper.make_node("Add", [f"{q}/y", f"{q}/y_out"], [out]),
                ]
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
    external = sum(t.ByteSize() for t in graph.initializer) > EXTERNAL_BYTES
    target.parent.joinpath(target.name + "_data").unlink(missing_ok=True)
    onnx.save_model(
        proto,
        str(target),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=target.name + "_data",
    )
    return {
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


def _bias_add(
    output: str, consumers: dict[str, list[Any]], inits: dict[str, Any], n: int
) -> tuple[Any, np.ndarray] | None:
    """The Add of a constant [n] bias that alone reads ``output``, and the bias; else None."""
    from onnx import numpy_helper

    readers = consumers.get(output, [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    other = add.input[1] if add.input[0] == output else add.input[0]
    if other not in inits:
        return None
    values = numpy_helper.to_array(inits[other])
    if values.shape != (n,) or values.dtype != np.float32:
        return None
    return add, values


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
