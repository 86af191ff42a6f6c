"""Optional int8 dynamic quantisation of a model directory's ONNX file, with its parity loss.

Never a default: on all-MiniLM-L6-v2 it is about 2x faster on the CPU but moves embeddings
(mean cosine ~0.993 against fp32), which is too far for results that must match
sentence-transformers. ``fastembed-native quantize`` reports both numbers so the choice is informed.
Uses onnxruntime's Python quantisation tools (and the ``onnx`` package): run it as a tool, not in
a process that embeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import INT8_FILE, Embedder, find_onnx
from .parity import PARITY_TEXTS, cosine_rows


@dataclass(frozen=True)
class QuantizeReport:
    """The int8 file, its cosine against the fp32 model (min and mean over the parity texts), and
    the speed-up measured on those texts."""

    path: Path
    min_cosine: float
    mean_cosine: float
    speedup: float


def _seconds(model, texts: list[str], repeats: int = 3) -> float:
    model.embed(texts)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.embed(texts)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def quantize_model(model_dir: str | Path, output: str = INT8_FILE) -> QuantizeReport:
    """Write an int8 copy of ``model_dir``'s ONNX file to ``model_dir / output`` and measure it.

    Weights of MatMul nodes are quantised per channel (per-tensor scales lose far more: mean cosine
    0.958 against 0.993 on all-MiniLM-L6-v2); the embedding table stays float.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ImportError("quantize needs the onnx package: pip install onnx") from None
    model_dir = Path(model_dir)
    source = find_onnx(model_dir)
    target = model_dir / output
    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    fp32 = Embedder(model_dir, onnx_file=str(source.relative_to(model_dir)))
    int8 = Embedder(model_dir, onnx_file=output)
    texts = list(PARITY_TEXTS) * 8
    cosines = cosine_rows(fp32.embed(texts), int8.embed(texts))
    return QuantizeReport(
        target, float(cosines.min()), float(cosines.mean()), _seconds(fp32, texts) / _seconds(int8, texts)
    )
