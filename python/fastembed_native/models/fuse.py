"""A fused copy of a transformer graph for single-batch calls (queries).

ONNX Runtime's offline transformer optimizer fuses each layer's attention, skip + LayerNorm and the
embedding LayerNorm into single kernels that ORT's online optimizer does not form for these exports.
On all-MiniLM-L6-v2 (2 cores) the fused graph answers a single query faster (p50 2.70 against
3.26 ms, benchmarks/README.md) but ran padded batches of 32 slower in a trial (1.90 against 1.70 s), so fastembed_native uses it only for calls with one batch; calls with
several batches keep the plain graph. A fused file is kept only if it matches the plain one.

Uses onnxruntime's Python optimizer: run at export time, not in a process that embeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..engine import FUSED_FILE, Embedder, find_onnx
from .parity import PARITY_TEXTS, cosine_rows

#: config.json model types whose exports ORT's "bert" fusions handle.
_FUSABLE_TYPES = ("bert", "roberta", "xlm-roberta")
_MIN_COSINE = 0.99999  # a fusion changes the arithmetic order, never the result beyond this


def fuse_model(model_dir: str | Path) -> Path | None:
    """Write ``model_dir / FUSED_FILE`` if the model's type can be fused and the result matches.

    Returns the fused file's path, or None when nothing was fused (unsupported type, no attention
    fused, or a mismatch: then no file is left behind).
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    if config.get("model_type") not in _FUSABLE_TYPES or not heads or not hidden:
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(find_onnx(model_dir)), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    if not optimized.get_fused_operator_statistics().get("Attention"):
        return None
    target = model_dir / FUSED_FILE
    staging = target.with_name(".fusing." + target.name)
    optimized.save_model_to_file(str(staging))
    try:
        plain = Embedder(model_dir, fused=False)
        fused = Embedder(model_dir, onnx_file=str(staging.relative_to(model_dir)))
        texts = list(PARITY_TEXTS)
        alone = np.vstack([fused.embed([text]) for text in texts])  # the single-batch path it serves
        if cosine_rows(alone, plain.embed(texts)).min() < _MIN_COSINE:
            return None
        staging.rename(target)
        return target
    finally:
        staging.unlink(missing_ok=True)
