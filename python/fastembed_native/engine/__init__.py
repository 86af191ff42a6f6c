"""The engine: embedding texts with a model *directory*.

It owns everything between a folder on disk and a float32 array: reading the directory's config
files (:mod:`.config`), the tokenizer and token-budget batching (:mod:`.tokens`), execution
providers by name (:mod:`.providers`), loading ONNX Runtime's library (:mod:`.runtime`) and the
:class:`Embedder` that drives the compiled core (``fastembed_native._core``).

It imports only ``_core``, ``errors`` and itself: it knows nothing of model ids, caches, HTTP or
clusters. Everything above (the model store, the public API, the server) builds on it.
"""

from .config import (
    FUSED_FILE,
    INT8_FILE,
    POOLING_MODES,
    ModelConfig,
    ModulesInfo,
    find_onnx,
    read_model_dir,
    read_modules,
)
from .embedder import (
    TOKENIZE_WINDOW,
    Embedder,
    check_dimensions,
    check_positive,
    check_texts,
    truncate_dimensions,
)
from .providers import ProviderSpec, resolve_providers
from .runtime import ensure_loaded, runtime_info
from .tokens import TextTokenizer, token_batches

__all__ = [
    "FUSED_FILE",
    "INT8_FILE",
    "POOLING_MODES",
    "TOKENIZE_WINDOW",
    "Embedder",
    "ModelConfig",
    "ModulesInfo",
    "ProviderSpec",
    "TextTokenizer",
    "check_dimensions",
    "check_positive",
    "check_texts",
    "ensure_loaded",
    "find_onnx",
    "read_model_dir",
    "read_modules",
    "resolve_providers",
    "runtime_info",
    "token_batches",
    "truncate_dimensions",
]
