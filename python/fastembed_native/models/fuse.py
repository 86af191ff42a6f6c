"""A fused copy of a transformer graph for single-batch calls (queries), sharing the plain graph's
weights on disk.

ONNX Runtime's offline transformer optimizer fuses each layer's attention, skip + LayerNorm and the
embedding LayerNorm into single kernels that ORT's online optimizer does not form for these exports.
On all-MiniLM-L6-v2 (2 cores) the fused graph answers a single query faster (p50 2.70 against
3.26 ms, benchmarks/README.md) but ran padded batches of 32 slower in a trial (1.90 against 1.70 s),
so fastembed_native uses it only for calls with one batch; calls with several batches keep the
plain graph. A fused file is kept only if it matches the plain one.

Disk: both graphs hold the same tensors except the attention weights the fusion concatenates
(Q, K, V into one), so instead of two full copies (90 + 90 MB for all-MiniLM-L6-v2) the plain
graph's weights move to ``onnx/model.onnx_data`` and the fused graph points into that same file
for every tensor it shares, storing only its own (the concatenated QKV weights, 11 MB). We chose
this over building the fused graph lazily, which would run ORT's Python optimizer (seconds) inside
the first query of a process, and over keeping only the fused graph, which is slower for batches.

Uses onnxruntime's Python optimizer: run at export time, not in a process that embeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import FUSED_FILE, Embedder, find_onnx
from ..errors import ModelLoadError
from .data_file import move_weights_to_data_file
from .parity import PARITY_TEXTS, cosine_rows

#: config.json model types whose exports ORT's "bert" fusions handle.
_FUSABLE_TYPES = ("bert", "roberta", "xlm-roberta")
_MIN_COSINE = 0.99999  # a fusion changes the arithmetic order, never the result beyond this


def _tensor_key(tensor: Any) -> tuple[int, tuple[int, ...], str]:
    from onnx import numpy_helper

    data = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
    return tensor.data_type, tuple(tensor.dims), hashlib.sha1(data).hexdigest()


def _external_location(tensor: Any) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def share_weights(fused: Any, plain_path: Path, data_file: Path) -> int:
    """Point each of ``fused``'s initializers that ``plain_path`` keeps byte for byte in
    ``data_file`` at that file, in place; returns the bytes no longer stored twice."""
    import onnx

    plain = onnx.load(str(plain_path), load_external_data=False)
    shared: dict[tuple[int, tuple[int, ...], str], dict[str, str]] = {}
    with open(data_file, "rb") as data:
        for tensor in plain.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            where = _external_location(tensor)
            data.seek(int(where.get("offset", 0)))
            raw = data.read(int(where["length"]))
            shared[(tensor.data_type, tuple(tensor.dims), hashlib.sha1(raw).hexdigest())] = where
    saved = 0
    for tensor in fused.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        where = shared.get(_tensor_key(tensor))
        if where is None:
            continue
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key in ("location", "offset", "length"):
            if key in where:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, where[key]
        saved += int(where["length"])
    return saved


def fuse_model(model_dir: str | Path) -> Path | None:
    """Write ``model_dir / FUSED_FILE`` if the model's type can be fused and the result matches.

    The plain graph's weights move to ``onnx/model.onnx_data`` and the fused graph shares them
    (see the module docstring). Returns the fused file's path, or None when nothing was fused
    (unsupported type, no attention fused, or a mismatch: then no file is left behind and the
    plain graph is untouched).
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    if config.get("model_type") not in _FUSABLE_TYPES or not heads or not hidden:
        return None
    try:
        import sympy  # noqa: F401  (ORT's optimizer needs it for shape inference; onnxruntime does not declare it)
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:
        raise ModelLoadError(
            f"fusing needs ONNX Runtime's transformer optimizer and sympy: pip install sympy ({exc})"
        ) from None

    plain_path = find_onnx(model_dir)
    # The optimizer warns when the producer is not "pytorch" (our BERT builder's graphs); the
    # fused op counts checked below say whether it worked, so its log stays quiet.
    optimizer_log = logging.getLogger("onnxruntime.transformers")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(
            str(plain_path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
    finally:
        optimizer_log.setLevel(level)
    if not optimized.get_fused_operator_statistics().get("Attention"):
        return None
    target = model_dir / FUSED_FILE
    staging = target.with_name(".fusing." + target.name)
    optimized.save_model_to_file(str(staging))
    try:
        texts = list(PARITY_TEXTS)
        plain = Embedder(model_dir, fused=False).embed(texts)
        candidate = Embedder(model_dir, onnx_file=str(staging.relative_to(model_dir)))
        alone = np.vstack([candidate.embed([text]) for text in texts])  # the single-batch path it serves
        if cosine_rows(alone, plain).min() < _MIN_COSINE:
            return None
        share_weights(optimized.model, plain_path, move_weights_to_data_file(plain_path))
        staging.write_bytes(optimized.model.SerializeToString())
        again = Embedder(model_dir, onnx_file=str(staging.relative_to(model_dir)))
        if cosine_rows(again.embed(texts[:2]), alone[:2]).min() < _MIN_COSINE:
            raise ModelLoadError(f"{staging} changed when it started sharing {plain_path}'s weights")
        staging.rename(target)
        return target
    finally:
        staging.unlink(missing_ok=True)
