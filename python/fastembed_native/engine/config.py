"""Reading a model directory the way sentence-transformers does.

A directory holds ``onnx/model.onnx`` (or ``model.onnx``), ``tokenizer.json`` and, when it is a
sentence-transformers model, ``modules.json``, ``sentence_bert_config.json`` and
``1_Pooling/config.json``. Hugging Face's ``config.json`` and ``tokenizer_config.json`` fill in the
rest. Only JSON is read: nothing in a model directory is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where ``fastembed-native fuse`` / ``export`` put the fused single-batch graph, and
#: ``fastembed-native quantize`` the optional int8 copy (paths inside a model directory).
FUSED_FILE = "onnx/model_fused.onnx"
INT8_FILE = "onnx/model_int8.onnx"

#: Pooling modes this package implements (sentence-transformers' names in 1_Pooling/config.json).
POOLING_MODES = ("mean", "cls", "last_token")

_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last_token",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


@dataclass(frozen=True)
class ModelConfig:
    """What a model directory says about how to embed with it."""

    model_dir: Path
    onnx_path: Path
    tokenizer_path: Path
    max_length: int  # tokens per text, special tokens included; longer texts are truncated
    pooling: str  # one of POOLING_MODES
    normalize: bool  # L2-normalise each embedding
    padding_side: str  # "right" or "left"
    pad_token_id: int | None
    vocab_size: int | None  # rows of the model's embedding table, when config.json says
    hidden_size: int | None
    prompts: dict[str, str]  # config_sentence_transformers.json's named prompts ("query", ...)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def find_onnx(model_dir: Path, onnx_file: str | None = None) -> Path:
    """``onnx_file`` (relative to ``model_dir``) if given, else ``onnx/model.onnx`` or ``model.onnx``."""
    if onnx_file is not None:
        candidates = [model_dir / onnx_file]
    else:
        candidates = [model_dir / "onnx" / "model.onnx", model_dir / "model.onnx"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no ONNX model in {model_dir}: looked for {', '.join(str(c) for c in candidates)}"
    )


def _pooling_from_modules(model_dir: Path, modules: list[dict[str, Any]]) -> tuple[str | None, bool]:
    pooling = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            config = _optional_json(model_dir / module.get("path", "") / "config.json")
            enabled = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
            if len(enabled) != 1:
                raise ValueError(
                    f"{model_dir / module.get('path', '')}/config.json enables pooling modes {enabled}; "
                    f"exactly one of {', '.join(POOLING_MODES)} is supported"
                )
            pooling = enabled[0]
        elif kind.endswith("Dense") or kind.endswith("LayerNorm"):
            raise ValueError(
                f"modules.json has a {kind} module after pooling, which is not in the ONNX graph; "
                "this package cannot reproduce that model's embeddings"
            )
    return pooling, normalize


def read_model_dir(
    model_dir: str | Path,
    *,
    max_length: int | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    padding_side: str | None = None,
    onnx_file: str | None = None,
) -> ModelConfig:
    """Read a model directory; explicit arguments override what its files say.

    Raises:
        FileNotFoundError: the directory, its ONNX file or its tokenizer.json is missing.
        ValueError: a config file is malformed or asks for something unsupported.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    onnx_path = find_onnx(model_dir, onnx_file)
    tokenizer_path = model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {model_dir}")

    hf_config = _optional_json(model_dir / "config.json")
    tokenizer_config = _optional_json(model_dir / "tokenizer_config.json")
    st_config = _optional_json(model_dir / "sentence_bert_config.json")
    modules_path = model_dir / "modules.json"
    modules = _read_json(modules_path) if modules_path.is_file() else []

    found_pooling, found_normalize = _pooling_from_modules(model_dir, modules)
    if found_pooling is None and (model_dir / "1_Pooling" / "config.json").is_file():
        found_pooling, _ = _pooling_from_modules(model_dir, [{"type": "Pooling", "path": "1_Pooling"}])

    # sentence-transformers' rule: max_seq_length from sentence_bert_config.json, never above
    # what the position embeddings allow; without it, the tokenizer's model_max_length.
    position_limit = hf_config.get("max_position_embeddings")
    found_max_length = st_config.get("max_seq_length") or tokenizer_config.get("model_max_length")
    if not isinstance(found_max_length, int) or found_max_length > 1_000_000:  # HF's "no limit" sentinel
        found_max_length = position_limit or 512
    if isinstance(position_limit, int) and position_limit > 0:
        found_max_length = min(found_max_length, position_limit)

    resolved_pooling = pooling or found_pooling or "mean"
    if resolved_pooling not in POOLING_MODES:
        raise ValueError(
            f"pooling mode {resolved_pooling!r} is not supported; expected one of {', '.join(POOLING_MODES)}"
        )
    resolved_max_length = max_length if max_length is not None else found_max_length
    if not isinstance(resolved_max_length, int) or resolved_max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {resolved_max_length!r}")
    resolved_side = padding_side or tokenizer_config.get("padding_side") or "right"
    if resolved_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {resolved_side!r}")

    st_model_config = _optional_json(model_dir / "config_sentence_transformers.json")
    prompts = {str(k): str(v) for k, v in (st_model_config.get("prompts") or {}).items()}
    vocab_size = hf_config.get("vocab_size")
    hidden_size = hf_config.get("hidden_size")
    pad_token_id = hf_config.get("pad_token_id")
    return ModelConfig(
        model_dir=model_dir,
        onnx_path=onnx_path,
        tokenizer_path=tokenizer_path,
        max_length=resolved_max_length,
        pooling=resolved_pooling,
        normalize=found_normalize if normalize is None else bool(normalize),
        padding_side=resolved_side,
        pad_token_id=pad_token_id if isinstance(pad_token_id, int) else None,
        vocab_size=vocab_size if isinstance(vocab_size, int) and vocab_size > 0 else None,
        hidden_size=hidden_size if isinstance(hidden_size, int) else None,
        prompts=prompts,
    )
