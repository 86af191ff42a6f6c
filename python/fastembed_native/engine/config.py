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

#: sentence-transformers < 5 wrote one boolean per mode; 5.x writes ``"pooling_mode": "<mode>"`` and
#: still reads the booleans (sentence_transformer/modules/pooling.py). Both name the same modes.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_POOLING_NAMES = {"mean": "mean", "cls": "cls", "lasttoken": "last_token"}

#: modules.json module classes by class name. sentence-transformers < 5 wrote
#: ``sentence_transformers.models.<Class>``; 5.x writes ``sentence_transformers.base.modules.transformer.
#: Transformer``, ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` and so on.
_ST_PACKAGE = "sentence_transformers."
#: Modules that change nothing at inference (Dropout is the identity in eval mode).
_INERT_MODULES = ("Dropout",)


@dataclass(frozen=True)
class ModulesInfo:
    """What ``modules.json`` and ``1_Pooling/config.json`` say, including what cannot be honoured.

    Attributes:
        pooling: "mean", "cls" or "last_token" (this package's names), or None when nothing says.
        pooling_format: "pooling_mode" (sentence-transformers 5), "pooling_mode_* booleans" (older),
            "default" (a Pooling config with neither: sentence-transformers pools by mean) or "none".
        include_prompt: False when the prompt's tokens are left out of the pooling.
        normalize: a Normalize module follows the pooling.
        modules: "<Class>" per modules.json entry, in order (or the legacy layout's implied ones).
        unsupported: one message per part this package cannot reproduce; empty when all is honoured.
    """

    pooling: str | None = None
    pooling_format: str = "none"
    include_prompt: bool = True
    normalize: bool = False
    modules: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()


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
    include_prompt: bool = True  # False: a prompt's tokens are attended to but left out of the pooling
    lowercase: bool = False  # sentence_bert_config.json's do_lower_case: texts are lowercased first
    modules: ModulesInfo = ModulesInfo()  # what modules.json and the pooling config said


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


def _pooling_config(config_path: Path) -> tuple[str | None, str, bool, list[str]]:
    """(pooling, format, include_prompt, problems) from a Pooling module's config.json."""
    config = _optional_json(config_path)
    include_prompt = bool(config.get("include_prompt", True))
    if "pooling_mode" in config:  # sentence-transformers 5 (it prefers this key when both are there)
        fmt = "pooling_mode"
        raw = config["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else [repr(raw)]
    elif any(key in config for key in _LEGACY_POOLING_KEYS):
        fmt = "pooling_mode_* booleans"
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    else:
        fmt = "default"  # sentence-transformers' Pooling defaults to mean
        modes = ["mean"]
    if len(modes) != 1 or modes[0] not in _ST_POOLING_NAMES:
        return (
            None,
            fmt,
            include_prompt,
            [
                f"{config_path}: pooling mode {' + '.join(map(str, modes))!r} is not supported; "
                f"expected exactly one of {', '.join(POOLING_MODES)}"
            ],
        )
    return _ST_POOLING_NAMES[modes[0]], fmt, include_prompt, []


def read_modules(model_dir: str | Path) -> ModulesInfo:
    """Read ``modules.json`` (either generation's type paths) and the Pooling module's config.

    Never raises for an unsupported part: it is listed in ``unsupported`` (``read_model_dir``
    refuses such a model; ``inspect`` reports it). A model without ``modules.json`` but with
    ``1_Pooling/config.json`` is read as Transformer + Pooling, as older checkouts were laid out.

    Raises:
        ValueError: ``modules.json`` is not valid JSON or not a list of modules.
    """
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    if modules_path.is_file():
        entries = _read_json(modules_path)
        if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
            raise ValueError(f"{modules_path} must be a list of modules, each an object with a 'type'")
    elif (model_dir / "1_Pooling" / "config.json").is_file():
        entries = [{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": "1_Pooling"}]
    else:
        return ModulesInfo()

    names: list[str] = []
    problems: list[str] = []
    pooling, fmt, include_prompt, normalize = None, "none", True, False
    for i, module in enumerate(entries):
        kind = str(module.get("type", ""))
        name = kind.rsplit(".", 1)[-1]
        names.append(name)
        ours = kind.startswith(_ST_PACKAGE) or "." not in kind
        where = f"modules.json entry {i} ({kind!r})"
        if not ours:
            problems.append(
                f"{where} is custom code from outside sentence-transformers; only its own modules are read"
            )
        elif name == "Transformer":
            if i != 0:
                problems.append(f"{where}: a Transformer must come first")
        elif name == "Pooling":
            if pooling is not None or fmt != "none":
                problems.append(f"{where}: a second Pooling module")
                continue
            pooling, fmt, include_prompt, pooling_problems = _pooling_config(
                model_dir / str(module.get("path", "")) / "config.json"
            )
            problems += pooling_problems
        elif name == "Normalize":
            normalize = True
        elif name in _HEAD_CLASSES:
            problems.append(f"{where} is a sparse model's module: load it with {_HEAD_CLASSES[name]}")
        elif name not in _INERT_MODULES:
            after = "after pooling " if fmt != "none" else ""
            problems.append(
                f"{where} is a {name} module {after}that is not in the ONNX graph; this package cannot "
                "reproduce that model's embeddings"
            )
    return ModulesInfo(
        pooling=pooling,
        pooling_format=fmt,
        include_prompt=include_prompt,
        normalize=normalize,
        modules=tuple(names),
        unsupported=tuple(problems),
    )


#: What the Transformer module computes (sentence_bert_config.json's ``transformer_task``), and the
#: output name sentence-transformers gives it: token vectors for embeddings, logits for cross-encoders.
TASK_OUTPUTS = {
    "feature-extraction": "token_embeddings",
    "sequence-classification": "scores",
    "fill-mask": "token_embeddings",  # a SPLADE model: sentence-transformers names the MLM logits so
}

#: Which class loads a model whose config_sentence_transformers.json names this model_type.
_MODEL_TYPE_CLASSES = {"ColBERT": "LateInteractionTextEmbedding", "SparseEncoder": "SparseTextEmbedding"}

#: Tasks whose head reads its own modules (SpladePooling, a ColBERT projection, BGE-M3's linear heads):
#: the generic reader's list of modules it cannot honour does not apply to them.
HEAD_TASKS = ("fill-mask", "multi-vector")

#: Which class loads a model whose modules.json names these modules.
_HEAD_CLASSES = {"SpladePooling": "SparseTextEmbedding", "MLMTransformer": "SparseTextEmbedding"}


def transformer_problems(
    st_config: dict[str, Any], where: Path, task: str = "feature-extraction"
) -> list[str]:
    """What in ``sentence_bert_config.json`` (the Transformer module's config) this package cannot
    honour for a model used for ``task``."""
    problems: list[str] = []
    if task == "multi-vector":  # a ColBERT or BGE-M3 encoder: token vectors, read by the head
        task = "feature-extraction"
    found = st_config.get("transformer_task", task)
    if found != task:
        use = {
            "feature-extraction": "TextEmbedding",
            "sequence-classification": "TextCrossEncoder",
            "fill-mask": "SparseTextEmbedding",
        }
        hint = f" (a {found} model: load it with {use[found]})" if found in use else ""
        problems.append(f"{where} sets transformer_task {found!r}; {task!r} was expected{hint}")
        return problems
    output = st_config.get("module_output_name", TASK_OUTPUTS[task])
    if output != TASK_OUTPUTS[task]:
        problems.append(
            f"{where} sets module_output_name {output!r}; only {TASK_OUTPUTS[task]!r} is supported"
        )
    return problems


#: Architectures that number positions from ``pad_token_id + 1`` (fairseq's convention), so their
#: table of ``max_position_embeddings`` rows holds ``pad_token_id + 1`` fewer tokens (XLM-R: 514 -> 512).
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer"}
)


def position_limit_of(hf_config: dict[str, Any]) -> tuple[int | None, str]:
    """The most tokens per text the model's position embeddings take (``config.json``), and why;
    None when ``config.json`` does not say."""
    rows = hf_config.get("max_position_embeddings")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
        return None, ""
    reason = f"its position embeddings hold {rows} positions (config.json max_position_embeddings)"
    pad = hf_config.get("pad_token_id")
    if hf_config.get("model_type") in _OFFSET_POSITIONS and isinstance(pad, int) and 0 <= pad < rows:
        limit = rows - pad - 1
        return limit, f"{reason}, numbered from pad_token_id + 1 = {pad + 1}, so {limit} tokens per text"
    return rows, f"{reason}, so {rows} tokens per text"


def read_model_dir(
    model_dir: str | Path,
    *,
    max_length: int | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    padding_side: str | None = None,
    onnx_file: str | None = None,
    include_prompt: bool | None = None,
    task: str = "feature-extraction",
) -> ModelConfig:
    """Read a model directory; explicit arguments override what its files say. ``task`` is what the
    caller computes with it: "feature-extraction" (embeddings), "sequence-classification" (scores),
    "fill-mask" (SPLADE's vocabulary logits) or "multi-vector" (token vectors kept per token).

    Raises:
        FileNotFoundError: the directory, its ONNX file or its tokenizer.json is missing.
        ValueError: a config file is malformed or asks for something unsupported (a module after
            the pooling, a pooling mode other than mean / cls / last-token, ...): the message names it.
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
    modules = read_modules(model_dir)
    # A head task's own modules are the head's to read and check (engine/sparse.py, multivector.py).
    problems = [] if task in HEAD_TASKS else list(modules.unsupported)
    model_type = _optional_json(model_dir / "config_sentence_transformers.json").get("model_type")
    if task == "feature-extraction" and model_type in _MODEL_TYPE_CLASSES:
        problems.append(
            f"{model_dir} is a {model_type} model (config_sentence_transformers.json): load it with "
            f"{_MODEL_TYPE_CLASSES[model_type]}"
        )
    problems += transformer_problems(st_config, model_dir / "sentence_bert_config.json", task)
    if problems:  # never drop a module silently: its embeddings would be wrong without a word
        raise ValueError("; ".join(problems))
    found_pooling, found_normalize = modules.pooling, modules.normalize

    # sentence-transformers' rule: max_seq_length from sentence_bert_config.json, never above
    # what the position embeddings allow; without it, the tokenizer's model_max_length.
    position_limit, limit_reason = position_limit_of(hf_config)
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
    if position_limit is not None and resolved_max_length > position_limit:
        # Refused here: past the table, the first long text would fail deep inside ONNX Runtime.
        raise ValueError(
            f"max_length={resolved_max_length} is past what {model_dir} can take: {limit_reason}; "
            f"use max_length <= {position_limit}"
        )
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
        include_prompt=modules.include_prompt if include_prompt is None else bool(include_prompt),
        lowercase=bool(st_config.get("do_lower_case", False)),
        modules=modules,
    )
