"""``fastembed-native inspect``: what a user checks before trusting a model file."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .. import _core
from ..engine import INT8_FILE, ModelConfig, ensure_loaded, find_onnx, read_model_dir, read_modules
from ..errors import ModelLoadError
from .cache import resolve_model

#: CoreML rejects tensors with a dimension above this, so larger embedding tables stay on the CPU.
COREML_MAX_DIM = 16384

_ELEM_TYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16", 9: "bool"}


class NotAnOnnxModelError(ModelLoadError):
    """A file given as a model that does not parse as an ONNX model (the command line's usage error)."""


def _shape(type_proto: Any) -> list[int | str]:
    dims = type_proto.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def inspect_model(model: str | Path | None = None) -> dict[str, Any]:
    """A report on a model: graph facts, config found, warnings.

    ``model`` is anything ``embed`` accepts (a model directory, a model id resolved through the
    cache, the Hugging Face hub cache or a build, None for the default model), or a bare .onnx file.
    Needs the ``onnx`` package to read the graph (``pip install onnx``; in the [default-model] extra).
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("inspect reads the ONNX graph with the onnx package: pip install onnx") from None

    path = Path(model) if model is not None else None
    if path is None or not path.is_file():
        path = resolve_model(model)
    onnx_path = path if path.is_file() else find_onnx(path)
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)  # headers only, no weights in memory
    except Exception as exc:  # protobuf's DecodeError, or onnx's own check of what it parsed
        raise NotAnOnnxModelError(
            f"{onnx_path} is not an ONNX model ({type(exc).__name__}: {exc}); pass a model directory, "
            "a model id or an .onnx file"
        ) from None
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    external = sorted(
        {
            entry.value
            for t in graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL
            for entry in t.external_data
            if entry.key == "location"
        }
    )
    external_bytes = sum(
        (onnx_path.parent / name).stat().st_size for name in external if (onnx_path.parent / name).is_file()
    )
    graph_inputs = [i for i in graph.input if i.name not in initializers]

    # The word-embedding table: the initializer a Gather indexes with input_ids.
    table = None
    for node in graph.node:
        if (
            node.op_type == "Gather"
            and len(node.input) == 2
            and node.input[1] == "input_ids"
            and node.input[0] in initializers
        ):
            table = list(initializers[node.input[0]].dims)
            break
    layer_ids = {m.group(1) for name in initializers for m in [re.search(r"layers?[._](\d+)[._]", name)] if m}

    report: dict[str, Any] = {
        "file": str(onnx_path),
        # What the model takes on disk: the graph file and the weights stored beside it.
        "size_mb": round((onnx_path.stat().st_size + external_bytes) / 2**20, 1),
        "external_data": [f"{name} ({external_bytes / 2**20:.1f} MB total)" for name in external] or "none",
        "ir_version": proto.ir_version,
        "opset": {op.domain or "ai.onnx": op.version for op in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [
            {
                "name": i.name,
                "type": _ELEM_TYPES.get(i.type.tensor_type.elem_type, "?"),
                "shape": _shape(i.type),
            }
            for i in graph_inputs
        ],
        "outputs": [
            {
                "name": o.name,
                "type": _ELEM_TYPES.get(o.type.tensor_type.elem_type, "?"),
                "shape": _shape(o.type),
            }
            for o in graph.output
        ],
        "vocab_size": table[0] if table else None,
        "hidden_size": table[1] if table and len(table) > 1 else None,
        "layers": len(layer_ids) or None,
    }
    from .quantize import describe_recipe, read_recipe

    recipe = read_recipe(onnx_path)
    if recipe is not None:
        report["quantization"] = describe_recipe(recipe)
    if path.is_dir():
        int8 = read_recipe(path / INT8_FILE) if (path / INT8_FILE).is_file() else None
        report["int8"] = (
            f"{INT8_FILE}: " + (describe_recipe(int8) if int8 else "no recipe file beside it")
            if (path / INT8_FILE).is_file()
            else f"none (fastembed-native quantize {path} makes {INT8_FILE})"
        )
    warnings: list[str] = []
    config: ModelConfig | None = None
    if path.is_dir():
        modules = read_modules(path)
        report.update(
            modules=list(modules.modules) or "none (no modules.json)",
            pooling_format=modules.pooling_format,
            include_prompt=modules.include_prompt,
            unsupported=list(modules.unsupported),
        )
        try:
            config = read_model_dir(path)
        except ValueError as exc:  # report what cannot be honoured instead of stopping at it
            warnings.append(f"this directory cannot be embedded with as it is: {exc}")
    if config is not None:
        from tokenizers import Tokenizer

        tokenizer_vocab = Tokenizer.from_file(str(config.tokenizer_path)).get_vocab_size(
            with_added_tokens=True
        )
        report.update(
            pooling=config.pooling,
            normalize=config.normalize,
            max_length=config.max_length,
            padding_side=config.padding_side,
            prompts=config.prompts,
            lowercase=config.lowercase or tokenizer_lowercases(config.tokenizer_path),
            tokenizer_vocab_size=tokenizer_vocab,
        )
        model_vocab = report["vocab_size"] or config.vocab_size
        if model_vocab and tokenizer_vocab > model_vocab:
            warnings.append(
                f"the tokenizer has {tokenizer_vocab} tokens but the model's embedding table has {model_vocab} rows: "
                "ids past the table are rejected at embed time"
            )
    ensure_loaded()
    report["available_providers"] = _core.available_providers()
    report["onnxruntime"] = _core.runtime_version()

    # Core ML's limits only where Core ML can run: elsewhere they would only mislead.
    if coreml_possible(report["available_providers"]):
        warnings += _coreml_warnings(table, report["inputs"])
    report["warnings"] = warnings
    return report


def _coreml_warnings(table: list[int] | None, inputs: list[dict[str, Any]]) -> list[str]:
    warnings = []
    if table and max(table) > COREML_MAX_DIM:
        warnings.append(
            f"CoreML cannot take a dimension above {COREML_MAX_DIM}: the {table[0]}x{table[1]} embedding table "
            "(and its Gather) stays on the CPU under the coreml provider"
        )
    dynamic = [f"{i['name']}{i['shape']}" for i in inputs if any(isinstance(d, str) for d in i["shape"])]
    if dynamic:
        warnings.append(
            "dynamic input shapes ("
            + ", ".join(dynamic)
            + "): fine on CPU and CUDA; CoreML compiles per shape "
            "unless static_input_shapes is set, and then only static parts run on it"
        )
    return warnings


def coreml_possible(available_providers: list[str]) -> bool:
    """Whether the coreml provider could run here: on macOS, or in an ONNX Runtime build that has it."""
    return sys.platform == "darwin" or "CoreMLExecutionProvider" in available_providers


def tokenizer_lowercases(tokenizer_path: str | Path) -> bool:
    """Whether a tokenizer.json's normalizer lowercases: a ``Lowercase`` step, or a ``BertNormalizer``
    with ``lowercase`` true (its default), alone or anywhere in a ``Sequence``."""
    try:
        spec = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False

    def lowercases(step: Any) -> bool:
        if not isinstance(step, dict):
            return False
        kind = step.get("type")
        if kind == "Lowercase":
            return True
        if kind == "BertNormalizer":
            return bool(step.get("lowercase", True))
        if kind == "Sequence":
            return any(lowercases(inner) for inner in step.get("normalizers") or [])
        return False

    return lowercases(spec.get("normalizer"))
